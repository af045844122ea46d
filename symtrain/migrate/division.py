"""Python 2 ``/`` between integers: rewrite to ``//`` where both sides are integers, report the doubtful.

Each operand is classed from what the file itself says:

- **integer**: integer literals, ``len(...)``, ``int(...)``, ``x.shape[i]``, ``x.size``/``x.ndim``, an
  element of a shape-like tuple (``filter_shape[0]``, ``poolsize[1]``), integer-valued numpy calls
  (``numpy.prod``, ``argmax``, ``count_nonzero``, ``sum`` of integers), ``max``/``min`` of integers, names
  assigned such values, and names that read as counts (``n_*``, ``*_size``, ``batch*``, ``patience``...);
- **float**: float literals, ``float(...)``, ``math`` calls, numpy calls that always give floats
  (``sqrt``, ``exp``, ``mean``, ``zeros``, ``numpy.random.*``, a float ``dtype=``), ``.mean()``/``.std()``,
  names assigned floats or parameters with float defaults (other numpy calls, ``numpy.load``/``dot``...,
  take the data's dtype: doubtful);
- **symbolic**: calls through the graph library however it is imported (``T``, ``tensor`` from ``import
  theano.tensor as tensor``, ``from theano import tensor``...) and names assigned such calls: Theano's ``/``
  on them was already true division (it refused integer tensors).

``/`` with a float or symbolic side is left alone silently; with two integer sides it becomes ``//`` and
is listed in the report (kind ``changed``); anything else is left as it is and reported for review.
The builtin ``round(x)``, which also changed (halves away from zero and a float in Python 2, to even and
an int in Python 3), is reported for review.
"""

from __future__ import annotations

import re

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider

from symtrain.migrate.report import Finding
from symtrain.migrate.transform import bound_name
from symtrain.migrate.transform import dotted_name as _dotted

_INT_NAME = re.compile(
    r"(^|_)(n|num|size|batch|batches|index|idx|count|len|length|patience|iter|epoch|"
    r"step|steps|rows|cols|dim|width|height|nb|number|total|chunk|frequency)(_|s?$)|^[ijkn]$",
    re.IGNORECASE,
)
_SHAPE_NAME = re.compile(
    r"(^|_)(shape|shapes|size|sizes|poolsize|pool|ds|ws|stride|strides|subsample|dims)$", re.IGNORECASE
)
FLOAT_NUMPY = frozenset(
    {
        "sqrt",
        "exp",
        "expm1",
        "log",
        "log1p",
        "log2",
        "log10",
        "tanh",
        "sinh",
        "cosh",
        "sin",
        "cos",
        "tan",
        "arctan",
        "arcsin",
        "arccos",
        "mean",
        "average",
        "std",
        "var",
        "median",
        "nanmean",
        "percentile",
        "linspace",
        "logspace",
        "float16",
        "float32",
        "float64",
        "true_divide",
        "divide",
        "zeros",
        "ones",
        "empty",
        "full",
        "eye",
        "identity",
        "zeros_like",
        "ones_like",
        "exp2",
        "erf",
        "sigmoid",
        "power",
    }
)
INT_RANDOM = frozenset({"randint", "random_integers", "permutation", "binomial", "poisson", "choice"})
INT_NUMPY = frozenset(
    {
        "prod",
        "product",
        "argmax",
        "argmin",
        "count_nonzero",
        "size",
        "ndim",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "floor_divide",
        "searchsorted",
    }
)
# methods whose result is a float / an integer whatever the object (numpy arrays, RandomState, lists)
FLOAT_METHODS = frozenset(
    {
        "mean",
        "std",
        "var",
        "norm",
        "uniform",
        "normal",
        "rand",
        "randn",
        "standard_normal",
        "random_sample",
        "exponential",
        "beta",
        "gamma",
    }
)
INT_METHODS = frozenset({"randint", "count", "index", "argmax", "argmin", "bit_length"})
FLOAT_MODULES = frozenset({"math", "time", "random", "scipy"})
GRAPH_MODULES = ("theano", "aesara", "pytensor", "lasagne", "keras", "blocks")
INT, FLOAT, SYMBOLIC, UNKNOWN = "int", "float", "symbolic", "unknown"


