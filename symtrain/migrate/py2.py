"""Python 2 sources: detect them, convert them with 2to3 fixers (fissix), and report what the fixers wrapped.

libcst parses Python 3 only, and most Theano code is Python 2. A file counts as Python 2 when it does not
parse as Python 3, or when it uses names only Python 2 has (``xrange``, ``cPickle``, ``iteritems``...).
The conversion uses fissix (a maintained copy of lib2to3, which Python 3.13 removed) with the fixers
that matter for research code: print statements, ``except X, e``, ``xrange``, ``cPickle`` and the other
renamed modules, ``iteritems``/``itervalues``/``iterkeys``, and ``zip``/``map``/``filter`` wrapped in
``list(...)`` wherever they are not consumed once by a loop (Python 3 iterators silently stop after one
pass); those wrappings are reported. Integer division is then fixed by ``symtrain.migrate.division``,
the print fixer's ``print((x))`` is collapsed, and subprocess pipes get ``text=True``
(``symtrain.migrate.subproc``).
"""

from __future__ import annotations

import difflib
import functools
import io
import logging
import re
import tokenize

import libcst as cst
from libcst.metadata import BuiltinAssignment, MetadataWrapper, PositionProvider, ScopeProvider

from symtrain.errors import MigrationError
from symtrain.migrate.report import Finding

# Python-2-only names, by how they must appear to count: called/used builtins, methods after a dot, and
# modules in an import statement. A Python 3 file that merely has a variable called ``has_key`` or a
# compatibility shim (``xrange = range``) is not taken for Python 2.
PY2_BUILTINS = frozenset({"xrange", "raw_input", "basestring", "unichr", "execfile", "unicode", "long"})
PY2_METHODS = frozenset(
    {"iteritems", "itervalues", "iterkeys", "has_key", "viewitems", "viewkeys", "viewvalues", "xreadlines"}
)
PY2_MODULES = frozenset(
    {
        "cPickle",
        "cStringIO",
        "urllib2",
        "izip",
        "imap",
        "ifilter",
        "ConfigParser",
        "Queue",
        "StringIO",
        "__builtin__",
    }
)

FIXERS = [
    "apply",
    "basestring",
    "dict",
    "except",
    "exec",
    "execfile",
    "exitfunc",
    "filter",
    "funcattrs",
    "getcwdu",
    "has_key",
    "imports",
    "imports2",
    "intern",
    "isinstance",
    "itertools",
    "itertools_imports",
    "long",
    "map",
    "metaclass",
    "methodattrs",
    "ne",
    "next",
    "nonzero",
    "numliterals",
    "operator",
    "paren",
    "print",
    "raise",
    "raw_input",
    "reduce",
    "renames",
    "repr",
    "standarderror",
    "sys_exc",
    "throw",
    "tuple_params",
    "types",
    "unicode",
    "urllib",
    "xrange",
    "xreadlines",
    "zip",
]


def parses_as_python3(source: str) -> bool:
    """Whether libcst (Python 3 grammar) accepts the source."""
    try:
        cst.parse_module(source)
    except cst.ParserSyntaxError:
        return False
    return True


def looks_like_python2(source: str) -> bool:
    """Python 2 markers in the tokens (not in comments or strings): ``xrange(...)``, ``d.iteritems()``,
    ``import cPickle``, unless the file defines the name itself (``xrange = range``, ``def unicode``)."""
    try:
        tokens = [
            t
            for t in tokenize.generate_tokens(io.StringIO(source).readline)
            if t.type in (tokenize.NAME, tokenize.OP)
        ]
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return True
    defined = {
        tokens[i + 1].string
        for i, t in enumerate(tokens[:-1])
        if t.string in ("def", "class", "as", "global")
    }
    defined |= {t.string for i, t in enumerate(tokens[:-1]) if tokens[i + 1].string == "="}
    defined |= shim_names(source)
    lines = source.splitlines()

    def catches(start: int, depth: int) -> bool:
        """Whether the ``try:`` on line ``start`` (0-based) has an ``except NameError/ImportError``."""
        for text in lines[start + 1 :]:
            stripped = text.strip()
            if not stripped or stripped.startswith("#") or len(text) - len(text.lstrip()) > depth:
                continue
            if stripped.startswith("except") and re.search(
                r"NameError|ImportError|ModuleNotFoundError", stripped
            ):
                return True
            if not stripped.startswith(("except", "else", "finally")):
                return False
        return False

    def after_try(row: int) -> bool:
        """Right after a ``try:`` (``try: import cPickle`` followed by any ``except``)."""
        for k in range(row - 2, -1, -1):
            text = lines[k].strip()
            if text and not text.startswith("#"):
                return text == "try:"
        return False

    def guarded(row: int) -> bool:
        """Inside a compatibility block: ``try:`` (``try: import cPickle``), ``except NameError/ImportError``,
        or a version test (``if six.PY2:``, ``if sys.version_info[0] == 2:`` and its ``else:``)."""
        indent = len(lines[row - 1]) - len(lines[row - 1].lstrip())
        sibling = None  # after an else/elif/except header: the depth of its if/try
        for k in range(row - 2, -1, -1):
            text = lines[k].strip()
            if not text or text.startswith("#"):
                continue
            depth = len(lines[k]) - len(lines[k].lstrip())
            if depth < indent or (depth == sibling and text.endswith(":")):
                if _COMPAT_HEADER.search(text) and (not text.startswith("try") or catches(k, depth)):
                    return True
                indent = depth
                sibling = depth if text.startswith(("else", "elif", "except")) else None
            if depth == 0 and sibling is None:
                break
        return False

    for i, tok in enumerate(tokens):
        prev = tokens[i - 1].string if i else ""
        name = tok.string
        owner = tokens[i - 2].string if i > 1 else ""
        if (
            name in PY2_METHODS
            and prev == "."
            and owner != "six"
            and f'"{name}"' not in tok.line
            and f"'{name}'" not in tok.line
        ):
            return True  # (not a shim such as `d.iteritems() if hasattr(d, "iteritems") else d.items()`)
        if (
            name in PY2_BUILTINS
            and prev not in (".", "def", "class")
            and name not in defined
            and not guarded(tok.start[0])
        ):
            return True
        line = tok.line.lstrip()
        if (
            name in PY2_MODULES
            and name not in defined
            and not guarded(tok.start[0])
            and not after_try(tok.start[0])
            and (
                prev == "from"
                or (prev in ("import", ",") and line.startswith("import "))
                or (name in ("izip", "imap", "ifilter") and line.startswith("from itertools "))
            )
        ):
            return True
    return False


