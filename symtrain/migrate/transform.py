"""The libcst rewriter: Theano/Aesara (and six) names, imports and call signatures -> PyTensor/symtrain.

Two passes over one parsed module. ``_Analysis`` reads the imports (which local name means which dotted
path before and after the rewrite) and marks the nodes that need context to rewrite (``open`` calls whose
file is pickled, ``if W:`` tests on symbolic defaults, functions with defaulted inputs). ``_Rewriter`` then
rewrites imports, every loaded name chain that resolves to an old API, call signatures, removed config
flags and THEANO_FLAGS strings, and records what it could not translate. Comments and layout are kept
(libcst is a concrete syntax tree).
"""

from __future__ import annotations

import ast

import libcst as cst
import libcst.matchers as m
from libcst.metadata import (
    BuiltinScope,
    ExpressionContext,
    ExpressionContextProvider,
    GlobalScope,
    MetadataWrapper,
    ParentNodeProvider,
    PositionProvider,
    ScopeProvider,
)

from symtrain.migrate import rules
from symtrain.migrate.pickles import PickleFiles
from symtrain.migrate.report import Finding

_EQUIVALENT = {
    "symtrain.nnet.sigmoid": "pytensor.tensor.sigmoid",
    "symtrain.nnet.softplus": "pytensor.tensor.softplus",
}


def dotted_name(node: cst.BaseExpression) -> str | None:
    """``a.b.c`` for a pure Name/Attribute chain, else None."""
    if isinstance(node, cst.Name):
        return node.value
    if isinstance(node, cst.Attribute):
        base = dotted_name(node.value)
        return None if base is None else f"{base}.{node.attr.value}"
    return None


def bound_name(alias: cst.ImportAlias, default: str) -> str:
    """The name an import binds: its ``as`` name, else ``default`` (the imported name, or its root)."""
    if alias.asname and isinstance(alias.asname.name, cst.Name):
        return alias.asname.name.value
    return default


def _module_dotted(node: cst.BaseExpression) -> str:
    return cst.Module(body=[]).code_for_node(node).replace(" ", "")


def _string_value(node: cst.BaseExpression) -> str | None:
    if isinstance(node, cst.SimpleString):
        try:
            value = ast.literal_eval(node.value)
        except (ValueError, SyntaxError):
            return None
        return value if isinstance(value, str) else None
    return None


def _requote(node: cst.SimpleString, text: str) -> cst.SimpleString:
    """The same string literal (prefix and quotes kept) holding ``text``."""
    prefix = node.value[: len(node.value) - len(node.value.lstrip("rRuUbBfF"))]
    quote = node.value[len(prefix)]
    triple = node.value[len(prefix) : len(prefix) + 3] == quote * 3
    q = quote * 3 if triple else quote
    if quote in text or "\\" in text or "\n" in text:
        return node.with_changes(value=repr(text))
    return node.with_changes(value=f"{prefix}{q}{text}{q}")


def clean_flags(flags: str) -> tuple[str, list[str], list[str]]:
    """THEANO_FLAGS -> PYTENSOR_FLAGS value: drop the flags PyTensor does not have (``device=gpu``,
    ``lib.cnmem=...``) and respell dotted keys (``scan.allow_gc`` -> ``scan__allow_gc``: PyTensor silently
    ignores dotted keys). Returns the new value, the dropped entries and the respelled keys."""
    kept, dropped, respelled = [], [], []
    for entry in flags.split(","):
        key, eq, value = entry.partition("=")
        name = key.strip()
        if not eq or not name:
            kept.append(entry)
            continue
        new_name = name.replace(".", "__")
        if new_name not in rules.PYTENSOR_CONFIG:
            dropped.append(entry.strip())
        elif new_name != name:
            respelled.append(name)
            kept.append(key.replace(name, new_name) + eq + value)
        else:
            kept.append(entry)
    return ",".join(kept), dropped, respelled


class Imports:
    """Local name -> dotted path, before (``old``) and after (``new``) the rewrite, plus imported modules."""

    def __init__(self) -> None:
        self.old: dict[str, str] = {}
        self.new: dict[str, str] = {}
        self.modules: set[str] = set()


