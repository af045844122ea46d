"""Truth tests of ``None``-defaulted parameters that receive graph variables (``if persistent:``).

Theano variables were always truthy, so ``if p:`` on a parameter defaulting to ``None`` meant ``p is not
None``; PyTensor raises "TensorVariable cannot be converted to Python boolean" instead. When the function
otherwise treats the parameter as a graph variable (passes it to a graph call, uses it as an ``updates``/
``givens`` key, calls tensor methods on it, assigns it a graph call, or its callers pass one), the test is
rewritten: ``if p:`` -> ``if p is not None:``, ``not p`` -> ``p is None``, ``p or x`` -> ``p if p is not None
else x``. Otherwise the test is left as it is and reported (saying so when the parameter plainly holds
something else: a string, a path, a callable, a list, a keyword setting).
"""

from __future__ import annotations

import re

import libcst as cst
from libcst.metadata import MetadataWrapper, ParentNodeProvider, PositionProvider

from symtrain.migrate.report import Finding
from symtrain.migrate.transform import bound_name
from symtrain.migrate.transform import dotted_name as _dotted

GRAPH_ROOTS = ("pytensor", "symtrain", "theano", "aesara")
# calls whose argument is a value (numpy data, a config string), not a graph variable
VALUE_CALLS = ("shared", "constant", "asarray", "config", "cast", "floatX")
TENSOR_ATTRS = frozenset(
    {
        "dimshuffle",
        "get_value",
        "set_value",
        "broadcastable",
        "owner",
        "type",
        "eval",
        "ndim",
        "shape",
        "flatten",
        "reshape",
        "T",
        "dtype",
        "astype",
        "sum",
        "mean",
        "dot",
        "max",
        "min",
        "norm",
        "nonzero",
        "clip",
        "argmax",
    }
)
GRAPH_KEYWORDS = frozenset(
    {
        "updates",
        "givens",
        "outputs_info",
        "non_sequences",
        "sequences",
        "wrt",
        "consider_constant",
        "known_grads",
    }
)
PLAIN_CALLS = frozenset(
    {
        "len",
        "str",
        "int",
        "float",
        "open",
        "isinstance",
        "print",
        "repr",
        "iter",
        "list",
        "tuple",
        "dict",
        "sorted",
        "callable",
        "os.path.join",
        "os.path.exists",
        "os.path.isfile",
        "os.path.isdir",
        "hasattr",
        "getattr",
    }
)
PLAIN_ATTRS = frozenset(
    {
        "append",
        "items",
        "keys",
        "values",
        "format",
        "split",
        "startswith",
        "endswith",
        "lower",
        "upper",
        "join",
        "get",
        "update",
        "strip",
        "encode",
        "decode",
        "write",
        "read",
        "extend",
        "pop",
        "copy",
    }
)
PLAIN_NAMES = frozenset(
    {
        "name",
        "path",
        "filename",
        "fname",
        "file",
        "verbose",
        "seed",
        "rng",
        "callback",
        "mode",
        "dtype",
        "prefix",
        "suffix",
        "label",
        "title",
        "dir",
        "directory",
        "logger",
        "activation",
        "numpy_rng",
        "theano_rng",
        "output_folder",
        "save_path",
        "load_path",
        "axis",
        "axes",
        "ndim",
        "shape",
        "size",
        "keepdims",
        "eps",
        "epsilon",
        "n",
        "k",
        "batch_size",
        "n_steps",
        "step",
        "lr",
        "learning_rate",
        "momentum",
        "rate",
        "p",
    }
)


_COUNT_NAME = re.compile(r"(^|_)(n|num|size|count|len|length|index|idx|dim|axis|steps?|epochs?)(_|$)")


def _mentions(node: cst.CSTNode, name: str) -> bool:
    """Whether ``name`` occurs as a Name anywhere in ``node`` (not as an attribute or keyword)."""
    found = []

    class _Find(cst.CSTVisitor):
        def visit_Name(self, n: cst.Name) -> None:
            if n.value == name:
                found.append(n)

        def visit_Attribute(self, n: cst.Attribute) -> bool:
            n.value.visit(self)
            return False

        def visit_Arg(self, n: cst.Arg) -> bool:
            n.value.visit(self)
            return False

    node.visit(_Find())
    return bool(found)


