"""``symtrain migrate --out-of-core``: the two-line change of docs/out-of-core-legacy.md, where it is safe.

Runs on a module that already uses PyTensor (or still Theano/Aesara) names. It rewrites the ``shared``
calls of a tutorial-style ``shared_dataset`` function to ``symtrain.shared`` and every ``function`` call
of the module to ``symtrain.function``, only when all the safety rules of the doc hold:

1. the ``shared`` argument is a data array unpacked from the function's parameter (``data_x, data_y =
   data_xy``), possibly through ``numpy.asarray(NAME, dtype=...)``; keyword arguments only ``borrow``/
   ``name``;
2. the function returns only those shared variables or ``T.cast`` of them;
3. the returned data variables are never ``set_value``'d, read whole with ``get_value()``, updated, or
   given whole (``givens={x: train_set_x}``) anywhere in the module;
4. the module loads arrays with ``mmap_mode=`` (otherwise streaming would not help: only reported).

Everything else is left alone and reported with file and line.
"""

from __future__ import annotations

import re

import libcst as cst
import libcst.matchers as m
from libcst.metadata import MetadataWrapper, ParentNodeProvider, PositionProvider, ScopeProvider

from symtrain.migrate.report import Finding
from symtrain.migrate.transform import bound_name, dotted_name

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
            local = bound_name(alias, name)
            if name == "symtrain" and local == "symtrain":
                self.has_symtrain = True
            if name in _GRAPH_MODULES:
                self.modules.add(local)

    def visit_ImportFrom(self, node: cst.ImportFrom) -> None:
        module = dotted_name(node.module) if node.module else None
        if module not in _GRAPH_MODULES or isinstance(node.names, cst.ImportStar):
            return
        for alias in node.names:
            local = bound_name(alias, alias.name.value)
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
    if (
        isinstance(arg, cst.Call)
        and (dotted_name(arg.func) or "").endswith(".asarray")
        and arg.args
        and arg.args[0].keyword is None
        and isinstance(arg.args[0].value, cst.Name)
    ):
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
                    if (
                        isinstance(target, cst.Tuple)
                        and isinstance(value, cst.Name)
                        and value.value in params
                    ):
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
                if (
                    isinstance(expr, cst.Call)
                    and (dotted_name(expr.func) or "").endswith("cast")
                    and expr.args
                    and isinstance(expr.args[0].value, cst.Name)
                    and expr.args[0].value.value in shared_names
                ):
                    continue
                return "it returns something other than the shared variables or T.cast of them"
        return None


_DATA_HINTS = ("set_x", "set_y")
_MEMMAP_CALLS = ("memmap", "open_memmap")
_ADAPTED = (
    "; the per-batch function is wrapped by symtrain.migrate.runtime.batch_chunks, which calls it for "
    "batch 0, 1, ... until it returns None or an empty batch, and streams the batches in order as rows: "
    "slice them with a global index in givens, and pass rows=N to know the length up front"
)
_RESTART = (
    "; the generator call is wrapped in `lambda: ...`, so that each epoch restarts it (a generator "
    "object can be read only once)"
)
_STREAM_KEYWORDS = {"borrow", "name", "chunk_rows", "rows", "max_load_bytes"}


def _value_index(call: cst.Call) -> int | None:
    """Where shared()'s value is: the first positional argument or ``value=`` (Theano's keyword)."""
    for k, a in enumerate(call.args):
        if a.keyword is None and not a.star:
            return k if k == 0 else None
        if a.keyword is not None and a.keyword.value == "value":
            return k
    return None


def _is_memmap_call(node: cst.BaseExpression) -> bool:
    """``np.memmap(...)``, ``np.lib.format.open_memmap(...)``, ``np.load(..., mmap_mode=...)``."""
    if not isinstance(node, cst.Call):
        return False
    name = dotted_name(node.func) or ""
    last = name.rsplit(".", 1)[-1]
    if last in _MEMMAP_CALLS:
        return True
    return last == "load" and any(
        a.keyword is not None and a.keyword.value == "mmap_mode" and not m.matches(a.value, m.Name("None"))
        for a in node.args
    )


