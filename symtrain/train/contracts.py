"""The stream -> step -> trainer contract as types: what each side may rely on of the other.

A stream (``ChunkStream``) owns the device buffers and the row order; a step (``compile_step``) is compiled
against the stream's symbolic side (``SymbolicStream``) and executed by index; the trainer iterates the
stream's chunks (``StreamLike``) and calls the step (``StepLike``) with each chunk's indices. Callbacks see
the running trainer through ``TrainerLike``. The optional step capabilities (``AccumulatingStep``,
``ScheduledStep``) and the evaluator (``EvaluatorLike``) are checked with ``isinstance``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from symtrain.train.history import History


@runtime_checkable
class SymbolicStream(Protocol):
    """What ``compile_step``/``compile_eval`` build on: the batch index and symbolic minibatch views."""

    @property
    def index(self) -> Any:
        """The symbolic int64 scalar selecting the minibatch inside the installed buffer."""
        ...

    def batch(self, field: str) -> Any:
        """The symbolic minibatch of ``field``."""
        ...

    def givens(self, mapping: Mapping[Any, str]) -> dict:
        """``{var: batch(field)}`` for graphs written against free symbolic inputs."""
        ...

    def batch_valid(self) -> Any:
        """Symbolic int64: the valid rows of the current batch."""
        ...

    def batch_mask(self) -> Any:
        """Symbolic vector: 1 for valid rows, 0 for padding."""
        ...


class ChunkLike(Protocol):
    """One installed buffer fill: the step is called with each of ``indices`` while it is installed."""

    epoch: int
    number: int
    indices: range
    first_step: int
    n_valid: int


class StreamLike(Protocol):
    """What the trainer iterates: the chunks of an epoch (from an in-epoch step) and the resume state."""

    wait_seconds: float

    @property
    def batch_size(self) -> int: ...

    @property
    def chunk_rows(self) -> int: ...

    @property
    def steps_per_epoch(self) -> int: ...

    def epoch(self, e: int, start_step: int = 0) -> Iterator[ChunkLike]:
        """The chunks of epoch ``e`` from in-epoch step ``start_step``; a generator the caller closes."""
        ...

    def state(self) -> dict:
        """What a checkpoint stores to resume this stream exactly (plan, dataset fingerprint)."""
        ...

    def check_state(self, state: Mapping[str, Any]) -> None:
        """CheckpointError naming every difference between a checkpoint's ``state`` and this stream."""
        ...


@runtime_checkable
class StepLike(Protocol):
    """A training step: ``step(i)`` trains on minibatch ``i`` of the installed chunk and returns metrics."""

    def __call__(self, index: int) -> Mapping[str, float]: ...

    def state_variables(self) -> dict[str, Any]:
        """Every shared variable the step updates or reads as state, by unique name (checkpointed)."""
        ...


@runtime_checkable
class AccumulatingStep(Protocol):
    """A step that sums gradients over ``accumulate`` calls; ``flush()`` applies a partial group."""

    accumulate: int

    def flush(self) -> bool: ...


@runtime_checkable
class ScheduledStep(Protocol):
    """A step whose schedules the trainer advances before every call."""

    def advance_schedules(self, step: int, epoch: int) -> None: ...


@runtime_checkable
class EvaluatorLike(Protocol):
    """A validation pass: ``run()`` returns a dict of metrics (``compile_eval``'s Evaluator is one)."""

    def run(self) -> Mapping[str, float]: ...


@runtime_checkable
class BatchEvaluator(Protocol):
    """An evaluator that can be run batch by batch over its stream (``compile_eval``'s Evaluator):
    what a data-parallel validation shards."""

    names: list[str]
    stream: StreamLike

    def batch(self, index: int) -> tuple[Mapping[str, float], int]:
        """Metrics of batch ``index`` of the installed chunk and its number of valid rows."""
        ...


class TrainerLike(Protocol):
    """The running trainer as callbacks see it: cursor, history, best so far, ``request_stop``."""

    step: StepLike
    stream: StreamLike
    epochs: int
    steps_per_epoch: int
    epoch: int
    step_in_epoch: int
    global_step: int
    loss_key: str
    improved: bool
    stop_reason: str
    resumed: bool
    history: History

    @property
    def best(self) -> dict | None: ...

    def cursor(self) -> tuple[int, int]: ...

    def request_stop(self, reason: str, message: str = "") -> None: ...

    def save_checkpoint(self, reason: str) -> Path | None: ...