_COMPAT_HEADER = re.compile(
    r"^(try\s*:|except\s*\(?\s*(NameError|ImportError|ModuleNotFoundError)|"
    r"(el)?if\b.*(\bPY[23]\b|version_info|sys\.version\b))"
)
_SHIM_IMPORT = re.compile(
    r"^[ \t]*from[ \t]+(?:six|future|past|builtins)(?:\.[\w.]+)?[ \t]+import[ \t]+"
    r"(\([^)]*\)|[^\n]*)",
    re.MULTILINE,
)


def shim_names(source: str) -> set[str]:
    """Names bound by ``from six.moves import xrange`` and the like (six, future, past, builtins): these
    are compatibility shims of code that already ran on Python 3, not Python 2 evidence."""
    names = set()
    for match in _SHIM_IMPORT.finditer(source):
        for item in match.group(1).strip("()").split(","):
            words = item.split("#")[0].split()
            if words:
                names.add(words[-1])
    return names


@functools.cache
def _tool(print_function: bool):
    logging.getLogger("RefactoringTool").setLevel(logging.ERROR)
    logging.disable(logging.INFO)  # fissix logs its one-time grammar cache build on the root logger
    try:
        from fissix import refactor

        return refactor.RefactoringTool(
            [f"fissix.fixes.fix_{name}" for name in FIXERS], options={"print_function": print_function}
        )
    finally:
        logging.disable(logging.NOTSET)


def convert(source: str, path: str, python3_syntax: bool) -> str:
    """Run the 2to3 fixers on one file; ``python3_syntax`` keeps ``print(...)`` as the function."""
    tool = _tool(python3_syntax)
    text = source if source.endswith("\n") else source + "\n"
    try:
        tree = tool.refactor_string(text, path)
    except Exception as exc:  # fissix raises its own ParseError and tokenizer errors
        context = getattr(exc, "context", None)
        if context and len(context) == 2 and isinstance(context[1], tuple):
            line, column = context[1]
            where = f"line {line}, column {column + 1}: unexpected {getattr(exc, 'value', '')!r}"
        else:
            where = str(exc)
        raise MigrationError(f"{path}: not valid Python 3, and not Python 2 either ({where})") from exc
    out = str(tree)
    return out if source.endswith("\n") else out[:-1]


_WRAPPED = re.compile(r"\blist\(\s*(?:(zip|map|filter)\(|[\w.\[\]'\"]+\.(keys|values|items)\(\)\))")


