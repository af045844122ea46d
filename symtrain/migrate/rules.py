"""The mapping tables of ``symtrain migrate``: old Theano/Aesara dotted names -> PyTensor/symtrain targets.

Targets are written ``"module:attr"`` (an object inside a module) or ``"module"`` (a module). Lookups use
the longest matching prefix of the old dotted name, so ``theano.tensor.nnet.conv.conv2d`` first tries
itself, then ``theano.tensor.nnet.conv``, ... down to ``theano`` (the generic rename). Aesara names are
looked up with ``aesara`` read as ``theano`` first, then with their own table (``AESARA_ONLY``).
"""

from __future__ import annotations

import re

ROOTS = ("theano", "aesara")
NNET = "symtrain.nnet"
RUNTIME = "symtrain.migrate.runtime"

# What symtrain.nnet provides (the contract with the nnet compatibility layer). ``sigmoid`` and
# ``softplus`` there are the very PyTensor objects, so identity comparisons keep holding.
NNET_NAMES = frozenset(
    {
        "sigmoid",
        "softplus",
        "relu",
        "elu",
        "hard_sigmoid",
        "softmax",
        "categorical_crossentropy",
        "binary_crossentropy",
        "conv2d",
        "pool_2d",
        "max_pool_2d",
        "batch_normalization",
        "dropout",
        "round",
        "log_softmax",
        "ultra_fast_sigmoid",
        "batch_normalization_train",
        "batch_normalization_test",
    }
)

# Objects that moved: exact dotted name -> target. Checked before MODULES at every prefix length.
OBJECTS: dict[str, str] = {
    "theano.tensor.nnet.sigmoid": "pytensor.tensor:sigmoid",
    "theano.tensor.nnet.softplus": "pytensor.tensor:softplus",
    "theano.tensor.nnet.scalar_sigmoid": "pytensor.scalar:sigmoid",
    "theano.tensor.nnet.logsoftmax": f"{NNET}:log_softmax",
    "theano.tensor.nnet.conv.conv2d": f"{NNET}:conv2d",
    "theano.tensor.nnet.conv2d": f"{NNET}:conv2d",
    "theano.tensor.nnet.bn.batch_normalization": f"{NNET}:batch_normalization",
    "theano.tensor.signal.downsample.max_pool_2d": f"{NNET}:max_pool_2d",
    "theano.tensor.signal.pool.pool_2d": f"{NNET}:pool_2d",
    "theano.tensor.signal.pool.max_pool_2d": f"{NNET}:max_pool_2d",
    "theano.tensor.xlogx.xlogy0": "pytensor.tensor.special:xlogy",
    "theano.tensor.shared_randomstreams.RandomStreams": f"{RUNTIME}:RandomStreams",
    "theano.sandbox.rng_mrg.MRG_RandomStreams": f"{RUNTIME}:MRG_RandomStreams",
    "theano.sandbox.MRG_RandomStreams": f"{RUNTIME}:MRG_RandomStreams",
    "theano.tensor.randomstreams.RandomStreams": f"{RUNTIME}:RandomStreams",
    "theano.compile.pfunc.pfunc": "pytensor:function",
    "theano.compile.pfunc": "pytensor:function",
    "theano.pfunc": "pytensor:function",
    "theano.Param": f"{RUNTIME}:Param",
    "theano.compile.Param": f"{RUNTIME}:Param",
    "theano.compile.io.Param": f"{RUNTIME}:Param",
    "theano.pp": "pytensor.printing:pp",
    "theano.gradient.consider_constant": "pytensor.gradient:zero_grad",
    "theano.gof.local_optimizer": "pytensor.graph.rewriting.basic:node_rewriter",
    "theano.gof.opt.local_optimizer": "pytensor.graph.rewriting.basic:node_rewriter",
    "theano.gof.COp": "pytensor.link.c.op:COp",
    # pytensor.ifelse and pytensor.scan are the functions (the modules are shadowed by them)
    "theano.ifelse.ifelse": "pytensor:ifelse",
    "theano.scan_module.scan": "pytensor:scan",
    "theano.scan.scan": "pytensor:scan",
    "theano.scan_module.until": "pytensor.scan.utils:until",
    "theano.scan_module.scan_utils.until": "pytensor.scan.utils:until",
    "theano.sandbox.linalg.matrix_inverse": "pytensor.tensor.nlinalg:matrix_inverse",
    "theano.sandbox.linalg.ops.matrix_inverse": "pytensor.tensor.nlinalg:matrix_inverse",
    "theano.sandbox.linalg.det": "pytensor.tensor.nlinalg:det",
    "theano.sandbox.linalg.ops.det": "pytensor.tensor.nlinalg:det",
    "theano.sandbox.linalg.psd": "pytensor.tensor.linalg:psd",
    "theano.compat.OrderedDict": "collections:OrderedDict",
    "theano.compat.python2x.OrderedDict": "collections:OrderedDict",
    "theano.compat.izip": "builtins:zip",
    "theano.compat.imap": "builtins:map",
    "theano.compat.ifilter": "builtins:filter",
    "six.moves.cPickle": "pickle",
    "six.moves.xrange": "builtins:range",
    "six.moves.range": "builtins:range",
    "six.moves.zip": "builtins:zip",
    "six.moves.map": "builtins:map",
    "six.moves.filter": "builtins:filter",
    "six.moves.input": "builtins:input",
    "six.moves.reduce": "functools:reduce",
    "six.moves.urllib": "urllib",
    "six.moves.urllib.request": "urllib.request",
    "six.moves.urllib.parse": "urllib.parse",
    "six.moves.queue": "queue",
    "six.moves.configparser": "configparser",
    "six.moves.builtins": "builtins",
    "six.string_types": "builtins:str",
    "six.text_type": "builtins:str",
    "six.integer_types": "builtins:int",
}