def _unwrapped(node: cst.BaseExpression) -> cst.BaseExpression:
    """X for ``numpy.asarray(X, ...)`` / ``np.asarray(X, ...)``, else the node itself."""
    if (
        isinstance(node, cst.Call)
        and (dotted_name(node.func) or "").endswith("asarray")
        and node.args
        and node.args[0].keyword is None
    ):
        return node.args[0].value
    return node


def _yields(node: cst.FunctionDef) -> bool:
    return bool(m.findall(node.body, m.Yield()))


class _DirectStreams(cst.CSTVisitor):
    """``shared(np.memmap(...))``, ``shared(mm)`` with ``mm`` a memmap bound in the same scope, and
    generator-backed ``shared(gen_fn)`` / ``shared(lambda: ...)`` / ``shared(lambda batch_num: ...)``."""

    METADATA_DEPENDENCIES = (PositionProvider, ScopeProvider, ParentNodeProvider)

    def __init__(self, names: _Names):
        self.names = names
        self.calls: dict[cst.Call, tuple[str | None, str, cst.BaseExpression | None]] = {}
        self.targets: list[str] = []
        self.refused: list[tuple[int, str]] = []

    def _bound_value(self, name: cst.Name) -> cst.CSTNode | None:
        """What ``name`` was last bound to before this use, in its own scope (an assigned value or a def)."""
        scope = self.get_metadata(ScopeProvider, name, None)
        if scope is None:
            return None
        found = None
        for access in scope.accesses[name]:
            if access.node is not name:
                continue
            for assignment in access.referents:
                node = getattr(assignment, "node", None)
                if getattr(assignment, "scope", None) is not scope or node is None:
                    continue
                if isinstance(node, cst.FunctionDef):
                    found = node
                    continue
                parent = self.get_metadata(ParentNodeProvider, node, None)
                assign = self.get_metadata(ParentNodeProvider, parent, None) if parent is not None else None
                if isinstance(parent, cst.AssignTarget) and isinstance(assign, cst.Assign):
                    found = assign.value
        return found

    def _bound_attribute(self, attr: cst.Attribute) -> cst.BaseExpression | None:
        """``self.mm = np.memmap(...)`` earlier in the same function: the value last assigned to it."""
        func = self.get_metadata(ParentNodeProvider, attr, None)
        while func is not None and not isinstance(func, cst.FunctionDef):
            func = self.get_metadata(ParentNodeProvider, func, None)
        spelled = dotted_name(attr)
        if func is None or spelled is None:
            return None
        where = self.get_metadata(PositionProvider, attr).start.line
        found = None
        for assign in m.findall(func, m.Assign()):
            if (
                len(assign.targets) == 1
                and dotted_name(assign.targets[0].target) == spelled
                and self.get_metadata(PositionProvider, assign).start.line < where
            ):
                found = assign.value
        return found

    def _method(self, attr: cst.BaseExpression) -> cst.FunctionDef | None:
        """``self.batches``: the method of that name in the enclosing class, if any."""
        if not (isinstance(attr, cst.Attribute) and m.matches(attr.value, m.Name("self"))):
            return None
        owner = self.get_metadata(ParentNodeProvider, attr, None)
        while owner is not None and not isinstance(owner, cst.ClassDef):
            owner = self.get_metadata(ParentNodeProvider, owner, None)
        if owner is None:
            return None
        for stmt in owner.body.body:
            if isinstance(stmt, cst.FunctionDef) and stmt.name.value == attr.attr.value:
                return stmt
        return None

    def visit_Call(self, node: cst.Call) -> None:
        if dotted_name(node.func) not in self.names.shared:
            return
        at = _value_index(node)
        if at is None:
            return
        value = node.args[at].value
        inner = _unwrapped(value)  # numpy.asarray(mm, dtype=...) is a view of the mapping
        if isinstance(inner, cst.Name):
            bound = self._bound_value(inner)
        elif isinstance(inner, cst.Attribute):
            bound = self._bound_attribute(inner) or self._method(inner) or inner
        else:
            bound = inner
        kind, replacement = None, None
        called = (
            self._bound_value(value.func)
            if isinstance(value, cst.Call) and isinstance(value.func, cst.Name)
            else self._method(value.func)
            if isinstance(value, cst.Call)
            else None
        )
        sliced = inner.value if isinstance(inner, cst.Subscript) else None
        if isinstance(sliced, cst.Name):
            sliced = self._bound_value(sliced)
        if sliced is not None and _is_memmap_call(sliced):
            line = self.get_metadata(PositionProvider, node).start.line
            self.refused.append(
                (
                    line,
                    "not rewritten for out-of-core: shared() of a slice of a memmap holds that slice "
                    "in memory (copied, or paged in with borrow=True); stream the whole memmap with "
                    "symtrain.shared and slice it in givens (or make the slice a file of its own) "
                    f"({_DOC})",
                )
            )
            return
        if _is_memmap_call(bound):
            kind = "a memmap"
        elif isinstance(called, cst.FunctionDef) and _yields(called):
            kind = "a generator"
            replacement = cst.Lambda(params=cst.Parameters(), body=value)
        elif (
            isinstance(bound, cst.FunctionDef)
            and _yields(bound)
            and len(bound.params.params)
            == (1 if bound is not inner and isinstance(inner, cst.Attribute) else 0)
        ):
            kind = "a generator function"
        elif isinstance(bound, cst.Lambda) and not bound.params.params and not bound.params.star_arg:
            kind = "a callable returning chunks"
        elif isinstance(bound, cst.Lambda) and len(bound.params.params) == 1 and bound is value:
            kind = "lambda batch_num: ..."
            replacement = cst.Call(
                func=cst.parse_expression("symtrain.migrate.runtime.batch_chunks"),
                args=[cst.Arg(value=value)],
            )
        elif isinstance(bound, cst.Lambda | cst.FunctionDef):
            line = self.get_metadata(PositionProvider, node).start.line
            self.refused.append(
                (
                    line,
                    "not rewritten for out-of-core: symtrain.shared takes a callable with no "
                    "arguments returning an iterator of row chunks: write "
                    "`symtrain.shared(lambda: (batch(k) for k in range(n_batches)), chunk_rows=BATCH, "
                    f"rows=N)` and compile with symtrain.function ({_DOC})",
                )
            )
            return
        if kind is None:
            return
        others = [a for k, a in enumerate(node.args) if k != at]
        extra = {a.keyword.value for a in others if a.keyword is not None} - _STREAM_KEYWORDS
        if extra or any(a.keyword is None for a in others):
            line = self.get_metadata(PositionProvider, node).start.line
            self.refused.append(
                (
                    line,
                    f"not rewritten for out-of-core: shared({kind}) has arguments a streamed "
                    f"variable refuses ({sorted(extra) or 'positional'}) ({_DOC})",
                )
            )
            return
        parent = self.get_metadata(ParentNodeProvider, node, None)
        target = None
        if isinstance(parent, cst.Assign) and len(parent.targets) == 1:
            target = dotted_name(parent.targets[0].target)
        if target is not None:
            self.targets.append(target.split(".")[-1])
        self.calls[node] = (target.split(".")[-1] if target else None, kind, replacement)


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
            borrow = any(
                a.keyword is not None and a.keyword.value == "borrow" and m.matches(a.value, m.Name("True"))
                for a in node.args
            )
            if attr == "set_value":
                self._add(node, f"{dotted_name(node.func.value)}.set_value(...)")
            elif attr == "get_value" and not borrow:
                self._add(
                    node, f"{dotted_name(node.func.value)}.get_value() without borrow=True loads the data"
                )
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
                targets = (
                    [e.value for e in t.target.elements] if isinstance(t.target, cst.Tuple) else [t.target]
                )
                self.names |= {e.value for e in targets if isinstance(e, cst.Name)}