def fixer_wrappings(source: str, converted: str, path: str) -> list[Finding]:
    """Report the ``list(...)`` the 2to3 fixers put around ``zip``/``map``/``filter``/dict views, by line
    (the fixers keep line numbers; lines they joined or split are matched by difflib)."""
    old, new = source.splitlines(), converted.splitlines()
    findings = []
    matcher = difflib.SequenceMatcher(a=old, b=new, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        for j in range(j1, j2):
            i = i1 + (j - j1) if i2 - i1 == j2 - j1 else None
            before = {m.group(0) for m in _WRAPPED.finditer(old[i])} if i is not None else set()
            added = [m.group(1) or m.group(2) for m in _WRAPPED.finditer(new[j]) if m.group(0) not in before]
            for name in dict.fromkeys(added):
                what = f"`{name}(...)`" if name in ("zip", "map", "filter") else f"`dict.{name}()`"
                findings.append(
                    Finding(
                        path,
                        j + 1,
                        "changed",
                        f"{what} wrapped in list(...): a Python 3 "
                        "iterator/view is consumed once (Python 2 returned a list)",
                    )
                )
    return findings


class _PrintParens(cst.CSTTransformer):
    """``print((x))`` -> ``print(x)``; ``print(("a", b))`` -> ``print("a", b)`` (reported: the output changes
    from the tuple's repr to its items separated by spaces, which is what such code meant)."""

    METADATA_DEPENDENCIES = (PositionProvider,)

    def __init__(self, path: str, lines: set[int]):
        super().__init__()
        self.path = path
        self.lines = lines
        self.findings: list[Finding] = []

    def leave_Call(self, original_node: cst.Call, updated_node: cst.Call) -> cst.BaseExpression:
        if self.get_metadata(PositionProvider, original_node).start.line not in self.lines:
            return updated_node  # written so in the source, not by the print fixer
        if not (
            isinstance(updated_node.func, cst.Name)
            and updated_node.func.value == "print"
            and len(updated_node.args) == 1
            and updated_node.args[0].keyword is None
            and not updated_node.args[0].star
        ):
            return updated_node
        value = updated_node.args[0].value
        if not value.lpar:
            return updated_node
        if isinstance(value, cst.Tuple):
            elements = [e for e in value.elements if not isinstance(e, cst.StarredElement)]
            if len(elements) != len(value.elements) or not elements:
                return updated_node
            line = self.get_metadata(PositionProvider, original_node).start.line
            self.findings.append(
                Finding(
                    self.path,
                    line,
                    "changed",
                    "`print (a, b)` printed a tuple in Python 2; it now prints the items separated by spaces",
                )
            )
            args = [
                cst.Arg(value=e.value, comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" ")))
                for e in elements
            ]
            args[-1] = args[-1].with_changes(comma=cst.MaybeSentinel.DEFAULT)
            return updated_node.with_changes(args=args)
        return updated_node.with_changes(
            args=[cst.Arg(value=value.with_changes(lpar=value.lpar[1:], rpar=value.rpar[1:]))]
        )


def converted_lines(source: str, converted: str) -> set[int]:
    """Line numbers of ``converted`` that the fixers changed."""
    matcher = difflib.SequenceMatcher(a=source.splitlines(), b=converted.splitlines(), autojunk=False)
    return {j + 1 for tag, _, _, j1, j2 in matcher.get_opcodes() if tag != "equal" for j in range(j1, j2)}


def fix_print_parens(module: cst.Module, path: str, lines: set[int]) -> tuple[cst.Module, list[Finding]]:
    """Drop the double parentheses the print fixer leaves around ``print (x)`` statements (on ``lines``)."""
    fixer = _PrintParens(path, lines)
    new = MetadataWrapper(module, unsafe_skip_copy=True).visit(fixer)
    return new, fixer.findings


class _FileBuiltin(cst.CSTTransformer):
    """Python 2's ``file(path, mode)`` builtin -> ``open(path, mode)`` (the same object in Python 2), where
    no binding of the name ``file`` (a parameter, an assignment, an import) is in scope."""

    METADATA_DEPENDENCIES = (ScopeProvider,)

    def leave_Call(self, original_node: cst.Call, updated_node: cst.Call) -> cst.BaseExpression:
        func = original_node.func
        if not (isinstance(func, cst.Name) and func.value == "file"):
            return updated_node
        scope = self.get_metadata(ScopeProvider, func, None)
        if scope is None or any(not isinstance(a, BuiltinAssignment) for a in scope["file"]):
            return updated_node
        return updated_node.with_changes(func=cst.Name("open"))


def fix_file_builtin(module: cst.Module) -> cst.Module:
    """Rewrite calls of the ``file`` builtin to ``open``."""
    if not re.search(r"\bfile\s*\(", module.code):
        return module
    return MetadataWrapper(module, unsafe_skip_copy=True).visit(_FileBuiltin())


class _TuplePrints(cst.CSTVisitor):
    METADATA_DEPENDENCIES = (PositionProvider,)

    def __init__(self, path: str):
        super().__init__()
        self.path = path
        self.findings: list[Finding] = []

    def visit_Call(self, node: cst.Call) -> None:
        if isinstance(node.func, cst.Name) and node.func.value == "print" and len(node.args) > 1:
            if all(a.keyword is None and not a.star for a in node.args):
                line = self.get_metadata(PositionProvider, node).start.line
                self.findings.append(
                    Finding(
                        self.path,
                        line,
                        "review",
                        "`print (a, b)` printed a tuple in this "
                        "Python 2 file (no print_function import); it now prints the items",
                    )
                )


def report_tuple_prints(module: cst.Module, path: str) -> list[Finding]:
    """In a Python 2 file that parses as Python 3 and lacks ``from __future__ import print_function``,
    ``print (a, b)`` was a print statement of a tuple: its output changes (reported, left as it is)."""
    if re.search(r"^from __future__ import [^\n]*\bprint_function\b", module.code, re.MULTILINE):
        return []
    visitor = _TuplePrints(path)
    MetadataWrapper(module, unsafe_skip_copy=True).visit(visitor)
    return visitor.findings