def _plan_import(node: cst.Import | cst.ImportFrom, imports: Imports, untranslated: list[tuple[str, str]]):
    """Return the replacement statements for one import (None: unchanged) and update the bindings."""
    if isinstance(node, cst.Import):
        out: list[cst.BaseSmallStatement] = []
        changed = False
        for alias in node.names:
            dotted = _module_dotted(alias.name)
            asname = alias.asname.name.value if alias.asname else None
            local = asname or dotted.split(".")[0]
            imports.old[local] = dotted if asname else local
            target, why = rules.lookup(dotted) if rules.is_legacy(dotted) else (None, None)
            if why is not None:
                untranslated.append((dotted, why))
            if target is None:
                imports.new[local] = imports.old[local]
                imports.modules.add(dotted)
                if asname == dotted:  # fissix's `import cPickle as pickle` -> `import pickle as pickle`
                    alias, changed = alias.with_changes(asname=None), True
                out.append(cst.Import(names=[alias.with_changes(comma=cst.MaybeSentinel.DEFAULT)]))
                continue
            changed = True
            module, _, attr = target.partition(":")
            if asname:
                imports.new[asname] = rules.join(target)
                imports.modules.add(rules.join(target))
                out.append(
                    cst.Import(
                        names=[
                            cst.ImportAlias(
                                name=cst.parse_expression(rules.join(target)),
                                asname=_as(asname if asname != rules.join(target) else None),
                            )
                        ]
                    )
                )
            else:
                module = rules.IMPORT_INSTEAD.get(module, module)
                imports.new[module.split(".")[0]] = module.split(".")[0]
                imports.modules.add(module)
                out.append(cst.Import(names=[cst.ImportAlias(name=cst.parse_expression(module))]))
        return out if changed else None
    if node.relative or node.module is None:
        return None
    module = _module_dotted(node.module)
    if not rules.is_legacy(module):
        if not isinstance(node.names, cst.ImportStar):
            for alias in node.names:
                local = bound_name(alias, alias.name.value)
                imports.old[local] = imports.new[local] = f"{module}.{alias.name.value}"
        return None
    if isinstance(node.names, cst.ImportStar):
        target, why = rules.lookup(module)
        if why is not None or target is None:
            untranslated.append((module, why or "unknown module"))
            return None
        return [cst.ImportFrom(module=cst.parse_expression(rules.join(target)), names=cst.ImportStar())]
    groups: dict[str, list[tuple[str, str | None]]] = {}
    kept: list[cst.ImportAlias] = []
    extra: list[cst.BaseSmallStatement] = []
    for alias in node.names:
        name = _module_dotted(alias.name)
        local = bound_name(alias, name)
        full = f"{module}.{name}"
        imports.old[local] = full
        target, why = rules.lookup(full)
        if target is None:
            if why is not None:
                untranslated.append((full, why))
            imports.new[local] = full
            kept.append(alias.with_changes(comma=cst.MaybeSentinel.DEFAULT))
            continue
        if ":" not in target and (target in rules.IMPORT_INSTEAD or "." not in target):
            # a top-level module (six.moves.cPickle -> pickle): a plain import under the old local name
            # (references are renamed: `cPickle.load` -> `pickle.load`, so no Python 2 name is left)
            module_name = rules.IMPORT_INSTEAD.get(target, target)
            root = target.split(".")[0]
            imports.new[root] = root
            imports.modules.add(module_name)
            extra.append(cst.Import(names=[cst.ImportAlias(name=cst.parse_expression(module_name))]))
            continue
        if ":" in target:
            new_module, _, attr = target.partition(":")
            if "." in attr:
                head, _, attr = attr.rpartition(".")
                new_module = f"{new_module}.{head}"
        else:
            new_module, _, attr = target.rpartition(".")
        imports.new[local] = f"{new_module}.{attr}"
        if new_module == "builtins":
            continue  # references are renamed to the builtin itself
        groups.setdefault(new_module, []).append((attr, local))
    out = []
    if kept:
        out.append(cst.ImportFrom(module=node.module, names=kept))
    out.extend(extra)
    for new_module, names in groups.items():
        out.append(_import_from(new_module, names))
    return out


def _as(name: str | None) -> cst.AsName | None:
    return cst.AsName(name=cst.Name(name)) if name else None


def _import_from(module: str, names: list[tuple[str, str | None]]) -> cst.ImportFrom:
    aliases = [
        cst.ImportAlias(name=cst.Name(attr), asname=_as(local if local != attr else None))
        for attr, local in names
    ]
    return cst.ImportFrom(module=cst.parse_expression(module), names=aliases)


class _Analysis(cst.CSTVisitor):
    """First pass: bindings, defaulted inputs, pickle file handles, and ``if W:`` tests to rewrite."""

    METADATA_DEPENDENCIES = (ParentNodeProvider,)

    def __init__(self) -> None:
        self.imports = Imports()
        self.untranslated_imports: dict[cst.CSTNode, list[tuple[str, str]]] = {}
        self.import_plans: dict[cst.CSTNode, list | None] = {}
        self.uses_defaults = False
        self.none_params: list[set[str]] = []
        self.pending_ifs: list[tuple[cst.If, str]] = []
        self.api_era: tuple[str | None, int, str] = (None, 0, "")

    def visit_Import(self, node: cst.Import) -> None:
        found: list[tuple[str, str]] = []
        self.import_plans[node] = _plan_import(node, self.imports, found)
        self.untranslated_imports[node] = found

    def visit_ImportFrom(self, node: cst.ImportFrom) -> None:
        found: list[tuple[str, str]] = []
        self.import_plans[node] = _plan_import(node, self.imports, found)
        self.untranslated_imports[node] = found

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        names = {
            p.name.value
            for p in (*node.params.params, *node.params.kwonly_params)
            if p.default is not None and m.matches(p.default, m.Name("None"))
        }
        self.none_params.append(names)

    def leave_FunctionDef(self, original_node: cst.FunctionDef) -> None:
        self.none_params.pop()

    def visit_If(self, node: cst.If) -> None:
        if not self.none_params:
            return
        test = node.test
        if isinstance(test, cst.UnaryOperation) and isinstance(test.operator, cst.Not):
            test = test.expression
        if isinstance(test, cst.Name) and test.value in self.none_params[-1]:
            self.pending_ifs.append((node, test.value))