class _Rewrite(cst.CSTTransformer):
    def __init__(
        self,
        shared_calls: set[int],
        function_names: set[str],
        replacements: dict[int, cst.BaseExpression] | None = None,
    ):
        self.shared_calls = shared_calls
        self.function_names = function_names
        self.replacements = replacements or {}
        self.rewrote = 0

    def leave_Call(self, original: cst.Call, updated: cst.Call) -> cst.Call:
        if id(original) in self.shared_calls:
            self.rewrote += 1
            new = updated.with_changes(func=cst.parse_expression("symtrain.shared"))
            at = _value_index(original)
            if id(original) in self.replacements and at is not None:
                args = list(new.args)
                args[at] = args[at].with_changes(value=self.replacements[id(original)])
                new = new.with_changes(args=args)
            return new
        if dotted_name(original.func) in self.function_names:
            self.rewrote += 1
            return updated.with_changes(func=cst.parse_expression("symtrain.function"))
        return updated


def _add_import(module: cst.Module, statement: str) -> cst.Module:
    body = list(module.body)
    last = -1
    for i, stmt in enumerate(body):
        if isinstance(stmt, cst.SimpleStatementLine) and any(
            isinstance(s, cst.Import | cst.ImportFrom) for s in stmt.body
        ):
            last = i
    body.insert(last + 1, cst.parse_statement(statement))
    return module.with_changes(body=body)