class _Aliases(cst.CSTVisitor):
    """Local names of numpy, float-valued modules and the graph library; then names by assigned kind."""

    def __init__(self) -> None:
        self.modules: dict[str, str] = {}  # local name -> module root (numpy, math, theano, ...)

    def visit_Import(self, node: cst.Import) -> None:
        for alias in node.names:
            root = (_dotted(alias.name) or "").split(".")[0]
            self.modules[bound_name(alias, root)] = root

    def visit_ImportFrom(self, node: cst.ImportFrom) -> None:
        module = (_dotted(node.module) if node.module else "") or ""
        root = module.split(".")[0]
        if isinstance(node.names, cst.ImportStar) or root not in (*GRAPH_MODULES, "numpy", *FLOAT_MODULES):
            return
        for alias in node.names:
            local = bound_name(alias, alias.name.value)
            self.modules[local] = root


class _Classify:
    def __init__(self, modules: dict[str, str]):
        self.modules = modules
        self.scopes: dict[int | None, dict[str, str]] = {}  # function (id) or module (None) -> name -> kind
        self.scope: int | None = None  # the function being visited

    def known(self, name: str) -> str | None:
        """A name's kind in the function being visited, else at module level (``self.x`` is module-wide)."""
        local = self.scopes.get(self.scope, {})
        if name in local:
            return local[name]
        return self.scopes.get(None, {}).get(name)

    def kind(self, node: cst.BaseExpression) -> str:  # noqa: C901 - one case per expression type
        if isinstance(node, cst.Integer):
            return INT
        if isinstance(node, cst.Float | cst.Imaginary):
            return FLOAT
        known = self.known(_dotted(node) or "") if isinstance(node, cst.Name | cst.Attribute) else None
        if known is not None:
            return known  # UNKNOWN too: an accumulator of unknown values is not taken for a count by name
        if isinstance(node, cst.Name):
            return INT if _INT_NAME.search(node.value) else UNKNOWN
        if isinstance(node, cst.Attribute):
            if node.attr.value in ("size", "ndim"):
                return INT
            if node.attr.value in ("floatX",):
                return UNKNOWN
            return INT if _INT_NAME.search(node.attr.value) else UNKNOWN
        if isinstance(node, cst.Subscript):
            base = node.value
            if isinstance(base, cst.Attribute) and base.attr.value == "shape":
                return INT
            name = _dotted(base) or ""
            if _SHAPE_NAME.search(name.rsplit(".", 1)[-1]) and all(
                isinstance(e.slice, cst.Index) for e in node.slice
            ):
                return INT
            inner = self.kind(base)
            return inner if inner in (FLOAT, SYMBOLIC) else UNKNOWN
        if isinstance(node, cst.Call):
            return self._call(node)
        if isinstance(node, cst.BinaryOperation):
            left, right = self.kind(node.left), self.kind(node.right)
            for k in (SYMBOLIC, FLOAT):
                if k in (left, right):
                    return k
            if left == right == INT and isinstance(
                node.operator,
                cst.Add | cst.Subtract | cst.Multiply | cst.FloorDivide | cst.Divide | cst.Modulo | cst.Power,
            ):
                return INT
            return UNKNOWN
        if isinstance(node, cst.UnaryOperation):
            return self.kind(node.expression)
        return UNKNOWN

    def _call(self, node: cst.Call) -> str:
        func = _dotted(node.func) or ""
        root, _, attr = func.rpartition(".")
        module = self.modules.get(func.split(".")[0])
        args = [a.value for a in node.args if a.keyword is None]
        if func in ("len", "int", "long", "ord"):
            return INT
        if func in ("float", "abs") or module in FLOAT_MODULES:
            return FLOAT if func != "abs" else (self.kind(args[0]) if args else UNKNOWN)
        if func in ("max", "min", "sum") and args:
            kinds = {self.kind(a) for a in args} if func != "sum" else {self._elements(args[0])}
            return kinds.pop() if len(kinds) == 1 else UNKNOWN
        if module == "numpy" or self._numpy_root(node.func):
            return self._numpy(node, func, attr, args)
        if module in GRAPH_MODULES:
            return SYMBOLIC
        if isinstance(node.func, cst.Attribute):
            if node.func.attr.value in FLOAT_METHODS:
                return FLOAT
            if node.func.attr.value in INT_METHODS:
                return INT
            owner = self.kind(node.func.value)
            if owner == SYMBOLIC:
                return SYMBOLIC
        return UNKNOWN

    def _numpy_root(self, func: cst.BaseExpression) -> bool:
        """``numpy.cast[floatX](x)``: a call through a subscript of a numpy name."""
        while isinstance(func, cst.Subscript | cst.Attribute | cst.Call):
            func = func.value if not isinstance(func, cst.Call) else func.func
        return isinstance(func, cst.Name) and self.modules.get(func.value) == "numpy"

    def _numpy(self, node: cst.Call, func: str, attr: str, args: list[cst.BaseExpression]) -> str:
        """numpy calls: integer-valued ones, always-float ones, and the rest (dtype unknown: doubtful)."""
        if attr in INT_NUMPY or (".random." in f".{func}" and attr in INT_RANDOM):
            return INT if attr != "prod" or not args or self._elements(args[0]) != FLOAT else FLOAT
        if attr in ("sum", "cumsum", "arange", "max", "min", "amax", "amin", "abs") and args:
            kinds = {self._elements(a) if attr in ("sum", "cumsum") else self.kind(a) for a in args}
            kind = kinds.pop() if len(kinds) == 1 else UNKNOWN
            return kind if kind != SYMBOLIC else UNKNOWN  # a sum of unknowns stays doubtful
        dtype = next(
            (a.value for a in node.args if a.keyword is not None and a.keyword.value == "dtype"), None
        )
        if dtype is not None:
            text = cst.Module(body=[]).code_for_node(dtype)
            return FLOAT if "float" in text or "floatX" in text else INT if "int" in text else UNKNOWN
        if attr in FLOAT_NUMPY or ".random." in f".{func}." or not _dotted(node.func):
            return FLOAT  # numpy.cast[floatX](...) too
        return UNKNOWN  # numpy.load, array, dot, concatenate...: the dtype is the data's

    def _elements(self, node: cst.BaseExpression) -> str:
        """The kind of the elements of a sequence argument (``shape``, ``(2, 2)``, ``[a, b]``)."""
        if isinstance(node, cst.Tuple | cst.List) and node.elements:
            kinds = {self.kind(e.value) for e in node.elements}
            return kinds.pop() if len(kinds) == 1 else UNKNOWN
        if isinstance(node, cst.Attribute) and node.attr.value == "shape":
            return INT
        if isinstance(node, cst.Subscript):
            return self._elements(node.value)
        name = _dotted(node) or ""
        if _SHAPE_NAME.search(name.rsplit(".", 1)[-1]):
            return INT
        kind = self.kind(node)
        return kind if kind in (FLOAT, SYMBOLIC) else UNKNOWN


