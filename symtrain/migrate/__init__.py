"""``symtrain migrate``: rewrite Theano and Aesara sources (Python 2 ones too) to PyTensor and symtrain.

``migrate_source(text, path)`` returns the new text and the findings (what could not be translated or
needs a human look, with line numbers); ``migrate_paths`` does it for files and directories. The runtime
layer the rewritten code calls lives in ``symtrain.migrate.runtime`` and ``symtrain.nnet``.

The names are loaded on first use, so that the ``symtrain`` command line starts without libcst.
"""

from __future__ import annotations

from symtrain.lazy import lazy_exports

_LAZY = {
    "Result": "symtrain.migrate.core",
    "migrate_source": "symtrain.migrate.core",
    "migrate_file": "symtrain.migrate.core",
    "migrate_paths": "symtrain.migrate.core",
    "iter_python_files": "symtrain.migrate.core",
    "read_source": "symtrain.migrate.core",
    "Finding": "symtrain.migrate.report",
    "format_report": "symtrain.migrate.report",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)


__all__ = list(_LAZY)