class _Rewriter(cst.CSTTransformer):
    """Second pass: the rewrite itself (see the module docstring)."""

    METADATA_DEPENDENCIES = (ParentNodeProvider, ExpressionContextProvider, PositionProvider, ScopeProvider)

    def __init__(self, analysis: _Analysis, path: str, python2: bool):
        super().__init__()
        self.a = analysis
        self.imports = analysis.imports
        self.path = path
        self.python2 = python2
        self.findings: list[Finding] = []
        self.needed_imports: list[str] = []
        self.binary_open: dict[cst.Call, str] = {}
        self.if_none: set[cst.If] = set()
        self.missing: dict[tuple[int, str], list[str]] = {}
        self.symbolic_names: set[str] = set()
        # Python 2 sources and Theano scripts may read pickles Python 2 wrote (latin1, binary modes);
        # Aesara-era and other Python 3 code is left alone there
        self.theano_file = any(p.split(".")[0] == "theano" for p in analysis.imports.old.values())
        self.old_pickles = python2 or any(
            path.split(".")[0] == "theano" for path in analysis.imports.old.values()
        )

    # ---- helpers -------------------------------------------------------------------------------
    def line(self, node: cst.CSTNode) -> int:
        try:
            return self.get_metadata(PositionProvider, node).start.line
        except KeyError:
            return 0

    def report(self, node: cst.CSTNode, kind: str, message: str) -> None:
        self.findings.append(Finding(self.path, self.line(node), kind, message))

    def report_missing(self, node: cst.CSTNode, name: str, why: str) -> None:
        """Untranslatable names: one finding per line and reason, naming each of them."""
        names = self.missing.setdefault((self.line(node), why), [])
        if name not in names:
            names.append(name)

    def flush_missing(self) -> None:
        for (line, why), names in self.missing.items():
            listed = ", ".join(f"`{n}`" for n in names)
            self.findings.append(Finding(self.path, line, "untranslated", f"{listed}: {why}"))
        self.missing.clear()

    def old_name(self, node: cst.BaseExpression) -> str | None:
        """The dotted name a chain meant under the original imports, if it is a legacy name."""
        dotted = dotted_name(node)
        if dotted is None:
            return None
        root, _, rest = dotted.partition(".")
        base = self.imports.old.get(root)
        if base is None:
            return None
        full = f"{base}.{rest}" if rest else base
        return full if rules.is_legacy(full) else None

    def new_name(self, node: cst.BaseExpression) -> str | None:
        """The dotted name a chain means under the rewritten imports (non-legacy modules included)."""
        dotted = dotted_name(node)
        if dotted is None:
            return None
        root, _, rest = dotted.partition(".")
        base = self.imports.new.get(root, root)
        return f"{base}.{rest}" if rest else base

    def root_hint(self, node: cst.BaseExpression) -> str | None:
        """The local name that took over the chain's root: ``theano`` -> ``pytensor``, ``T`` -> ``T``."""
        dotted = dotted_name(node)
        if dotted is None:
            return None
        root = dotted.split(".")[0]
        if root in self.imports.new:
            return root
        old = self.imports.old.get(root)
        target = rules.lookup(old)[0] if old and rules.is_legacy(old) else None
        return rules.join(target).split(".")[0] if target else None

    def express(self, target: str, hint: str | None = None) -> str:
        """Source text naming ``target`` with the rewritten imports, adding an import when needed.

        ``hint``: a local name to use when it reaches the target (keeps ``theano.x`` -> ``pytensor.x``
        rather than jumping to another binding that also reaches it)."""
        module, _, attr = target.partition(":")
        full = rules.join(target)
        if module == "builtins":
            return attr
        hint_path = self.imports.new.get(hint) if hint else None
        if (
            hint_path
            and (full == hint_path or full.startswith(hint_path + "."))
            and (module.startswith("pytensor") or hint_path.startswith(module))
        ):
            return hint + full[len(hint_path) :]
        best = None
        for local, path in self.imports.new.items():
            if full != path and not full.startswith(path + "."):
                continue
            reachable = (
                path == module
                or path.startswith(module + ".")
                or module.startswith("pytensor")
                or module in self.imports.modules
                or any(mod.startswith(module + ".") for mod in self.imports.modules)
            )
            # prefer the longest path, then a local name that says what it is (nnet, not downsample)
            key = (len(path), local == path.rsplit(".", 1)[-1])
            if reachable and (best is None or key > best[2]):
                best = (local, path, key)
        if best is not None and not best[2][1] and module.startswith("symtrain"):
            best = None
        if best is not None:
            return best[0] + full[len(best[1]) :]
        module = rules.IMPORT_INSTEAD.get(module, module)
        if module not in self.needed_imports:
            self.needed_imports.append(module)
        root = module.split(".")[0]
        self.imports.new.setdefault(root, root)
        self.imports.modules.add(module)
        return full

    def map_name(self, old: str) -> tuple[str | None, str | None]:
        norm = rules.normalize(old)
        if self.a.uses_defaults:
            if norm in rules.FUNCTION_NAMES:
                return f"{rules.RUNTIME}:function", None
            if norm in rules.DEFAULTED_INPUTS:
                return f"{rules.RUNTIME}:{norm.rsplit('.', 1)[1]}", None
        return rules.lookup(old)

    def is_load_chain(self, node: cst.BaseExpression) -> bool:
        parent = self.get_metadata(ParentNodeProvider, node, None)
        if isinstance(parent, cst.Attribute) and parent.value is node:
            return False
        if isinstance(parent, cst.Attribute) and parent.attr is node:
            return False
        ctx = self.get_metadata(ExpressionContextProvider, node, None)
        # attribute stores (theano.config.floatX = ...) are rewritten too; bare name stores are rebinds
        if ctx is not ExpressionContext.LOAD and not (
            ctx is ExpressionContext.STORE and isinstance(node, cst.Attribute)
        ):
            return False
        while isinstance(parent, cst.Attribute | cst.ImportAlias | cst.ImportFrom | cst.Import):
            if not isinstance(parent, cst.Attribute):
                return False
            parent = self.get_metadata(ParentNodeProvider, parent, None)
        return True

    # ---- name chains ---------------------------------------------------------------------------
    def rebound_locally(self, node: cst.BaseExpression) -> bool:
        """Whether the chain's root name is bound in a function scope (a parameter, a local variable): then
        it is not the module's import of that name, and the chain is left alone."""
        root = node
        while isinstance(root, cst.Attribute):
            root = root.value
        if not isinstance(root, cst.Name):
            return False
        scope = self.get_metadata(ScopeProvider, root, None)
        while scope is not None and not isinstance(scope, GlobalScope | BuiltinScope):
            if root.value in scope.assignments:
                # a function-level `import theano.tensor as T` is still the import
                return not all(
                    isinstance(getattr(a, "node", None), cst.Import | cst.ImportFrom)
                    for a in scope.assignments[root.value]
                )
            scope = scope.parent
        return False

    def _chain(self, original: cst.BaseExpression, updated: cst.BaseExpression) -> cst.BaseExpression:
        if not self.is_load_chain(original) or self.rebound_locally(original):
            return updated
        old = self.old_name(original)
        if old is None:
            return updated
        if old in rules.SIX_VALUES:
            return cst.parse_expression(rules.SIX_VALUES[old])
        norm = rules.normalize(old)
        if norm.startswith("theano.config.") and norm.split(".")[2] not in rules.CONFIG_METHODS:
            parts = norm.split(".")[2:]
            found = rules.config_key(parts)
            if found is None:
                if self.get_metadata(ExpressionContextProvider, original, None) is ExpressionContext.STORE:
                    return updated  # the whole assignment is deleted (and reported) by its statement
                if parts[0] in rules.CONFIG_READ_VALUES:
                    value = rules.CONFIG_READ_VALUES[parts[0]]
                    self.report(
                        original,
                        "review",
                        f"`{'.'.join(old.split('.')[:3])}` no longer exists "
                        f"(no GPU backend): read as {value}",
                    )
                    text = (f"({value})" if parts[1:] else value) + "".join(f".{r}" for r in parts[1:])
                    return cst.parse_expression(text)
                self.report(original, "untranslated", f"`{old}` no longer exists in PyTensor's config")
            elif len(parts) - len(found[1]) > 1:  # theano.config.scan.allow_gc -> config.scan__allow_gc
                key, rest = found
                text = (
                    self.express("pytensor:config", self.root_hint(original))
                    + "."
                    + key
                    + "".join(f".{r}" for r in rest)
                )
                return cst.parse_expression(text)
        if old in rules.DEPRECATED:
            self.report(original, "review", rules.DEPRECATED[old])
        target, why = self.map_name(old)
        if why is not None:
            self.report_missing(original, dotted_name(original), why)
            return updated
        if target is None:
            return updated
        full = rules.join(target)
        dotted = dotted_name(original)
        if target.startswith("builtins:"):
            return updated if dotted == target[9:] else cst.Name(target[9:])
        root, _, rest = dotted.partition(".")
        if root in self.imports.new:
            as_is = self.imports.new[root] + (f".{rest}" if rest else "")
            if as_is == full or _EQUIVALENT.get(as_is) == full:
                return updated
        return cst.parse_expression(self.express(target, self.root_hint(original))).with_changes(
            lpar=getattr(updated, "lpar", ()), rpar=getattr(updated, "rpar", ())
        )

    def leave_Name(self, original_node: cst.Name, updated_node: cst.Name) -> cst.BaseExpression:
        return self._chain(original_node, updated_node)

    def leave_Attribute(
        self, original_node: cst.Attribute, updated_node: cst.Attribute
    ) -> cst.BaseExpression:
        return self._chain(original_node, updated_node)

    # ---- calls ---------------------------------------------------------------------------------
    def leave_Call(self, original_node: cst.Call, updated_node: cst.Call) -> cst.BaseExpression:
        old = self.old_name(original_node.func)
        call = updated_node
        norm = rules.normalize(old) if old else None
        if old in rules.SIX_DICT_METHODS and call.args:
            obj = call.args[0].value
            if not isinstance(obj, cst.Name | cst.Attribute | cst.Call | cst.Subscript):
                obj = obj.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])
            return cst.Call(func=cst.Attribute(value=obj, attr=cst.Name(rules.SIX_DICT_METHODS[old])))
        names = rules.POSITIONAL_NAMES.get(norm or "")
        if names and not any(a.star for a in call.args):
            call = call.with_changes(
                args=[
                    a.with_changes(
                        keyword=cst.Name(names[i]),
                        equal=cst.AssignEqual(
                            whitespace_before=cst.SimpleWhitespace(""),
                            whitespace_after=cst.SimpleWhitespace(""),
                        ),
                    )
                    if a.keyword is None and 2 <= i < len(names)
                    else a
                    for i, a in enumerate(call.args)
                ]
            )
        keywords = {a.keyword.value for a in call.args if a.keyword is not None}
        positional = sum(1 for a in call.args if a.keyword is None and not a.star)
        if norm in rules.AMBIGUOUS_POSITIONAL and positional >= rules.AMBIGUOUS_POSITIONAL[norm][0]:
            self.report(original_node, "review", rules.AMBIGUOUS_POSITIONAL[norm][1])
        if (
            norm in ("theano.scan", "theano.scan_module.scan", "theano.scan.scan")
            and "return_updates" not in keywords
        ):
            self.report(
                original_node,
                "review",
                "scan returns (outputs, updates) with a DeprecationWarning in "
                "PyTensor 3; pass its updates on to function (random updates inside scan apply only "
                "then) and plan for return_updates=False",
            )
        if norm == "theano.tensor.nnet.softmax" and "axis" in keywords:
            call = call.with_changes(
                func=cst.parse_expression(self.express("pytensor.tensor.special:softmax"))
            )
        renames = rules.KWARG_RENAMES.get(norm or "", {})
        if isinstance(original_node.func, cst.Attribute) and original_node.func.attr.value == "flatten":
            renames = {"outdim": "ndim"}
        if renames and keywords & set(renames):
            call = call.with_changes(
                args=[
                    a.with_changes(keyword=cst.Name(renames[a.keyword.value]))
                    if a.keyword is not None and a.keyword.value in renames
                    else a
                    for a in call.args
                ]
            )
        adds = rules.ADD_KWARGS.get(norm or "", {})
        if adds and "round" in (norm or "") and not old.startswith("theano"):
            adds = {}
        if adds and not any(a.star for a in call.args):
            if "mode" in adds and (positional >= 2 or "mode" in keywords):
                adds = {}
            elif "mode" in adds:
                adds = self._round_mode(original_node, adds)
            new_args = [(k, v) for k, v in adds.items() if k not in keywords]
            if new_args:
                call = _add_kwargs(call, new_args)
        if (
            isinstance(original_node.func, cst.Attribute)
            and original_node.func.attr.value == "round"
            and not call.args
            and dotted_name(original_node.func.value) in self.symbolic_names
            and self.theano_file
        ):
            # `x.round()` on a variable: the method had Theano 0.7's default mode too
            adds = self._round_mode(original_node, {"mode": "'half_away_from_zero'"})
            if adds:
                call = _add_kwargs(call, list(adds.items()))
        if (
            norm in rules.MRG_NAMES
            and "seed" not in keywords
            and not positional
            and not any(a.star for a in call.args)
        ):
            call = _add_kwargs(call, [("seed", str(rules.MRG_DEFAULT_SEED))])
            self.report(
                original_node,
                "changed",
                f"unseeded MRG_RandomStreams() gets Theano's default seed "
                f"{rules.MRG_DEFAULT_SEED} (legacy runs were identical run to run)",
            )
        elif norm in rules.MRG_NAMES:
            call = self._none_seed(original_node, call)
        new = self.new_name(original_node.func)
        if (
            self.old_pickles
            and new in rules.PICKLE_LOADS
            and "encoding" not in keywords
            and not any(a.star for a in call.args)
        ):
            call = _add_kwargs(call, [("encoding", "'latin1'")])
            self.report(original_node, "changed", f"`{new}` reads with encoding='latin1' (Python 2 pickles)")
        if original_node in self.binary_open:
            before = call
            call = _binary_mode(call, self.binary_open[original_node])
            if not call.deep_equals(before):
                self.report(original_node, "changed", "`open()` in a binary mode: its file is pickled")
            elif _open_mode(call) is False:
                self.report(
                    original_node,
                    "review",
                    "`open()` left in its mode: its file is pickled, but the mode is not a literal; "
                    "pickles need a binary mode ('rb'/'wb')",
                )
        elif dotted_name(original_node.func) in ("open", "io.open") and "U" in (_open_mode(call) or ""):
            call = _strip_universal(call)
        if new in ("os.environ.setdefault", "os.putenv") and len(call.args) >= 2:
            key = _string_value(call.args[0].value)
            if key in rules.FLAGS_VARIABLES.values():
                call = call.with_changes(
                    args=[
                        call.args[0],
                        call.args[1].with_changes(
                            value=self._clean_flag_string(original_node, call.args[1].value)
                        ),
                        *call.args[2:],
                    ]
                )
        return call

    def _none_seed(self, original_node: cst.Call, call: cst.Call) -> cst.Call:
        """``MRG_RandomStreams(seed=None)`` / ``(None)``: Theano refused None; use its default seed."""
        args = list(call.args)
        for k, a in enumerate(args):
            is_seed = (a.keyword is None and k == 0 and not a.star) or (
                a.keyword is not None and a.keyword.value == "seed"
            )
            if is_seed and m.matches(a.value, m.Name("None")):
                args[k] = a.with_changes(value=cst.Integer(str(rules.MRG_DEFAULT_SEED)))
                self.report(
                    original_node,
                    "changed",
                    f"MRG_RandomStreams(seed=None) gets Theano's default seed {rules.MRG_DEFAULT_SEED} "
                    "(Theano refused None; a fresh seed each run would not repeat)",
                )
                return call.with_changes(args=args)
        return call

    def _round_mode(self, node: cst.Call, adds: dict[str, str]) -> dict[str, str]:
        """Theano 0.7 rounded halves away from zero, Theano >= 0.9 to even (as PyTensor): date the file."""
        era, line, marker = self.a.api_era
        if era == "0.7":
            self.report(
                node,
                "changed",
                f"`round` keeps Theano 0.7's mode='half_away_from_zero': this file "
                f"uses the 0.7 API (`{marker}`, line {line})",
            )
            return adds
        if era is None:
            self.report(
                node,
                "review",
                "`round` rounds halves to even, as Theano >= 0.9 and PyTensor do; "
                "nothing in this file dates it: if it ran on Theano 0.7, pass mode='half_away_from_zero'",
            )
        return {}

    def _clean_flag_string(self, where: cst.CSTNode, value: cst.BaseExpression) -> cst.BaseExpression:
        text = _string_value(value)
        if text is None:
            return value
        kept, dropped, respelled = clean_flags(text)
        if dropped:
            self.report(where, "removed", f"flags PyTensor no longer has: {', '.join(dropped)}")
        if respelled:
            self.report(
                where,
                "review",
                f"dotted flag names respelled with '__' ({', '.join(respelled)}): "
                "PyTensor silently ignores dotted keys in PYTENSOR_FLAGS",
            )
        return _requote(value, kept) if kept != text else value

    # ---- statements ----------------------------------------------------------------------------
    def leave_SimpleString(self, original_node: cst.SimpleString, updated_node: cst.SimpleString):
        text = _string_value(original_node)
        if text in rules.FLAGS_VARIABLES:
            self.report(
                original_node,
                "changed",
                f"'{text}' -> '{rules.FLAGS_VARIABLES[text]}': PyTensor ignored "
                f"{text}, so these settings now take effect",
            )
            return _requote(updated_node, rules.FLAGS_VARIABLES[text])
        if (
            text is not None
            and text not in rules.FLAGS_VARIABLES
            and ("THEANO_FLAGS" in text or "AESARA_FLAGS" in text)
        ):
            self.report(
                original_node,
                "review",
                "mentions THEANO_FLAGS/AESARA_FLAGS, which PyTensor ignores: "
                "use PYTENSOR_FLAGS (device= and GPU flags no longer exist)",
            )
        if text is not None and (".theanorc" in text or ".aesararc" in text):
            self.report(
                original_node,
                "review",
                "PyTensor reads ~/.pytensorrc, not ~/.theanorc/.aesararc: move the settings there",
            )
        return updated_node

    def leave_Assign(self, original_node: cst.Assign, updated_node: cst.Assign):
        if len(updated_node.targets) == 1:
            target = updated_node.targets[0].target
            if (
                isinstance(target, cst.Subscript)
                and self.new_name(target.value) == "os.environ"
                and len(target.slice) == 1
                and isinstance(target.slice[0].slice, cst.Index)
                and _string_value(target.slice[0].slice.value) in rules.FLAGS_VARIABLES.values()
            ):
                return updated_node.with_changes(
                    value=self._clean_flag_string(original_node, updated_node.value)
                )
        return updated_node

    def _removed_config(self, stmt: cst.BaseSmallStatement) -> str | None:
        targets = []
        if isinstance(stmt, cst.Assign):
            targets = [t.target for t in stmt.targets]
        elif isinstance(stmt, cst.AugAssign | cst.AnnAssign):
            targets = [stmt.target]
        for target in targets:
            old = self.old_name(target)
            norm = rules.normalize(old) if old else ""
            if (
                norm.startswith("theano.config.")
                and norm.split(".")[2] not in rules.CONFIG_METHODS
                and rules.config_key(norm.split(".")[2:]) is None
            ):
                return old
        return None

    def leave_SimpleStatementLine(
        self, original_node: cst.SimpleStatementLine, updated_node: cst.SimpleStatementLine
    ):
        body = []
        changed = False
        for orig, stmt in zip(original_node.body, updated_node.body, strict=True):
            removed = self._removed_config(orig)
            if removed:
                self.report(
                    original_node, "removed", f"assignment to `{removed}` deleted: PyTensor has no such flag"
                )
                changed = True
                continue
            if isinstance(orig, cst.Import | cst.ImportFrom):
                for dotted, why in self.a.untranslated_imports.get(orig, []):
                    self.report_missing(original_node, dotted, why)
                plan = self.a.import_plans.get(orig)
                if plan is not None:
                    changed = True
                    body.extend(plan)
                    continue
            body.append(stmt)
        if not changed:
            return updated_node
        if not body:
            return cst.RemoveFromParent()
        lines = [updated_node.with_changes(body=[body[0]])]
        if len(original_node.body) == 1 or all(isinstance(s, cst.Import | cst.ImportFrom) for s in body):
            lines += [cst.SimpleStatementLine(body=[s]) for s in body[1:]]
            lines[0] = updated_node.with_changes(body=[body[0]])
            if len(lines) == 1:
                return lines[0]
            return cst.FlattenSentinel(lines)
        return updated_node.with_changes(body=body)

    def leave_IndentedBlock(self, original_node: cst.IndentedBlock, updated_node: cst.IndentedBlock):
        if not updated_node.body:
            return updated_node.with_changes(body=[cst.SimpleStatementLine(body=[cst.Pass()])])
        return updated_node

    def leave_If(self, original_node: cst.If, updated_node: cst.If):
        if original_node not in self.if_none:
            test = original_node.test
            if isinstance(test, cst.UnaryOperation) and isinstance(test.operator, cst.Not):
                test = test.expression
            name = dotted_name(test)
            if name is not None and name in self.symbolic_names:
                self.report(
                    original_node,
                    "review",
                    f"`if {name}:` on a symbolic variable raises in PyTensor "
                    f"(TensorVariable cannot be converted to bool): use `{name} is None` / "
                    f"`is not None`",
                )
            return updated_node
        test = updated_node.test
        negated = isinstance(test, cst.UnaryOperation) and isinstance(test.operator, cst.Not)
        name = test.expression if negated else test
        self.report(
            original_node,
            "changed",
            f"truth test of `{dotted_name(name)}` (default None, assigned a "
            "graph value in the block) rewritten to an `is None` test",
        )
        op = cst.Is() if negated else cst.IsNot()
        return updated_node.with_changes(
            test=cst.Comparison(
                left=name, comparisons=[cst.ComparisonTarget(operator=op, comparator=cst.Name("None"))]
            )
        )

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        bases = [self.old_name(b.value) for b in node.bases]
        legacy = [
            b for b in bases if b and rules.normalize(b).split(".")[-1] in ("Op", "COp", "GpuOp", "PureOp")
        ]
        if not legacy:
            return
        methods = {s.name.value for s in node.body.body if isinstance(s, cst.FunctionDef)}
        c_methods = sorted(
            methods
            & {
                "c_code",
                "c_support_code",
                "c_code_cache_version",
                "c_headers",
                "c_support_code_apply",
                "c_init_code",
            }
        )
        if c_methods:
            self.report(
                node,
                "untranslated",
                f"class {node.name.value}({legacy[0]}) has a C implementation "
                f"({', '.join(c_methods)}): PyTensor's default Numba backend does not run it; "
                "subclass pytensor.link.c.op.COp (C backend) or give it a perform()/numba_funcify",
            )
        if "perform" not in methods and "make_thunk" not in methods:
            self.report(
                node,
                "review",
                f"class {node.name.value} has no perform(): it cannot run on the Numba backend",
            )

    def leave_Module(self, original_node: cst.Module, updated_node: cst.Module) -> cst.Module:
        body = list(updated_node.body)
        code = cst.Module(body=body).code
        self.needed_imports = [mod for mod in self.needed_imports if f"{mod}." in code]
        if self.needed_imports:
            new_lines = [
                cst.SimpleStatementLine(
                    body=[cst.Import(names=[cst.ImportAlias(name=cst.parse_expression(mod))])]
                )
                for mod in self.needed_imports
            ]
            index = _import_insert_index(body)
            body[index:index] = new_lines
        if "six" in self.imports.old:
            without = [s for s in body if not _is_import_of(s, "six")]
            if len(without) < len(body) and not _name_loaded(cst.Module(body=without), "six"):
                body = without
        return updated_node.with_changes(body=body)