# Target modules whose attributes need a submodule import to be reachable.
IMPORT_INSTEAD = {"urllib": "urllib.request"}

# Modules that moved or were replaced: dotted prefix -> module target.
MODULES: dict[str, str] = {
    "theano.tensor.nnet": NNET,
    "theano.tensor.nnet.nnet": NNET,
    "theano.tensor.nnet.sigm": NNET,
    "theano.tensor.nnet.conv": NNET,
    "theano.tensor.nnet.abstract_conv": NNET,
    "theano.tensor.nnet.bn": NNET,
    "theano.tensor.signal.downsample": NNET,
    "theano.tensor.signal.pool": NNET,
    "theano.tensor.shared_randomstreams": RUNTIME,
    "theano.sandbox.rng_mrg": RUNTIME,
    "theano.gof.graph": "pytensor.graph.basic",
    "theano.gof.opt": "pytensor.graph.rewriting.basic",
    "theano.gof.toolbox": "pytensor.graph.features",
    "theano.gof.fg": "pytensor.graph.fg",
    "theano.gof.op": "pytensor.graph.op",
    "theano.gof.type": "pytensor.graph.type",
    "theano.gof.utils": "pytensor.graph.utils",
    "theano.gof.cc": "pytensor.link.c.basic",
    "theano.gof": "pytensor.graph",
    "theano.tensor.opt": "pytensor.tensor.rewriting.basic",
    "theano.tensor.opt_uncanonicalize": "pytensor.tensor.rewriting.uncanonicalize",
    "theano.tensor.var": "pytensor.tensor.variable",
    "theano.tensor.basic_opt": "pytensor.tensor.rewriting.basic",
    "theano.scan_module": "pytensor.scan",
    "theano.misc.pkl_utils": RUNTIME,
    "theano.sandbox.linalg": "pytensor.tensor.nlinalg",
    "theano.sandbox.linalg.ops": "pytensor.tensor.nlinalg",
    "theano": "pytensor",
    "six.moves.cPickle": "pickle",
}

