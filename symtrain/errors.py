"""The symtrain error types: one family, so callers can catch ``SymtrainError`` and get a clear message."""

from __future__ import annotations

from pathlib import Path


class SymtrainError(Exception):
    """Base of every error symtrain raises on purpose."""


class ConfigError(SymtrainError, ValueError):
    """A bad argument or setting: the message names the argument and what is wrong with it."""


class DatasetError(SymtrainError):
    """A dataset directory or field file is missing, malformed, truncated or does not match its manifest."""

    def __init__(self, path: str | Path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class RunDirError(ConfigError):
    """A run directory cannot be used: in use by another run, holds files symtrain did not write, not
    writable, or a write into it failed (disk full, read-only)."""


class SchemaError(SymtrainError, ValueError):
    """Rows given to a writer (or data given to a stream) do not match the declared fields."""


class StreamError(SymtrainError):
    """The chunk loader failed; ``__cause__`` holds the original exception."""


class CheckpointError(SymtrainError):
    """A checkpoint cannot be written, read, or does not match the run it is resumed into."""


class NonFiniteLossError(SymtrainError, FloatingPointError):
    """The training loss became NaN or infinite."""


class MigrationError(SymtrainError):
    """A source file could not be parsed or rewritten by ``symtrain migrate``."""