def _name_loaded(module: cst.Module, name: str) -> bool:
    wrapper = MetadataWrapper(module)
    ctx = wrapper.resolve(ExpressionContextProvider)
    for node, kind in ctx.items():
        if isinstance(node, cst.Name) and node.value == name and kind is ExpressionContext.LOAD:
            return True
    return False


def _is_import_of(stmt: cst.CSTNode, name: str) -> bool:
    return (
        isinstance(stmt, cst.SimpleStatementLine)
        and len(stmt.body) == 1
        and isinstance(stmt.body[0], cst.Import)
        and all(_module_dotted(a.name) == name and a.asname is None for a in stmt.body[0].names)
    )


def _import_insert_index(body: list[cst.CSTNode]) -> int:
    """After the last top-level import of the leading block (after docstring and __future__ imports)."""
    index = 0
    for i, stmt in enumerate(body):
        if isinstance(stmt, cst.SimpleStatementLine):
            first = stmt.body[0]
            if isinstance(first, cst.Import | cst.ImportFrom):
                index = i + 1
                continue
            if (
                i == 0
                and isinstance(first, cst.Expr)
                and isinstance(first.value, cst.SimpleString | cst.ConcatenatedString)
            ):
                index = 1
                continue
        elif isinstance(stmt, cst.Try | cst.If) and index == i:
            continue
        break
    return index


