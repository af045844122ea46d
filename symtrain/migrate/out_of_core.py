"""``symtrain migrate --out-of-core``: the two-line change of docs/out-of-core-legacy.md, where it is safe.

Runs on a module that already uses PyTensor (or still Theano/Aesara) names. It rewrites the ``shared``
calls of a tutorial-style ``shared_dataset`` function to ``symtrain.shared`` and every ``function`` call
of the module to ``symtrain.function``, only when all the safety rules of the doc hold:

1. the ``shared`` argument is a data array unpacked from the function's parameter (``data_x, data_y =
   data_xy``), possibly through ``numpy.asarray(NAME, dtype=...)``; keyword arguments only ``borrow``/``name``;
2. the function returns only those shared variables or ``T.cast`` of them;
3. the returned data variables are never ``set_value``'d, read whole with ``get_value()``, updated, or
   given whole (``givens={x: train_set_x}``) anywhere in the module;
4. the module loads arrays with ``mmap_mode=`` (otherwise streaming would not help: only reported).

Everything else is left alone and reported with file and line.
"""

from __future__ import annotations

import libcst as cst
import libcst.matchers as m
from libcst.metadata import MetadataWrapper, PositionProvider

from symtrain.migrate.report import Finding
from symtrain.migrate.transform import dotted_name

_GRAPH_MODULES = ("pytensor", "theano", "aesara")
_DOC = "see docs/out-of-core-legacy.md"


class _Names(cst.CSTVisitor):
    """Which local spellings mean the graph library's ``shared`` and ``function``; mmap loads; imports."""

    def __init__(self) -> None:
        self.shared: set[str] = set()
        self.function: set[str] = set()
        self.modules: set[str] = set()
        self.mmap = False
        self.has_symtrain = False

    def visit_Import(self, node: cst.Import) -> None:
        for alias in node.names:
            name = dotted_name(alias.name) or ""
            local = alias.asname.name.value if alias.asname and isinstance(alias.asname.name, cst.Name) else name
            if name == "symtrain" and local == "symtrain":
                self.has_symtrain = True
            if name in _GRAPH_MODULES:
                self.modules.add(local)

    def visit_ImportFrom(self, node: cst.ImportFrom) -> None:
        module = dotted_name(node.module) if node.module else None
        if module not in _GRAPH_MODULES or isinstance(node.names, cst.ImportStar):
            return
        for alias in node.names:
            local = alias.asname.name.value if alias.asname else alias.name.value
            if alias.name.value == "shared":
                self.shared.add(local)
            elif alias.name.value == "function":
                self.function.add(local)

    def visit_Arg(self, node: cst.Arg) -> None:
        if node.keyword is not None and node.keyword.value == "mmap_mode":
            self.mmap = True

    def finish(self) -> None:
        self.shared |= {f"{mod}.shared" for mod in self.modules}
        self.function |= {f"{mod}.function" for mod in self.modules}


def _unwrapped_name(arg: cst.BaseExpression) -> str | None:
    """NAME for ``NAME`` or ``numpy.asarray(NAME, ...)`` / ``np.asarray(NAME, ...)``."""
    if isinstance(arg, cst.Name):
        return arg.value
    if isinstance(arg, cst.Call) and (dotted_name(arg.func) or "").endswith(".asarray") and arg.args \
            and arg.args[0].keyword is None and isinstance(arg.args[0].value, cst.Name):
        return arg.args[0].value.value
    return None


