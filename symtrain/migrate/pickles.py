"""Which ``open()`` calls feed a pickle (they need binary modes), found by binding and scope, not by name.

An ``open()`` call changes only when its file object reaches ``pickle.load``/``dump`` (or ``Unpickler``/
``Pickler``) directly, or through a name whose binding to that ``open()`` is in the same scope as the
pickle call. A name that is pickled in one function says nothing about a file of the same name opened
in another: those ``open()`` calls are left alone and reported.
"""

from __future__ import annotations

from collections.abc import Callable

import libcst as cst
import libcst.matchers as m
from libcst.metadata import ParentNodeProvider, PositionProvider, ScopeProvider

from symtrain.migrate import rules

OPEN_NAMES = ("open", "io.open")


def _open_binding(node: cst.Call, parent: cst.CSTNode | None) -> cst.Name | None:
    """The Name an ``open()`` result is bound to (``f = open(...)``, ``with open(...) as f``), if any."""
    if (
        isinstance(parent, cst.Assign)
        and len(parent.targets) == 1
        and isinstance(parent.targets[0].target, cst.Name)
    ):
        return parent.targets[0].target
    if isinstance(parent, cst.WithItem) and parent.asname and isinstance(parent.asname.name, cst.Name):
        return parent.asname.name
    return None