def _add_kwargs(call: cst.Call, pairs: list[tuple[str, str]]) -> cst.Call:
    args = list(call.args)
    if args and args[-1].comma is cst.MaybeSentinel.DEFAULT:
        args[-1] = args[-1].with_changes(comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" ")))
    elif args and isinstance(args[-1].comma, cst.Comma):
        pass
    for i, (key, value) in enumerate(pairs):
        last = i == len(pairs) - 1
        args.append(
            cst.Arg(
                keyword=cst.Name(key),
                value=cst.parse_expression(value),
                equal=cst.AssignEqual(
                    whitespace_before=cst.SimpleWhitespace(""), whitespace_after=cst.SimpleWhitespace("")
                ),
                comma=cst.MaybeSentinel.DEFAULT
                if last
                else cst.Comma(whitespace_after=cst.SimpleWhitespace(" ")),
            )
        )
    return call.with_changes(args=args)


def _open_mode(call: cst.Call) -> str | bool | None:
    """An ``open()`` call's literal mode; None without one, False when it is not a literal."""
    for i, arg in enumerate(call.args):
        if (arg.keyword is None and i == 1) or (arg.keyword is not None and arg.keyword.value == "mode"):
            text = _string_value(arg.value)
            return False if text is None else text
    return None


def _strip_universal(call: cst.Call) -> cst.Call:
    """``open(p, 'rU')`` -> ``open(p, 'r')``: Python 3 text mode always has universal newlines, and
    Python 3.11 refuses 'U'."""
    args = list(call.args)
    for i, arg in enumerate(args):
        if (arg.keyword is None and i == 1) or (arg.keyword is not None and arg.keyword.value == "mode"):
            text = (_string_value(arg.value) or "").replace("U", "")
            args[i] = arg.with_changes(
                value=_requote(arg.value, text if text[:1] in ("r", "w", "a", "x") else "r" + text)
            )
    return call.with_changes(args=args)