class _Uses(cst.CSTVisitor):
    """Graph and plain evidence for one parameter inside one function."""

    def __init__(self, name: str, graph_aliases: set[str], symbolic: set[str]):
        self.name = name
        self.aliases = graph_aliases
        self.symbolic = symbolic
        self.graph: list[str] = []
        self.plain: list[str] = []
        self.graph_targets: set[str] = set()  # spellings assigned a graph value (`self.x = T.matrix()`)
        self.p_targets: set[str] = set()  # spellings assigned the parameter (`self.x = p`)

    def _is_p(self, node: cst.CSTNode) -> bool:
        return isinstance(node, cst.Name) and node.value == self.name

    def is_graph_call(self, node: cst.CSTNode) -> bool:
        if not isinstance(node, cst.Call):
            return False
        dotted = _dotted(node.func) or ""
        root = dotted.split(".")[0]
        return (
            root in self.aliases
            and not dotted.rsplit(".", 1)[-1].startswith(VALUE_CALLS)
            and ".config" not in dotted
        )

    def _is_graph_value(self, node: cst.CSTNode) -> bool:
        return self.is_graph_call(node) or (_dotted(node) or "") in self.symbolic

    def visit_Call(self, node: cst.Call) -> None:
        dotted = _dotted(node.func) or ""
        if self.is_graph_call(node):
            # positional operands only: keyword values (axis=, ndim=, dtype=) are plain settings
            if any(a.keyword is None and _mentions(a.value, self.name) for a in node.args):
                self.graph.append(f"passed to {dotted}()")
        else:
            for a in node.args:
                if (
                    a.keyword is not None
                    and a.keyword.value in GRAPH_KEYWORDS
                    and _mentions(a.value, self.name)
                ):
                    self.graph.append(f"in {a.keyword.value}=")
        if dotted in PLAIN_CALLS and any(self._is_p(a.value) for a in node.args):
            self.plain.append(f"{dotted}()")
        if self._is_p(node.func):
            self.plain.append("called")
        if (
            isinstance(node.func, cst.Attribute)
            and self._is_p(node.func.value)
            and node.func.attr.value in PLAIN_ATTRS
        ):
            self.plain.append(f".{node.func.attr.value}()")
        if (
            isinstance(node.func, cst.Attribute)
            and node.func.attr.value == "append"
            and "update" in (_dotted(node.func.value) or "").lower()
            and any(_mentions(a.value, self.name) for a in node.args)
        ):
            self.graph.append("appended to updates")

    def visit_Attribute(self, node: cst.Attribute) -> None:
        if self._is_p(node.value) and node.attr.value in TENSOR_ATTRS:
            self.graph.append(f".{node.attr.value}")

    def visit_Assign(self, node: cst.Assign) -> None:
        for t in node.targets:
            target = t.target
            spelled = _dotted(target)
            if spelled is not None and self._is_graph_value(node.value):
                self.graph_targets.add(spelled)
            if spelled is not None and self._is_p(node.value):
                self.p_targets.add(spelled)
            if self._is_p(target) and self._is_graph_value(node.value):
                self.graph.append("assigned a graph call")
            if isinstance(target, cst.Subscript) and any(
                isinstance(e.slice, cst.Index) and self._is_p(e.slice.value) for e in target.slice
            ):
                base = (_dotted(target.value) or "").lower()
                if "update" in base or "given" in base:
                    self.graph.append("an updates key")
            name = (_dotted(target) or "").lower()
            if ("update" in name or "given" in name) and _mentions(node.value, self.name):
                self.graph.append("in updates")

    def visit_BinaryOperation(self, node: cst.BinaryOperation) -> None:
        for mine, other in ((node.left, node.right), (node.right, node.left)):
            if self._is_p(mine) and self._is_graph_value(other):
                self.graph.append("arithmetic with a graph value")
            if (
                self._is_p(mine)
                and isinstance(node.operator, cst.Modulo)
                and isinstance(other, cst.SimpleString | cst.FormattedString)
            ):
                self.plain.append("string formatting")
            if self._is_p(mine) and isinstance(other, cst.SimpleString | cst.FormattedString):
                self.plain.append("string")

    def visit_DictElement(self, node: cst.DictElement) -> None:
        if self._is_p(node.key) and self._is_graph_value(node.value):
            self.graph.append("a dict key mapped to a graph value (updates/givens)")

    def visit_BooleanOperation(self, node: cst.BooleanOperation) -> None:
        if self._is_p(node.left) and self._is_graph_value(node.right):
            self.graph.append("its alternative is a graph value")

    def visit_AugAssign(self, node: cst.AugAssign) -> None:
        # `cost += reg` with cost a graph value (or `reg += T.sum(...)`)
        if (self._is_p(node.value) and self._is_graph_value(node.target)) or (
            self._is_p(node.target) and self._is_graph_value(node.value)
        ):
            self.graph.append("arithmetic with a graph value")

    def visit_IfExp(self, node: cst.IfExp) -> None:
        # `h0 if h0 else T.zeros_like(x)`: the other branch is a graph value
        for mine, other in ((node.body, node.orelse), (node.orelse, node.body)):
            if self._is_p(mine) and self._is_graph_value(other):
                self.graph.append("its alternative is a graph value")

    def visit_For(self, node: cst.For) -> None:
        if self._is_p(node.iter):
            self.plain.append("iterated")

    def visit_FormattedStringExpression(self, node: cst.FormattedStringExpression) -> None:
        if self._is_p(node.expression):
            self.plain.append("f-string")

    def visit_Comparison(self, node: cst.Comparison) -> None:
        if self._is_p(node.left) and any(
            isinstance(c.comparator, cst.SimpleString | cst.Integer | cst.Float) for c in node.comparisons
        ):
            self.plain.append("compared with a literal")