class _Scoped:
    """Tracks the innermost function being visited, so names are bound and looked up per scope."""

    c: _Classify

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self.stack.append(self.c.scope)
        self.c.scope = id(node)

    def leave_FunctionDef(self, original_node: cst.FunctionDef, *rest) -> cst.FunctionDef | None:
        self.c.scope = self.stack.pop()
        return rest[0] if rest else None


class _Assigned(_Scoped, cst.CSTVisitor):
    """Record the kind of every plain assignment, per scope (run twice: later names may depend on earlier
    ones). Attribute targets (``self.n``) are recorded at module level."""

    def __init__(self, classify: _Classify):
        self.c = classify
        self.stack: list[int | None] = []
        self.seen: dict[int | None, dict[str, set[str]]] = {}

    def _bind(self, target: cst.BaseExpression, kind: str, unknown: bool = False) -> None:
        name = _dotted(target)
        if name is not None and (kind != UNKNOWN or unknown):
            scope = self.c.scope if isinstance(target, cst.Name) else None
            self.seen.setdefault(scope, {}).setdefault(name, set()).add(kind)

    def visit_Assign(self, node: cst.Assign) -> None:
        kind = self.c.kind(node.value)
        for t in node.targets:
            self._bind(t.target, kind)

    def visit_AugAssign(self, node: cst.AugAssign) -> None:
        # `total = 0; total += cost`: an accumulator is an integer only if everything added is one
        kind = self.c.kind(node.value)
        if isinstance(node.operator, cst.DivideAssign) and kind == INT:
            return
        self._bind(node.target, kind, unknown=True)

    def visit_Param(self, node: cst.Param) -> None:
        if node.default is not None:
            kind = self.c.kind(node.default)
            if kind in (FLOAT, INT):
                self.seen.setdefault(self.c.scope, {}).setdefault(node.name.value, set()).add(kind)

    def finish(self) -> None:
        for scope, names in self.seen.items():
            for name, kinds in names.items():
                # one float or symbolic assignment in a scope makes a name non-integer there
                kind = (
                    SYMBOLIC
                    if SYMBOLIC in kinds
                    else FLOAT
                    if FLOAT in kinds
                    else UNKNOWN
                    if UNKNOWN in kinds
                    else INT
                )
                self.c.scopes.setdefault(scope, {})[name] = kind