# Removed with no replacement: dotted prefix -> why, and what to do by hand.
UNTRANSLATABLE: dict[str, str] = {
    "theano.sandbox.cuda": "theano.sandbox.cuda (CUDA kernels, GPU ops, CudaNdarray) has no PyTensor "
    "equivalent: PyTensor has no GPU backend of its own; rewrite as CPU ops or use the "
    "JAX/PyTorch backends",
    "theano.sandbox.gpuarray": "gpuarray (libgpuarray GPU backend) was removed; use the JAX/PyTorch backends",
    "theano.gpuarray": "gpuarray (libgpuarray GPU backend) was removed; use the JAX/PyTorch backends",
    "theano.misc.pycuda_utils": "pycuda integration was removed",
    "theano.sandbox": "theano.sandbox was removed from PyTensor",
    "theano.tensor.nnet.neighbours": "images2neibs/neibs2images were removed: write the patch extraction "
    "with reshapes or pytensor.tensor.signal",
    "theano.tensor.nnet.h_softmax": "h_softmax was removed: write the two-level softmax by hand",
    "theano.tensor.nnet.conv3d2d": "3-d convolution was removed",
    "theano.tensor.nnet.conv3d": "3-d convolution was removed",
    "theano.tensor.nnet.ctc": "CTC (warp-ctc) was removed",
    "theano.tensor.signal.conv": "signal.conv.conv2d (single image) was removed: use "
    "pytensor.tensor.signal.convolve2d",
    "theano.tensor.signal.downsample.DownsampleFactorMax": "the pooling Op classes were removed: use "
    "symtrain.nnet.pool_2d",
    "theano.tensor.signal.pool.Pool": "the pooling Op classes were removed: use symtrain.nnet.pool_2d",
    "theano.compat.python2x": "theano.compat.python2x was removed: use the standard library",
    "theano.tensor.raw_random": "raw_random was removed: use the distributions of pytensor.tensor.random "
    "(or symtrain.migrate.runtime.RandomStreams for the old signatures)",
    "theano.compile.debugmode": "DebugMode was removed: use mode='FAST_COMPILE' and pytensor's "
    "config.compute_test_value alternatives (tag.test_value checks)",
    "theano.compat.six": "theano.compat.six was removed: use the standard library",
}

# Aesara names whose Theano spelling differs or that moved after Aesara (checked with the real prefix).
AESARA_ONLY: dict[str, str] = {
    "aesara.tensor.nnet.sigmoid": "pytensor.tensor:sigmoid",
    "aesara.tensor.var": "pytensor.tensor.variable",
    "aesara.tensor.basic_opt": "pytensor.tensor.rewriting.basic",
    "aesara.tensor.math_opt": "pytensor.tensor.rewriting.math",
    "aesara.graph.opt": "pytensor.graph.rewriting.basic",
    "aesara.graph.optdb": "pytensor.graph.rewriting.db",
    "aesara.graph.opt_utils": "pytensor.graph.rewriting.utils",
    "aesara.graph.toolbox": "pytensor.graph.features",
    "aesara.graph.kanren": "pytensor.graph.rewriting.kanren",
    "aesara.graph.unify": "pytensor.graph.rewriting.unify",
    "aesara": "pytensor",
}

# Call rewrites keyed by the resolved old dotted name: keyword arguments added when absent.
ADD_KWARGS: dict[str, dict[str, str]] = {
    # Theano 0.7 rounded halves away from zero; Theano >= 0.9 and PyTensor round them to even
    # (added only to files that use the 0.7 API, see api_era)
    "theano.tensor.round": {"mode": "'half_away_from_zero'"},
    "theano.tensor.basic.round": {"mode": "'half_away_from_zero'"},
    "theano.tensor.iround": {"mode": "'half_away_from_zero'"},
    "theano.tensor.basic.iround": {"mode": "'half_away_from_zero'"},
}
# Theano's MRG_RandomStreams(seed=12345): unseeded legacy runs were identical run to run.
MRG_DEFAULT_SEED = 12345
MRG_NAMES = frozenset({"theano.sandbox.rng_mrg.MRG_RandomStreams", "theano.sandbox.MRG_RandomStreams"})

# API that dates a file: only in Theano 0.7-era code, or only from Theano 0.8/0.9 on (T.round's default
# changed from half away from zero to half to even in 0.9).
ERA_0_7 = re.compile(
    r"\bsignal\.downsample\b|\bimport downsample\b|\bdownsample\.max_pool_2d\b|"
    r"\bnnet\.conv\.conv2d\b|\bnnet import conv\b|\bconv\.conv2d\(|\bParam\(|\bpfunc\b|"
    r"\bcompat\.python2x\b"
)
ERA_0_9 = re.compile(
    r"\bsignal\.pool\b|\bsignal import pool\b|\bpool_2d\(|\bnnet\.conv2d\(|"
    r"\bnnet import [^\n]*\bconv2d\b|\bIn\(|\bgpuarray\b|\bnnet\.bn\b|\babstract_conv\b|"
    r"\bbatch_normalization\b|\breturn_list\b"
)


def api_era(code: str) -> tuple[str | None, int, str]:
    """("0.7" | "0.9" | None, line, marker): the Theano API generation a file uses (0.9 wins a tie: a file
    that uses the newer API ran on a newer Theano)."""
    for era, pattern in (("0.9", ERA_0_9), ("0.7", ERA_0_7)):
        match = pattern.search(code)
        if match:
            return era, code.count("\n", 0, match.start()) + 1, match.group(0).rstrip("(")
    return None, 0, ""