class _Analysis(cst.CSTVisitor):
    """Find the truth tests of None-defaulted parameters and judge each parameter."""

    METADATA_DEPENDENCIES = (ParentNodeProvider, PositionProvider)

    def __init__(self, aliases: set[str], symbolic: set[str], callers: dict[str, list[cst.Call]]):
        super().__init__()
        self.aliases = aliases
        self.symbolic = symbolic
        self.callers = callers
        self.stack: list[set[str]] = []
        self.tests: list[tuple[cst.FunctionDef, str, cst.CSTNode, str]] = []  # func, name, node, context
        self.funcs: list[cst.FunctionDef] = []
        self.classes: dict[cst.FunctionDef, str] = {}  # method -> its class's name

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        params = [*node.params.params, *node.params.kwonly_params]
        self.stack.append(
            {
                p.name.value
                for p in params
                if p.default is not None and isinstance(p.default, cst.Name) and p.default.value == "None"
            }
        )
        self.funcs.append(node)
        block = self.get_metadata(ParentNodeProvider, node, None)
        owner = self.get_metadata(ParentNodeProvider, block, None) if block is not None else None
        if isinstance(owner, cst.ClassDef):
            self.classes[node] = owner.name.value

    def leave_FunctionDef(self, original_node: cst.FunctionDef) -> None:
        self.stack.pop()
        self.funcs.pop()

    def _bool_context(self, expr: cst.BaseExpression) -> None:
        """Record the truth tests inside an expression whose value is only used for its truth."""
        if isinstance(expr, cst.Name) and expr.value in self.stack[-1]:
            self.tests.append((self.funcs[-1], expr.value, expr, "bool"))
        elif isinstance(expr, cst.UnaryOperation) and isinstance(expr.operator, cst.Not):
            self._bool_context(expr.expression)
        elif isinstance(expr, cst.BooleanOperation):
            self._bool_context(expr.left)
            self._bool_context(expr.right)

    def _test_of(self, node: cst.If | cst.While | cst.IfExp | cst.Assert) -> None:
        if self.stack and self.stack[-1]:
            self._bool_context(node.test)

    visit_If = visit_While = visit_IfExp = visit_Assert = _test_of

    def visit_UnaryOperation(self, node: cst.UnaryOperation) -> None:
        """``not p`` anywhere (``flag = not p``): a bool whatever the context, so ``p is None`` is exact."""
        if self.stack and isinstance(node.operator, cst.Not) and isinstance(node.expression, cst.Name):
            if node.expression.value in self.stack[-1]:
                self.tests.append((self.funcs[-1], node.expression.value, node.expression, "bool"))

    def visit_BooleanOperation(self, node: cst.BooleanOperation) -> None:
        """``p or x`` / ``p and x`` whose value is used (not only its truth)."""
        if not self.stack or not self.stack[-1]:
            return
        parent = self.get_metadata(ParentNodeProvider, node, None)
        in_test = False
        child: cst.CSTNode = node
        while isinstance(parent, cst.BooleanOperation | cst.UnaryOperation):
            child, parent = parent, self.get_metadata(ParentNodeProvider, parent, None)
        if isinstance(parent, cst.If | cst.While | cst.IfExp | cst.Assert) and parent.test is child:
            in_test = True
        if not in_test and isinstance(node.left, cst.Name) and node.left.value in self.stack[-1]:
            kind = "or" if isinstance(node.operator, cst.Or) else "and"
            self.tests.append((self.funcs[-1], node.left.value, node, kind))

    def judge(self, func: cst.FunctionDef, name: str) -> tuple[list[str], list[str]]:
        """(graph evidence, plain evidence) for parameter ``name`` of ``func``."""
        uses = _Uses(name, self.aliases, self.symbolic)
        func.body.visit(uses)
        params = [p.name.value for p in func.params.params]
        index = params.index(name) if name in params else None
        if params and params[0] == "self" and index is not None:
            index -= 1
        if uses.graph_targets & uses.p_targets:
            # `if not input: self.x = T.matrix() else: self.x = input`
            uses.graph.append(
                f"stored where a graph value is stored ({sorted(uses.graph_targets & uses.p_targets)[0]})"
            )
        callers = list(self.callers.get(func.name.value, []))
        if func.name.value == "__init__" and func in self.classes:
            callers += self.callers.get(self.classes[func], [])  # `DA(input=x)` constructs the class
        for call in callers:
            positional = [a for a in call.args if a.keyword is None and not a.star]
            values = [a.value for a in call.args if a.keyword is not None and a.keyword.value == name]
            if index is not None and index < len(positional):
                values.append(positional[index].value)
            if any(uses._is_graph_value(v) for v in values):
                uses.graph.append("a caller passes a graph variable")
        if name in PLAIN_NAMES or _COUNT_NAME.search(name):
            uses.plain.append("its name")
        return uses.graph, uses.plain