class _Division(_Scoped, cst.CSTTransformer):
    METADATA_DEPENDENCIES = (PositionProvider,)

    def __init__(self, path: str, classify: _Classify):
        super().__init__()
        self.path = path
        self.c = classify
        self.stack: list[int | None] = []
        self.findings: list[Finding] = []

    def _judge(self, node: cst.CSTNode, left: cst.BaseExpression, right: cst.BaseExpression, op: str) -> bool:
        kinds = {self.c.kind(left), self.c.kind(right)}
        if kinds & {FLOAT, SYMBOLIC}:
            return False
        line = self.get_metadata(PositionProvider, node).start.line
        code = " ".join(cst.Module(body=[]).code_for_node(node).split())
        if kinds == {INT}:
            self.findings.append(
                Finding(self.path, line, "changed", f"`{code}`: Python 2 integer division, now `{op}`")
            )
            return True
        self.findings.append(
            Finding(
                self.path,
                line,
                "review",
                f"`{code}`: `/` is true division in Python 3 "
                "(it was integer division in Python 2 if both sides were ints); use `//` "
                "if integers are meant",
            )
        )
        return False

    def visit_Call(self, node: cst.Call) -> None:
        if (
            isinstance(node.func, cst.Name)
            and node.func.value == "round"
            and "round" not in self.c.modules
            and self.c.known("round") is None
            and len(node.args) == 1
        ):
            line = self.get_metadata(PositionProvider, node).start.line
            self.findings.append(
                Finding(
                    self.path,
                    line,
                    "review",
                    "builtin `round(x)` rounded halves away from "
                    "zero and returned a float in Python 2; Python 3 rounds them to even "
                    "and returns an int",
                )
            )

    def leave_BinaryOperation(self, original_node: cst.BinaryOperation, updated_node: cst.BinaryOperation):
        if not isinstance(original_node.operator, cst.Divide) or not self._judge(
            original_node, original_node.left, original_node.right, "//"
        ):
            return updated_node
        op = original_node.operator
        return updated_node.with_changes(
            operator=cst.FloorDivide(
                whitespace_before=op.whitespace_before, whitespace_after=op.whitespace_after
            )
        )

    def leave_AugAssign(self, original_node: cst.AugAssign, updated_node: cst.AugAssign):
        if not isinstance(original_node.operator, cst.DivideAssign) or not self._judge(
            original_node, original_node.target, original_node.value, "//="
        ):
            return updated_node
        op = original_node.operator
        return updated_node.with_changes(
            operator=cst.FloorDivideAssign(
                whitespace_before=op.whitespace_before, whitespace_after=op.whitespace_after
            )
        )


def fix_division(module: cst.Module, path: str) -> tuple[cst.Module, list[Finding]]:
    """Rewrite integer ``/`` to ``//`` (see the module docstring); a no-op under ``from __future__ import
    division``."""
    if re.search(r"^from __future__ import [^\n]*\bdivision\b", module.code, re.MULTILINE):
        return module, []
    aliases = _Aliases()
    module.visit(aliases)
    classify = _Classify(aliases.modules)
    for _ in range(2):
        assigned = _Assigned(classify)
        module.visit(assigned)
        assigned.finish()
    fixer = _Division(path, classify)
    new = MetadataWrapper(module, unsafe_skip_copy=True).visit(fixer)
    return new, fixer.findings