def _binary_mode(call: cst.Call, direction: str) -> cst.Call:
    """Give an ``open`` call used for pickling a binary mode ('r' -> 'rb', 'w' -> 'wb', none -> 'rb')."""
    args = list(call.args)
    for i, arg in enumerate(args):
        if (arg.keyword is None and i == 1) or (arg.keyword is not None and arg.keyword.value == "mode"):
            text = _string_value(arg.value)
            if text is not None and "b" not in text:
                mode = text.replace("t", "").replace("U", "")  # 'rU' -> 'rb' ('U' is gone in Python 3.11)
                mode = mode if mode[:1] in ("r", "w", "a", "x") else "r" + mode
                args[i] = arg.with_changes(value=_requote(arg.value, mode + "b"))
            return call.with_changes(args=args)
    if direction == "load" and len([a for a in args if a.keyword is None]) == 1:
        return (
            _add_kwargs(call, [("mode", "'rb'")])
            if any(a.keyword for a in args)
            else call.with_changes(
                args=[
                    args[0].with_changes(comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" "))),
                    cst.Arg(value=cst.SimpleString("'rb'")),
                    *args[1:],
                ]
            )
        )
    return call


def _symbolic_default_ifs(analysis: _Analysis, rewriter: _Rewriter) -> set[cst.If]:
    """``if not W:`` on a None-defaulted parameter whose body builds W with a Theano call."""
    found = set()
    for node, name in analysis.pending_ifs:
        target = m.Name(name) | m.Attribute(value=m.Name("self"), attr=m.Name(name))
        for assign in m.findall(node.body, m.Assign(targets=[m.AssignTarget(target=target)])):
            value = assign.value
            if isinstance(value, cst.Call) and rewriter.old_name(value.func):
                found.add(node)
    return found