class PickleFiles(cst.CSTVisitor):
    """Collect ``binary``: open() call -> "load"/"dump", and ``others``: (open line, pickle line, name)."""

    METADATA_DEPENDENCIES = (ParentNodeProvider, PositionProvider, ScopeProvider)

    def __init__(self, name_of: Callable[[cst.BaseExpression], str | None]):
        super().__init__()
        self.name_of = name_of
        self.binary: dict[cst.Call, str] = {}
        self.opens: dict[cst.Name, cst.Call] = {}  # binding Name node -> its open() call
        self.pickled: list[tuple[cst.Name, str]] = []  # Name handed to a pickle call, direction
        self.others: list[tuple[int, list[int], str]] = []
        self.attr_pickled: list[tuple[cst.Attribute, str]] = []  # `pickle.load(self.f)`
        self.attr_opens: list[tuple[cst.Attribute, cst.Call]] = []  # `self.f = open(...)`
        self.calls: list[cst.Call] = []  # every call, for helpers that pickle a file parameter

    def visit_Call(self, node: cst.Call) -> None:
        self.calls.append(node)
        name = self.name_of(node.func)
        if name in rules.PICKLE_FILE_ARG:
            positional = [a for a in node.args if a.keyword is None]
            keyword = [a for a in node.args if a.keyword is not None and a.keyword.value == "file"]
            position = rules.PICKLE_FILE_ARG[name]
            arg = positional[position] if len(positional) > position else (keyword[0] if keyword else None)
            direction = "dump" if name in ("pickle.dump", "pickle.Pickler") else "load"
            if (
                arg is not None
                and isinstance(arg.value, cst.Call)
                and self.name_of(arg.value.func) in OPEN_NAMES
            ):
                self.binary[arg.value] = direction
            elif arg is not None and isinstance(arg.value, cst.Name):
                self.pickled.append((arg.value, direction))
            elif arg is not None and isinstance(arg.value, cst.Attribute):
                self.attr_pickled.append((arg.value, direction))
        if name in OPEN_NAMES:
            parent = self.get_metadata(ParentNodeProvider, node, None)
            binding = _open_binding(node, parent)
            if binding is not None:
                self.opens[binding] = node
            elif (
                isinstance(parent, cst.Assign)
                and len(parent.targets) == 1
                and isinstance(parent.targets[0].target, cst.Attribute)
            ):
                self.attr_opens.append((parent.targets[0].target, node))

    def _block(self, node: cst.CSTNode) -> cst.CSTNode | None:
        """The indented block (or module) whose statement list holds ``node``."""
        parent = self.get_metadata(ParentNodeProvider, node, None)
        while parent is not None and not isinstance(parent, cst.IndentedBlock | cst.Module):
            parent = self.get_metadata(ParentNodeProvider, parent, None)
        return parent

    def _inside(self, node: cst.CSTNode, block: cst.CSTNode | None) -> bool:
        while node is not None:
            if node is block:
                return True
            node = self.get_metadata(ParentNodeProvider, node, None)
        return False

    def _reaching(self, name: cst.Name, scope) -> list[cst.Name]:
        """The open() bindings in ``name``'s scope that can reach it: the last one before it, and earlier
        ones only while the later ones sit in branches (``if``/``else``, ``try``) the use is not in."""
        where = self.get_metadata(PositionProvider, name).start
        candidates = []
        for access in scope.accesses[name]:
            if access.node is not name:
                continue
            for assignment in access.referents:
                node = getattr(assignment, "node", None)
                if getattr(assignment, "scope", None) is not scope or not isinstance(node, cst.Name):
                    continue
                start = self.get_metadata(PositionProvider, node).start
                if (start.line, start.column) < (where.line, where.column):
                    candidates.append(((start.line, start.column), node))
        reaching = []
        for _, node in sorted(candidates, key=lambda c: c[0], reverse=True):
            reaching.append(node)
            if self._inside(name, self._block(node)):
                break  # an unconditional rebinding before the use hides the earlier ones
        return [node for node in reaching if node in self.opens]

    def _attribute_bindings(self) -> None:
        """``self.f = open(p)`` ... ``pickle.load(self.f)`` in the same function: the last such binding
        before the pickle call."""
        for target, direction in self.attr_pickled:
            spelled = cst.Module(body=[]).code_for_node(target)
            scope = self.get_metadata(ScopeProvider, target, None)
            where = self.get_metadata(PositionProvider, target).start
            best = None
            for bound, call in self.attr_opens:
                start = self.get_metadata(PositionProvider, bound).start
                if (
                    cst.Module(body=[]).code_for_node(bound) == spelled
                    and self.get_metadata(ScopeProvider, bound, None) is scope
                    and (start.line, start.column) < (where.line, where.column)
                ):
                    best = call
            if best is not None:
                self.binary[best] = direction

    def _owner(self, node: cst.CSTNode) -> cst.ClassDef | None:
        """The class whose body holds ``node`` directly (a method), else None."""
        block = self.get_metadata(ParentNodeProvider, node, None)
        owner = self.get_metadata(ParentNodeProvider, block, None) if block is not None else None
        return owner if isinstance(block, cst.IndentedBlock) and isinstance(owner, cst.ClassDef) else None

    def _enclosing_class(self, node: cst.CSTNode) -> cst.ClassDef | None:
        parent = self.get_metadata(ParentNodeProvider, node, None)
        while parent is not None and not isinstance(parent, cst.ClassDef):
            parent = self.get_metadata(ParentNodeProvider, parent, None)
        return parent

    def _helpers(self) -> dict[tuple[cst.ClassDef | None, str], tuple[int, str, str]]:
        """Functions that pickle one of their parameters (``def _dump(f, obj): pickle.dump(obj, f)``):
        (its class for a method, else None; name) -> (parameter position, parameter name, direction)."""
        helpers = {}
        for name, direction in self.pickled:
            scope = self.get_metadata(ScopeProvider, name, None)
            func = getattr(scope, "node", None)
            if not isinstance(func, cst.FunctionDef):
                continue
            params = [p.name.value for p in func.params.params]
            referents = [r for a in scope.accesses[name] if a.node is name for r in a.referents]
            if name.value in params and any(isinstance(r.node, cst.Param) for r in referents):
                key = (self._owner(func), func.name.value)
                helpers[key] = (params.index(name.value), name.value, direction)
        return helpers

    def _passed_to_helpers(self, matched: set[cst.Name]) -> None:
        """An open() result passed to a helper that pickles that parameter needs the binary mode too:
        a module-level function called by name, or a method of the same class called as ``self.name``."""
        helpers = self._helpers()
        for call in self.calls:
            func = call.func
            if isinstance(func, cst.Name):
                key, shift = (None, func.value), 0
            elif isinstance(func, cst.Attribute) and m.matches(func.value, m.Name("self")):
                key, shift = (self._enclosing_class(call), func.attr.value), 1
            else:
                continue
            if key not in helpers or (shift and key[0] is None):
                continue
            position, pname, direction = helpers[key]
            positional = [a for a in call.args if a.keyword is None and not a.star]
            at = position - shift
            keyword = [a for a in call.args if a.keyword is not None and a.keyword.value == pname]
            arg = positional[at] if 0 <= at < len(positional) else (keyword[0] if keyword else None)
            if arg is None:
                continue
            if isinstance(arg.value, cst.Call) and self.name_of(arg.value.func) in OPEN_NAMES:
                self.binary[arg.value] = direction
            elif isinstance(arg.value, cst.Name):
                scope = self.get_metadata(ScopeProvider, arg.value, None)
                for node in self._reaching(arg.value, scope) if scope is not None else []:
                    self.binary[self.opens[node]] = direction
                    matched.add(node)

    def leave_Module(self, original_node: cst.Module) -> None:
        """Resolve each pickled name to the open() bindings it reads in its own scope (or, for a helper's
        parameter, the bindings its callers pass)."""
        self._attribute_bindings()
        matched: set[cst.Name] = set()
        for name, direction in self.pickled:
            scope = self.get_metadata(ScopeProvider, name, None)
            if scope is None:
                continue
            for node in self._reaching(name, scope):
                self.binary[self.opens[node]] = direction
                matched.add(node)
        self._passed_to_helpers(matched)
        pickled_lines: dict[str, list[int]] = {}
        for name, _ in self.pickled:
            lines = pickled_lines.setdefault(name.value, [])
            line = self.get_metadata(PositionProvider, name).start.line
            if line not in lines:
                lines.append(line)
        for binding, call in self.opens.items():
            if binding in matched or call in self.binary or binding.value not in pickled_lines:
                continue
            line = self.get_metadata(PositionProvider, call).start.line
            self.others.append((line, pickled_lines[binding.value], binding.value))
