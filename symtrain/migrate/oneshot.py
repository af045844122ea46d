"""One-shot results in Theano-era code: ``zip``/``map``/``filter`` and ``dict.keys()/values()/items()``.

In Python 2 these returned lists. Under Python 3 ``zip``/``map``/``filter`` return iterators that a
second pass silently finds empty (a training loop over returned batches runs once, then trains on
nothing), a bare ``map(f, xs)`` statement never calls ``f``, and dict views follow later changes of their
dict. Code written in the Theano era relied on lists even when it already parsed as Python 3 (the ``six``
era), so every such result that is not consumed once on the spot (a ``for`` loop, a comprehension,
``list()``/``sorted()``/``dict()``/``sum()``/``''.join()``..., unpacking) becomes ``list(...)``, and so
does a ``for`` loop over a dict's view whose body adds or removes that dict's keys.
"""

from __future__ import annotations

import libcst as cst
import libcst.matchers as m
from libcst.metadata import (
    BuiltinAssignment,
    MetadataWrapper,
    ParentNodeProvider,
    PositionProvider,
    ScopeProvider,
)

from symtrain.migrate.report import Finding
from symtrain.migrate.transform import dotted_name as _dotted

ITERATORS = frozenset({"zip", "map", "filter"})
VIEWS = frozenset({"keys", "values", "items"})
# callables that consume an iterable argument exactly once and keep no reference to it
CONSUMERS = frozenset(
    {
        "list",
        "tuple",
        "set",
        "frozenset",
        "sorted",
        "dict",
        "sum",
        "min",
        "max",
        "any",
        "all",
        "enumerate",
        "iter",
        "reversed",
        "zip",
        "map",
        "filter",
        "OrderedDict",
        "collections.OrderedDict",
        "Counter",
        "collections.Counter",
        "deque",
        "collections.deque",
        "functools.reduce",
        "reduce",
    }
)
CONSUMER_METHODS = frozenset(
    {
        "join",
        "extend",
        "update",
        "fromkeys",
        "writelines",
        "union",
        "intersection",
        "difference",
        "issubset",
        "issuperset",
    }
)
VIEW_CONSUMERS = frozenset({"len", "bool"})


MUTATORS = frozenset({"pop", "popitem", "clear", "update", "setdefault"})


def _mutates(body: cst.CSTNode, spelled: str | None) -> bool:
    """Whether ``body`` adds or removes keys of the dict spelled ``spelled`` (``del d[k]``, ``d[k] = v``,
    ``d.pop(k)``...)."""
    if spelled is None:
        return False
    targets = [n.target for n in m.findall(body, m.Del() | m.AssignTarget())]
    if any(isinstance(t, cst.Subscript) and _dotted(t.value) == spelled for t in targets):
        return True
    return any(
        isinstance(call.func, cst.Attribute)
        and call.func.attr.value in MUTATORS
        and _dotted(call.func.value) == spelled
        for call in m.findall(body, m.Call())
    )


class _OneShot(cst.CSTTransformer):
    METADATA_DEPENDENCIES = (ParentNodeProvider, PositionProvider, ScopeProvider)

    def __init__(self, path: str):
        super().__init__()
        self.path = path
        self.findings: list[Finding] = []
        self.wrap: dict[cst.Call, str] = {}

    def _kind(self, node: cst.Call) -> str | None:
        """``zip``/``map``/``filter`` (the builtins, not shadowed) or ``.keys``/``.values``/``.items``."""
        if isinstance(node.func, cst.Name) and node.func.value in ITERATORS:
            scope = self.get_metadata(ScopeProvider, node.func, None)
            if scope is not None and any(
                not isinstance(a, BuiltinAssignment) for a in scope[node.func.value]
            ):
                return None  # a local or module-level definition shadows the builtin
            return node.func.value
        if isinstance(node.func, cst.Attribute) and node.func.attr.value in VIEWS and not node.args:
            return f".{node.func.attr.value}()"
        return None

    def _consumed_once(self, node: cst.Call, view: bool) -> bool:
        parent = self.get_metadata(ParentNodeProvider, node, None)
        if isinstance(parent, cst.For) and parent.iter is node and view:
            # `for k in d.keys(): del d[k]` changed the dict under its live view (RuntimeError)
            return not _mutates(parent.body, _dotted(node.func.value))
        if isinstance(parent, cst.For | cst.CompFor) and parent.iter is node:
            return True
        if isinstance(parent, cst.Arg):
            if parent.star:
                return True
            call = self.get_metadata(ParentNodeProvider, parent, None)
            if not isinstance(call, cst.Call):
                return False
            if isinstance(call.func, cst.Attribute) and call.func.attr.value in CONSUMER_METHODS:
                return True
            name = _dotted(call.func)
            return name is not None and (name in CONSUMERS or (view and name in VIEW_CONSUMERS))
        if isinstance(parent, cst.Assign) and all(
            isinstance(t.target, cst.Tuple | cst.List) for t in parent.targets
        ):
            return True  # unpacking consumes it
        if isinstance(parent, cst.From):
            return True  # yield from
        if isinstance(parent, cst.ComparisonTarget):
            return True  # `x in zip(...)`: one pass
        return False

    def visit_Call(self, node: cst.Call) -> None:
        kind = self._kind(node)
        if kind is None or self._consumed_once(node, kind.startswith(".")):
            return
        self.wrap[node] = kind

    def leave_Call(self, original_node: cst.Call, updated_node: cst.Call) -> cst.BaseExpression:
        kind = self.wrap.get(original_node)
        if kind is None:
            return updated_node
        line = self.get_metadata(PositionProvider, original_node).start.line
        what = f"`{kind}(...)`" if not kind.startswith(".") else f"`dict{kind}`"
        self.findings.append(
            Finding(
                self.path,
                line,
                "changed",
                f"{what} wrapped in list(...): a Python 3 "
                "iterator/view is consumed once (Theano-era code expected a list)",
            )
        )
        inner = updated_node.with_changes(lpar=[], rpar=[])
        return cst.Call(
            func=cst.Name("list"), args=[cst.Arg(value=inner)], lpar=updated_node.lpar, rpar=updated_node.rpar
        )


def wrap_one_shot(module: cst.Module, path: str) -> tuple[cst.Module, list[Finding]]:
    """Wrap the one-shot results of ``module`` that are not consumed once in ``list(...)``."""
    wrapper = MetadataWrapper(module, unsafe_skip_copy=True)
    fixer = _OneShot(path)
    new = wrapper.visit(fixer)
    return new, fixer.findings