# Theano 0.7's conv.conv2d(input, filters, filter_shape, image_shape, border_mode, subsample): later
# conv2d put input_shape third, so positional arguments become keywords.
POSITIONAL_NAMES: dict[str, tuple[str, ...]] = {
    "theano.tensor.nnet.conv.conv2d": (
        "input",
        "filters",
        "filter_shape",
        "image_shape",
        "border_mode",
        "subsample",
    ),
}
# Calls whose meaning is ambiguous between Theano versions: reported for review.
AMBIGUOUS_POSITIONAL: dict[str, tuple[int, str]] = {
    "theano.tensor.nnet.conv2d": (
        3,
        "the third positional argument of conv2d was filter_shape in Theano "
        "0.7 and input_shape from 0.8 on (symtrain.nnet reads input_shape): "
        "pass it by keyword",
    ),
}
KWARG_RENAMES: dict[str, dict[str, str]] = {
    "theano.tensor.flatten": {"outdim": "ndim"},
    "theano.tensor.basic.flatten": {"outdim": "ndim"},
}

# Names whose use means a function with defaulted inputs (routed through the runtime's ``function``).
DEFAULTED_INPUTS = {
    "theano.In": "value",
    "theano.compile.In": "value",
    "theano.compile.io.In": "value",
    "theano.Param": "default",
    "theano.compile.Param": "default",
    "theano.compile.io.Param": "default",
}
FUNCTION_NAMES = {
    "theano.function",
    "theano.compile.function",
    "theano.compile.function.function",
    "theano.compile.function_module.function",
}

# Every config flag PyTensor 3.0.7 has (pytensor.config._config_var_dict). A Theano flag outside this set
# no longer exists; dotted spellings (``scan.allow_gc``) must become ``scan__allow_gc``: PYTENSOR_FLAGS
# silently ignores dotted keys, and ``config.scan.allow_gc`` raises AttributeError.
PYTENSOR_CONFIG = frozenset(
    {
        "DebugMode__check_c",
        "DebugMode__check_finite",
        "DebugMode__check_preallocated_output",
        "DebugMode__check_preallocated_output_ndim",
        "DebugMode__check_py",
        "DebugMode__check_strides",
        "DebugMode__patience",
        "DebugMode__warn_input_not_reused",
        "NanGuardMode__action",
        "NanGuardMode__big_is_error",
        "NanGuardMode__inf_is_error",
        "NanGuardMode__nan_is_error",
        "allow_gc",
        "base_compiledir",
        "blas__check_openmp",
        "blas__ldflags",
        "cast_policy",
        "check_input",
        "check_stack_trace",
        "cmodule__age_thresh_use",
        "cmodule__compilation_warning",
        "cmodule__debug",
        "cmodule__preload_cache",
        "cmodule__remove_gxx_opt",
        "cmodule__warn_no_version",
        "compile__timeout",
        "compile__wait",
        "compiledir",
        "compiledir_format",
        "compiler_verbose",
        "cxx",
        "cycle_detection",
        "exception_verbosity",
        "floatX",
        "gcc__cxxflags",
        "gcc_version_str",
        "lib__amdlibm",
        "linker",
        "mode",
        "nocleanup",
        "numba__cache",
        "numba__fastmath",
        "on_opt_error",
        "on_shape_error",
        "on_unused_input",
        "openmp",
        "openmp_elemwise_minsize",
        "optdb__max_use_ratio",
        "optdb__position_cutoff",
        "optimizer",
        "optimizer_excluding",
        "optimizer_including",
        "optimizer_requiring",
        "optimizer_verbose",
        "optimizer_verbose_ignore",
        "print_global_stats",
        "profile",
        "profile_memory",
        "profile_optimizer",
        "profiling__debugprint",
        "profiling__destination",
        "profiling__ignore_first_call",
        "profiling__min_memory_size",
        "profiling__min_peak_memory",
        "profiling__n_apply",
        "profiling__n_ops",
        "profiling__output_line_width",
        "profiling__time_thunks",
        "scan__allow_gc",
        "scan__allow_output_prealloc",
        "tensor__cmp_sloppy",
        "tensor__insert_inplace_optimizer_validate_nb",
        "traceback__compile_limit",
        "traceback__limit",
        "unpickle_function",
        "vm__lazy",
        "warn__ignore_bug_before",
        "warn_float64",
    }
)