class _SharedDataset(cst.CSTVisitor):
    """Find functions shaped like ``shared_dataset`` and judge them by rules 1 and 2."""

    METADATA_DEPENDENCIES = (PositionProvider,)

    def __init__(self, names: _Names):
        self.names = names
        self.safe: dict[cst.FunctionDef, list[cst.Call]] = {}
        self.refused: list[tuple[int, str]] = []
        self.func_names: set[str] = set()

    def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
        params = {p.name.value for p in node.params.params}
        data: set[str] = set()
        calls: list[tuple[cst.Assign, cst.Call]] = []
        returns: list[cst.Return] = []
        for stmt in node.body.body:
            if not isinstance(stmt, cst.SimpleStatementLine):
                continue
            for small in stmt.body:
                if isinstance(small, cst.Assign) and len(small.targets) == 1:
                    target, value = small.targets[0].target, small.value
                    if isinstance(target, cst.Tuple) and isinstance(value, cst.Name) and value.value in params:
                        data |= {e.value.value for e in target.elements if isinstance(e.value, cst.Name)}
                    elif isinstance(value, cst.Call) and dotted_name(value.func) in self.names.shared:
                        calls.append((small, value))
                elif isinstance(small, cst.Return):
                    returns.append(small)
        if not data or not calls:
            return True
        line = self.get_metadata(PositionProvider, node).start.line
        why = self._judge(data, calls, returns)
        if why:
            self.refused.append((line, f"{node.name.value}: not rewritten for out-of-core: {why} ({_DOC})"))
        else:
            self.safe[node] = [c for _, c in calls]
            self.func_names.add(node.name.value)
        return True

    def _judge(self, data: set[str], calls: list, returns: list) -> str | None:
        shared_names = set()
        for assign, call in calls:
            if not call.args or call.args[0].keyword is not None:
                return "a shared() call without a positional value"
            if _unwrapped_name(call.args[0].value) not in data:
                return "a shared() value is not one of the unpacked data arrays"
            if any(a.keyword is None for a in call.args[1:]):
                return "shared() has positional arguments after the value"
            extra = {a.keyword.value for a in call.args[1:]} - {"borrow", "name"}
            if extra:
                return f"shared() has arguments other than borrow=/name= ({sorted(extra)})"
            target = assign.targets[0].target
            if not isinstance(target, cst.Name):
                return "a shared() result is not assigned to a plain name"
            shared_names.add(target.value)
        if not returns:
            return "it returns nothing"
        for ret in returns:
            values = ret.value.elements if isinstance(ret.value, cst.Tuple) else [ret.value]
            for v in values:
                expr = v.value if isinstance(v, cst.Element) else v
                if isinstance(expr, cst.Name) and expr.value in shared_names:
                    continue
                if isinstance(expr, cst.Call) and (dotted_name(expr.func) or "").endswith("cast") and expr.args \
                        and isinstance(expr.args[0].value, cst.Name) and expr.args[0].value.value in shared_names:
                    continue
                return "it returns something other than the shared variables or T.cast of them"
        return None


_DATA_HINTS = ("set_x", "set_y")


class _RiskyUses(cst.CSTVisitor):
    """Rule 3: uses of the data variables that a streamed variable refuses (by name, conservatively)."""

    METADATA_DEPENDENCIES = (PositionProvider,)

    def __init__(self, data_names: set[str], function_names: set[str]):
        self.data = data_names
        self.function_names = function_names
        self.risky: list[tuple[int, str]] = []

    def _is_data(self, node: cst.BaseExpression) -> bool:
        name = dotted_name(node)
        return name is not None and (name.split(".")[-1] in self.data or name.endswith(_DATA_HINTS))

    def _add(self, node: cst.CSTNode, what: str) -> None:
        self.risky.append((self.get_metadata(PositionProvider, node).start.line, what))

    def visit_Call(self, node: cst.Call) -> None:
        if isinstance(node.func, cst.Attribute) and self._is_data(node.func.value):
            attr = node.func.attr.value
            borrow = any(a.keyword is not None and a.keyword.value == "borrow" and m.matches(a.value, m.Name("True"))
                         for a in node.args)
            if attr == "set_value":
                self._add(node, f"{dotted_name(node.func.value)}.set_value(...)")
            elif attr == "get_value" and not borrow:
                self._add(node, f"{dotted_name(node.func.value)}.get_value() without borrow=True loads the data")
        if dotted_name(node.func) in self.function_names:
            for arg in node.args:
                if arg.keyword is None or arg.keyword.value not in ("givens", "updates"):
                    continue
                for key, value in _pairs(arg.value):
                    if arg.keyword.value == "updates" and self._is_data(key):
                        self._add(node, f"updates to {dotted_name(key)}")
                    if arg.keyword.value == "givens" and self._is_data(value):
                        self._add(node, f"givens use {dotted_name(value)} whole (not a batch slice)")