def rewrite_out_of_core(module: cst.Module, path: str) -> tuple[cst.Module, list[Finding]]:
    """Apply the out-of-core rewrite where the rules hold; report the rest (kind "review")."""
    names = _Names()
    module.visit(names)
    names.finish()
    wrapper = MetadataWrapper(module)
    finder = _SharedDataset(names)
    wrapper.visit(finder)
    direct = _DirectStreams(names)
    wrapper.visit(direct)
    findings = [Finding(path, line, "review", msg) for line, msg in finder.refused + direct.refused]
    positions = wrapper.resolve(PositionProvider)
    shared_ids: set[int] = set()
    replacements: dict[int, cst.BaseExpression] = {}
    if finder.safe:
        data = _DataNames(finder.func_names)
        wrapper.module.visit(data)
        risky = _RiskyUses(data.names, names.function)
        wrapper.visit(risky)
        first_line = min(positions[f].start.line for f in finder.safe)
        if risky.risky:
            findings += [
                Finding(
                    path,
                    line,
                    "review",
                    f"not rewritten for out-of-core: {what} would be refused by a streamed variable ({_DOC})",
                )
                for line, what in risky.risky
            ]
        elif not names.mmap:
            findings.append(
                Finding(
                    path,
                    first_line,
                    "review",
                    "shared_dataset can stream with symtrain.shared "
                    "once the arrays are loaded with numpy.load(path, mmap_mode='r'); not "
                    f"rewritten because nothing in this module loads a memmap ({_DOC})",
                )
            )
        else:
            shared_ids |= {id(c) for calls in finder.safe.values() for c in calls}
            findings.append(
                Finding(
                    path,
                    first_line,
                    "changed",
                    "out-of-core: shared_dataset now streams "
                    "memmapped data through symtrain.shared and function calls go through "
                    f"symtrain.function ({_DOC})",
                )
            )
    if direct.calls:
        risky = _RiskyUses(set(direct.targets), names.function)
        wrapper.visit(risky)
        for call, (target, kind, replacement) in direct.calls.items():
            line = positions[call].start.line
            bad = [(n, what) for n, what in risky.risky if target and re.search(rf"\b{target}\b", what)]
            if bad:
                findings += [
                    Finding(
                        path,
                        n,
                        "review",
                        f"not rewritten for out-of-core: {what} would be refused "
                        f"by a streamed variable ({_DOC})",
                    )
                    for n, what in bad
                ]
                continue
            shared_ids.add(id(call))
            if replacement is not None:
                replacements[id(call)] = replacement
            adapted = "" if replacement is None else _ADAPTED if kind.startswith("lambda") else _RESTART
            findings.append(
                Finding(
                    path,
                    line,
                    "changed",
                    f"out-of-core: `shared({kind})` streams through "
                    "symtrain.shared (compile its functions with symtrain.function, which the "
                    f"module now uses){adapted} ({_DOC})",
                )
            )
    if not shared_ids:
        return module, findings
    # ids refer to nodes of wrapper.module (the metadata wrapper deep-copies), so rewrite that one
    rewriter = _Rewrite(shared_ids, names.function, replacements)
    new = wrapper.module.visit(rewriter)
    if not names.has_symtrain:
        new = _add_import(new, "import symtrain\n")
    if "symtrain.migrate.runtime.batch_chunks" in new.code and not re.search(
        r"^import symtrain\.migrate\.runtime\b", new.code, re.MULTILINE
    ):
        new = _add_import(new, "import symtrain.migrate.runtime\n")
    return new, findings


def out_of_core_source(source: str, path: str = "<string>") -> tuple[str, list[Finding]]:
    """The out-of-core rewrite of one module's text."""
    module, findings = rewrite_out_of_core(cst.parse_module(source), path)
    return module.code, findings