class _Symbolic(cst.CSTVisitor):
    """Graph-library aliases, names assigned graph calls, and the calls of each function name."""

    def __init__(self) -> None:
        self.aliases: set[str] = set()
        self.symbolic: set[str] = set()
        self.callers: dict[str, list[cst.Call]] = {}

    def visit_Import(self, node: cst.Import) -> None:
        for alias in node.names:
            dotted = _dotted(alias.name) or ""
            if dotted.split(".")[0] in GRAPH_ROOTS:
                local = bound_name(alias, dotted.split(".")[0])
                self.aliases.add(local)

    def visit_ImportFrom(self, node: cst.ImportFrom) -> None:
        module = _dotted(node.module) if node.module else ""
        if (module or "").split(".")[0] in GRAPH_ROOTS and not isinstance(node.names, cst.ImportStar):
            for alias in node.names:
                local = bound_name(alias, alias.name.value)
                if local not in ("config", "shared"):
                    self.aliases.add(local)

    def visit_Call(self, node: cst.Call) -> None:
        name = _dotted(node.func)
        if name is not None:
            self.callers.setdefault(name.rsplit(".", 1)[-1], []).append(node)

    def visit_Assign(self, node: cst.Assign) -> None:
        if isinstance(node.value, cst.Call):
            dotted = _dotted(node.value.func) or ""
            if dotted.split(".")[0] in self.aliases and ".config" not in dotted:
                for t in node.targets:
                    name = _dotted(t.target)
                    if name is not None:
                        self.symbolic.add(name)


