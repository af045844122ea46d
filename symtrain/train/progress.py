"""The progress bar (tqdm): epoch, step, running loss, rows/s, share of time waiting for data, RSS."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from symtrain.train.callbacks import Callback

if TYPE_CHECKING:
    from symtrain.train.contracts import TrainerLike
    from symtrain.train.history import History


def rss_anon_mib() -> float | None:
    """This process's anonymous resident memory (``RssAnon`` of /proc/self/status) in MiB; None elsewhere."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class ProgressBar(Callback):
    """A tqdm bar over all steps of the run; the postfix is refreshed at most every ``interval`` seconds.

    ``loss``: running mean (exponential, factor ``smoothing``) of the step output named ``key``;
    ``rows/s``: rows trained per second since the end of the first step (which includes the compile);
    ``wait``: share of that time the trainer waited for the loader; ``rss``: anonymous RSS in MiB.
    """

    def __init__(self, key: str | None = None, interval: float = 0.5, smoothing: float = 0.98,
                 **tqdm_kwargs: Any):
        self.key = key
        self.interval = interval
        self.smoothing = smoothing
        self.tqdm_kwargs = tqdm_kwargs
        self.bar = None
        self.running: float | None = None

    def on_fit_begin(self, trainer: TrainerLike) -> None:
        from tqdm.auto import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        self._redirect = logging_redirect_tqdm()  # log lines go above the bar instead of through it
        self._redirect.__enter__()
        total = trainer.epochs * trainer.steps_per_epoch
        self.bar = tqdm(total=total, initial=trainer.global_step, unit="step", dynamic_ncols=True,
                        desc="train", **self.tqdm_kwargs)
        self._t0 = time.perf_counter()
        self._w0 = trainer.stream.wait_seconds
        self._s0 = trainer.global_step
        self._last = 0.0
        self._pending = 0
        self._timing = False  # the rate clock starts after the first step: that one includes the compile

    def on_epoch_begin(self, trainer: TrainerLike, epoch: int) -> None:
        if self.bar is not None:
            self.bar.set_description(f"epoch {epoch + 1}/{trainer.epochs}")

    def on_step_end(self, trainer: TrainerLike, step: int, metrics: Mapping[str, float]) -> None:
        key = self.key or trainer.loss_key
        if key in metrics:
            v = metrics[key]
            a = self.smoothing
            self.running = v if self.running is None else a * self.running + (1 - a) * v
        self._pending += 1
        now = time.perf_counter()
        if not self._timing:  # the first step ran the compile (tens of seconds): not step time
            self._timing = True
            self._t0, self._s0, self._w0 = now, trainer.global_step, trainer.stream.wait_seconds
            if self.bar is not None:  # tqdm's own s/step and ETA restart here too
                self.bar.reset(total=self.bar.total)
                if not self.bar.disable:
                    self.bar.n = self.bar.last_print_n = trainer.global_step
                self._pending = 0
                self.bar.refresh()
        if self.bar is not None and now - self._last >= self.interval:
            self._refresh(trainer, now)

    def _refresh(self, trainer: TrainerLike, now: float) -> None:
        self.bar.update(self._pending)
        self._pending = 0
        self._last = now
        dt = max(now - self._t0, 1e-9)
        batch = getattr(trainer, "global_batch_size", trainer.stream.batch_size)  # all ranks under MPI
        rows = (trainer.global_step - self._s0) * batch
        wait = (trainer.stream.wait_seconds - self._w0) / dt
        post = {}
        if self.running is not None:
            post["loss"] = f"{self.running:.4g}"
        if rows > 0:  # no rate until a step after the first (compiling) one is timed
            post["rows/s"] = f"{rows / dt:,.0f}"
            post["wait"] = f"{wait:.0%}"
        rss = rss_anon_mib()
        if rss is not None:
            post["rss"] = f"{rss:.0f}MiB"
        if trainer.best is not None:
            post["best"] = f"{trainer.best['score']:.4g}"
        self.bar.set_postfix(post, refresh=True)

    def on_validation_end(self, trainer: TrainerLike, metrics: Mapping[str, float]) -> None:
        if self.bar is not None:
            shown = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items())
            self.bar.write(f"epoch {trainer.epoch + 1} step {trainer.global_step}: validation {shown}"
                           + (" (best)" if trainer.improved else ""))

    def on_fit_end(self, trainer: TrainerLike, history: History) -> None:
        if self.bar is not None:
            self._refresh(trainer, time.perf_counter())
            self.bar.close()
            self.bar = None
            self._redirect.__exit__(None, None, None)
