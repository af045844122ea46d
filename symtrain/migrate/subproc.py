"""Python 2 ``str`` through subprocess pipes: ``Popen(..., stdout=PIPE)``, ``check_output`` get ``text=True``.

Python 2 pipes carried ``str``; Python 3 pipes carry ``bytes`` unless ``text=True``: ``communicate(text)``
with a ``str`` raises, and ``check_output(...) == 'ok'`` is silently False. Calls that already choose
(``text=``, ``universal_newlines=``, ``encoding=``, ``errors=``) are left alone, and so are calls whose
result is ``.decode()``d on the spot (the code already expects bytes); calls passing ``**kwargs`` or in a
function that ``.encode()``s/``.decode()``s elsewhere are reported instead.
"""

from __future__ import annotations

import libcst as cst
import libcst.matchers as m
from libcst.metadata import MetadataWrapper, ParentNodeProvider, PositionProvider

from symtrain.migrate.report import Finding
from symtrain.migrate.transform import bound_name
from symtrain.migrate.transform import dotted_name as _dotted

PIPES = ("stdin", "stdout", "stderr")
CHOSEN = frozenset({"text", "universal_newlines", "encoding", "errors"})


class _Names(cst.CSTVisitor):
    """Local spellings of ``subprocess.Popen``/``check_output`` (``import subprocess as sp``, ...)."""

    def __init__(self) -> None:
        self.popen: set[str] = set()
        self.output: set[str] = set()

    def visit_Import(self, node: cst.Import) -> None:
        for alias in node.names:
            if _dotted(alias.name) == "subprocess":
                local = bound_name(alias, "subprocess")
                self.popen.add(f"{local}.Popen")
                self.output.add(f"{local}.check_output")

    def visit_ImportFrom(self, node: cst.ImportFrom) -> None:
        if (
            node.module is None
            or _dotted(node.module) != "subprocess"
            or isinstance(node.names, cst.ImportStar)
        ):
            return
        for alias in node.names:
            local = bound_name(alias, alias.name.value)
            {"Popen": self.popen, "check_output": self.output}.get(alias.name.value, set()).add(local)


def _codes_bytes(node: cst.CSTNode) -> bool:
    """Whether ``node`` holds a ``.decode(...)``/``.encode(...)`` call (code that handles bytes itself)."""
    return bool(m.findall(node, m.Call(func=m.Attribute(attr=m.Name("decode") | m.Name("encode")))))


class _Text(cst.CSTTransformer):
    METADATA_DEPENDENCIES = (PositionProvider, ParentNodeProvider)

    def _bytes_handled(self, node: cst.Call) -> str | None:
        """ "spot": the result is .decode()d right away; "scope": the enclosing function en/decodes."""
        parent = self.get_metadata(ParentNodeProvider, node, None)
        if isinstance(parent, cst.Attribute) and parent.attr.value == "decode":
            return "spot"
        while parent is not None and not isinstance(parent, cst.FunctionDef | cst.Module):
            parent = self.get_metadata(ParentNodeProvider, parent, None)
        return "scope" if parent is not None and _codes_bytes(parent) else None

    def __init__(self, path: str, names: _Names):
        super().__init__()
        self.path = path
        self.names = names
        self.findings: list[Finding] = []

    def leave_Call(self, original_node: cst.Call, updated_node: cst.Call) -> cst.BaseExpression:
        name = _dotted(original_node.func)
        keywords = {a.keyword.value for a in original_node.args if a.keyword is not None}
        if name in self.names.popen:
            piped = any(  # stdin/stdout/stderr=PIPE, or PIPE passed positionally (Popen's 4th-6th)
                (a.keyword is None or a.keyword.value in PIPES)
                and (_dotted(a.value) or "").rsplit(".", 1)[-1] == "PIPE"
                for a in original_node.args
            )
            if not piped and not any(a.star == "**" for a in original_node.args):
                return updated_node
        elif name not in self.names.output:
            return updated_node
        if keywords & CHOSEN:
            return updated_node
        line = self.get_metadata(PositionProvider, original_node).start.line
        handled = self._bytes_handled(original_node)
        if handled == "spot":
            return updated_node
        if handled == "scope":
            self.findings.append(
                Finding(
                    self.path,
                    line,
                    "review",
                    f"`{name}(...)` left exchanging bytes: this function encodes/decodes pipe data itself; "
                    "check each str that crosses the pipe (or pass text=True and drop the encode/decode)",
                )
            )
            return updated_node
        if any(a.star for a in original_node.args):
            self.findings.append(
                Finding(
                    self.path,
                    line,
                    "review",
                    f"`{name}(...)`: Python 2 pipes carried str; "
                    "pass text=True if this call exchanges text (Python 3 pipes carry bytes)",
                )
            )
            return updated_node
        self.findings.append(
            Finding(
                self.path,
                line,
                "changed",
                f"`{name}(...)` gets text=True: Python 2 pipes carried str (Python 3 pipes carry bytes)",
            )
        )
        args = list(updated_node.args)
        last = args[-1]
        if not isinstance(last.comma, cst.Comma):
            args[-1] = last.with_changes(comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" ")))
        args.append(
            cst.Arg(
                keyword=cst.Name("text"),
                value=cst.Name("True"),
                equal=cst.AssignEqual(
                    whitespace_before=cst.SimpleWhitespace(""), whitespace_after=cst.SimpleWhitespace("")
                ),
            )
        )
        return updated_node.with_changes(args=args)


def fix_pipes(module: cst.Module, path: str) -> tuple[cst.Module, list[Finding]]:
    """Give the subprocess pipes of a Python 2 module ``text=True`` (see the module docstring)."""
    names = _Names()
    module.visit(names)
    if not names.popen and not names.output:
        return module, []
    fixer = _Text(path, names)
    new = MetadataWrapper(module, unsafe_skip_copy=True).visit(fixer)
    return new, fixer.findings