def _is_not_none(expr: cst.BaseExpression, negated: bool) -> cst.Comparison:
    op = cst.Is() if negated else cst.IsNot()
    return cst.Comparison(
        left=expr, comparisons=[cst.ComparisonTarget(operator=op, comparator=cst.Name("None"))]
    )


class _Rewrite(cst.CSTTransformer):
    def __init__(self, names: set[cst.Name], nots: set[cst.UnaryOperation], values: dict[cst.CSTNode, str]):
        super().__init__()
        self.names, self.nots, self.values = names, nots, values

    def leave_UnaryOperation(self, original_node: cst.UnaryOperation, updated_node: cst.UnaryOperation):
        if original_node in self.nots:
            return _is_not_none(updated_node.expression, True).with_changes(
                lpar=updated_node.lpar, rpar=updated_node.rpar
            )
        return updated_node

    def leave_Name(self, original_node: cst.Name, updated_node: cst.Name):
        if original_node in self.names:
            return _is_not_none(updated_node, False)
        return updated_node

    def leave_BooleanOperation(self, original_node: cst.BooleanOperation, updated_node: cst.BooleanOperation):
        kind = self.values.get(original_node)
        if kind is None:
            return updated_node
        p = original_node.left
        test = _is_not_none(p, False)
        body, orelse = (p, updated_node.right) if kind == "or" else (updated_node.right, p)
        return cst.IfExp(test=test, body=body, orelse=orelse, lpar=[cst.LeftParen()], rpar=[cst.RightParen()])


def fix_truth_tests(module: cst.Module, path: str) -> tuple[cst.Module, list[Finding]]:
    """Rewrite (or report) truth tests of None-defaulted graph parameters; see the module docstring."""
    symbolic = _Symbolic()
    module.visit(symbolic)
    if not symbolic.aliases:
        return module, []  # a module that never imports the graph library builds no graph variables
    wrapper = MetadataWrapper(module, unsafe_skip_copy=True)
    analysis = _Analysis(symbolic.aliases, symbolic.symbolic, symbolic.callers)
    wrapper.visit(analysis)
    positions = wrapper.resolve(PositionProvider)
    parents = wrapper.resolve(ParentNodeProvider)
    verdicts: dict[tuple[int, str], tuple[list[str], list[str]]] = {}
    names: set[cst.Name] = set()
    nots: set[cst.UnaryOperation] = set()
    values: dict[cst.CSTNode, str] = {}
    findings = []
    seen: set[int] = set()
    for func, name, node, kind in analysis.tests:
        if id(node) in seen:
            continue  # `not p` inside a test is found twice
        seen.add(id(node))
        key = (id(func), name)
        if key not in verdicts:
            verdicts[key] = analysis.judge(func, name)
        graph, plain = verdicts[key]
        line = positions[node].start.line
        if graph:
            parent = parents.get(node)
            if kind != "bool":
                values[node] = kind
            elif isinstance(parent, cst.UnaryOperation) and isinstance(parent.operator, cst.Not):
                nots.add(parent)
            else:
                names.add(node)
            findings.append(
                Finding(
                    path,
                    line,
                    "changed",
                    f"truth test of `{name}` (default None, used as a "
                    f"graph variable: {graph[0]}) rewritten to an `is None` test",
                )
            )
        else:
            looks = f"left as it is: `{name}` looks like a plain value here ({plain[0]}); " if plain else ""
            message = (
                f"truth test of `{name}` (default None): {looks}if a graph variable can arrive here "
                f"PyTensor raises; write `{name} is not None`"
            )
            findings.append(Finding(path, line, "review", message))
    if not (names or nots or values):
        return module, findings
    return module.visit(_Rewrite(names, nots, values)), findings