def _pairs(node: cst.BaseExpression) -> list[tuple[cst.BaseExpression, cst.BaseExpression]]:
    """(key, value) of a dict literal or a list/tuple literal of 2-tuples; [] otherwise."""
    out = []
    if isinstance(node, cst.Dict):
        out = [(e.key, e.value) for e in node.elements if isinstance(e, cst.DictElement)]
    elif isinstance(node, cst.List | cst.Tuple):
        for e in node.elements:
            if isinstance(e.value, cst.Tuple) and len(e.value.elements) == 2:
                out.append((e.value.elements[0].value, e.value.elements[1].value))
    return out


class _DataNames(cst.CSTVisitor):
    """Names bound from the results of the shared_dataset functions (``a, b = shared_dataset(...)``)."""

    def __init__(self, funcs: set[str]):
        self.funcs = funcs
        self.names: set[str] = set()

    def visit_Assign(self, node: cst.Assign) -> None:
        if isinstance(node.value, cst.Call) and dotted_name(node.value.func) in self.funcs:
            for t in node.targets:
                targets = [e.value for e in t.target.elements] if isinstance(t.target, cst.Tuple) else [t.target]
                self.names |= {e.value for e in targets if isinstance(e, cst.Name)}


class _Rewrite(cst.CSTTransformer):
    def __init__(self, shared_calls: set[int], function_names: set[str]):
        self.shared_calls = shared_calls
        self.function_names = function_names
        self.rewrote = 0

    def leave_Call(self, original: cst.Call, updated: cst.Call) -> cst.Call:
        if id(original) in self.shared_calls:
            self.rewrote += 1
            return updated.with_changes(func=cst.parse_expression("symtrain.shared"))
        if dotted_name(original.func) in self.function_names:
            self.rewrote += 1
            return updated.with_changes(func=cst.parse_expression("symtrain.function"))
        return updated


def _add_import(module: cst.Module) -> cst.Module:
    body = list(module.body)
    last = -1
    for i, stmt in enumerate(body):
        if isinstance(stmt, cst.SimpleStatementLine) and any(isinstance(s, cst.Import | cst.ImportFrom)
                                                             for s in stmt.body):
            last = i
    body.insert(last + 1, cst.parse_statement("import symtrain\n"))
    return module.with_changes(body=body)


def rewrite_out_of_core(module: cst.Module, path: str) -> tuple[cst.Module, list[Finding]]:
    """Apply the out-of-core rewrite where the rules hold; report the rest (kind "review")."""
    names = _Names()
    module.visit(names)
    names.finish()
    wrapper = MetadataWrapper(module)
    finder = _SharedDataset(names)
    wrapper.visit(finder)
    findings = [Finding(path, line, "review", msg) for line, msg in finder.refused]
    if not finder.safe:
        return module, findings
    data = _DataNames(finder.func_names)
    wrapper.module.visit(data)
    risky = _RiskyUses(data.names, names.function)
    wrapper.visit(risky)
    first_line = min(wrapper.resolve(PositionProvider)[f].start.line for f in finder.safe)
    if risky.risky:
        findings += [Finding(path, line, "review", f"not rewritten for out-of-core: {what} would be refused by "
                             f"a streamed variable ({_DOC})") for line, what in risky.risky]
        return module, findings
    if not names.mmap:
        findings.append(Finding(path, first_line, "review", "shared_dataset can stream with symtrain.shared once "
                                "the arrays are loaded with numpy.load(path, mmap_mode='r'); not rewritten "
                                f"because nothing in this module loads a memmap ({_DOC})"))
        return module, findings
    shared_ids = {id(c) for calls in finder.safe.values() for c in calls}
    # ids refer to nodes of wrapper.module (the metadata wrapper deep-copies), so rewrite that one
    rewriter = _Rewrite(shared_ids, names.function)
    new = wrapper.module.visit(rewriter)
    if not names.has_symtrain:
        new = _add_import(new)
    findings.append(Finding(path, first_line, "review", "out-of-core: shared_dataset now streams memmapped data "
                            f"through symtrain.shared and function calls go through symtrain.function ({_DOC})"))
    return new, findings


def out_of_core_source(source: str, path: str = "<string>") -> tuple[str, list[Finding]]:
    """The out-of-core rewrite of one module's text."""
    module, findings = rewrite_out_of_core(cst.parse_module(source), path)
    return module.code, findings