def config_key(parts: list[str]) -> tuple[str, list[str]] | None:
    """``['scan', 'allow_gc', 'x']`` -> ``('scan__allow_gc', ['x'])`` if PyTensor has that flag, else None."""
    for n in range(len(parts), 0, -1):
        key = "__".join(parts[:n])
        if key in PYTENSOR_CONFIG:
            return key, parts[n:]
    return None


# Attributes of theano.config that are not flags. Reads of removed flags listed here get a value.
CONFIG_METHODS = frozenset({"change_flags", "add", "config_print"})
CONFIG_READ_VALUES = {"device": "'cpu'", "force_device": "False", "init_gpu_device": "''"}

FLAGS_VARIABLES = {"THEANO_FLAGS": "PYTENSOR_FLAGS", "AESARA_FLAGS": "PYTENSOR_FLAGS"}

PICKLE_LOADS = {"pickle.load", "pickle.loads", "pickle.Unpickler", "_pickle.load", "_pickle.loads"}
PICKLE_FILE_ARG = {"pickle.load": 0, "pickle.dump": 1, "pickle.Unpickler": 0, "pickle.Pickler": 0}

# Names that still work in PyTensor 3.0.7 but warn and will go: reported for review, not rewritten.
DEPRECATED = {
    "aesara.tensor.random.utils.RandomStream": "RandomStream is deprecated in PyTensor 3 (FutureWarning): "
    "the "
    "future-proof form is rng = pt.random.shared_rng(seed), next_rng, x = rng.normal(...), "
    "updates={rng: next_rng}",
    "aesara.tensor.random.RandomStream": "RandomStream is deprecated in PyTensor 3 (FutureWarning): the "
    "future-proof form is rng = pt.random.shared_rng(seed) with explicit updates",
}

SIX_VALUES = {"six.PY2": "False", "six.PY3": "True"}
SIX_DICT_METHODS = {"six.iteritems": "items", "six.itervalues": "values", "six.iterkeys": "keys"}


def normalize(dotted: str) -> str:
    """Read ``aesara.x`` as ``theano.x`` so one table serves both."""
    if dotted == "aesara" or dotted.startswith("aesara."):
        return "theano" + dotted[len("aesara") :]
    return dotted


def is_legacy(dotted: str) -> bool:
    """Whether a dotted name belongs to Theano, Aesara or six (the namespaces this tool rewrites)."""
    root = dotted.split(".", 1)[0]
    return root in ROOTS or root == "six"


def join(target: str) -> str:
    """``'module:attr'`` -> ``'module.attr'``."""
    return target.replace(":", ".")


def lookup(dotted: str) -> tuple[str | None, str | None]:
    """Map an old dotted name to ``(target, why_untranslatable)``; exactly one of the two is None.

    ``target`` is the full new dotted name, written ``module:attr`` when it names an object inside a
    module the tool may need to import (``symtrain.nnet:conv2d``).
    """
    parts = dotted.split(".")
    aesara = parts[0] == "aesara"
    norm = normalize(dotted).split(".")
    for n in range(len(parts), 0, -1):
        rest = parts[n:]
        if aesara:
            key = ".".join(parts[:n])
            if key in AESARA_ONLY:
                return _extend(AESARA_ONLY[key], rest), None
        key = ".".join(norm[:n])
        if key in UNTRANSLATABLE:
            return None, UNTRANSLATABLE[key]
        if key in OBJECTS:
            return _extend(OBJECTS[key], rest), None
        if key in MODULES:
            target = MODULES[key]
            if target == NNET:
                if not rest:
                    return target, None
                if rest[0] not in NNET_NAMES:
                    return None, (
                        f"{'.'.join(parts[: n + 1])} was removed and symtrain.nnet has no "
                        f"replacement: write it with pytensor.tensor ops"
                    )
            if target == RUNTIME and rest and rest[0] not in RUNTIME_NAMES:
                return None, f"{'.'.join(parts[: n + 1])} was removed and has no replacement"
            return _extend(target, rest), None
    return None, None


RUNTIME_NAMES = frozenset({"RandomStreams", "MRG_RandomStreams", "In", "Param", "function", "dump", "load"})


def _extend(target: str, rest: list[str]) -> str:
    if not rest:
        return target
    if ":" in target:
        return target + "." + ".".join(rest)
    return target + ":" + ".".join(rest)