def _symbolic_names(module: cst.Module, rewriter: _Rewriter) -> set[str]:
    """Names (``x``, ``self.W``) assigned a Theano/Aesara call (``T.matrix()``, ``theano.shared()``)."""
    names = set()
    for assign in m.findall(module, m.Assign(value=m.Call())):
        old = rewriter.old_name(assign.value.func)
        if old is None or not rules.normalize(old).startswith("theano."):
            continue
        for target in assign.targets:
            name = dotted_name(target.target)
            if name is not None:
                names.add(name)
    return names


def _defaulted_inputs(module: cst.Module, rewriter: _Rewriter) -> bool:
    for call in m.findall(module, m.Call()):
        old = rewriter.old_name(call.func)
        if old is None:
            continue
        keyword = rules.DEFAULTED_INPUTS.get(rules.normalize(old))
        if keyword is None:
            continue
        positional = [a for a in call.args if a.keyword is None]
        if (
            any(a.keyword is not None and a.keyword.value == keyword for a in call.args)
            or (keyword == "default" and len(positional) >= 2)
            or (keyword == "value" and len(positional) >= 3)
        ):
            return True
    return False


def rewrite_module(module: cst.Module, path: str, python2: bool = False) -> tuple[cst.Module, list[Finding]]:
    """Rewrite one parsed module; return the new module and the findings."""
    wrapper = MetadataWrapper(module, unsafe_skip_copy=True)
    analysis = _Analysis()
    wrapper.visit(analysis)
    rewriter = _Rewriter(analysis, path, python2)
    analysis.uses_defaults = _defaulted_inputs(wrapper.module, rewriter)
    if rewriter.old_pickles:
        pickles = PickleFiles(rewriter.new_name)
        wrapper.visit(pickles)
        rewriter.binary_open = pickles.binary
        for line, pickled, name in pickles.others:
            where = ", ".join(map(str, pickled))
            rewriter.findings.append(
                Finding(
                    path,
                    line,
                    "review",
                    f"`open()` left in its mode: `{name}` is "
                    f"pickled at line {where}, but through another binding",
                )
            )
    analysis.api_era = rules.api_era(module.code)
    rewriter.if_none = _symbolic_default_ifs(analysis, rewriter)
    rewriter.symbolic_names = _symbolic_names(wrapper.module, rewriter)
    new = wrapper.visit(rewriter)
    rewriter.flush_missing()
    return new, rewriter.findings
