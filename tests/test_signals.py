"""GracefulInterrupt: the first signal is recorded, the second aborts; previous handlers come back."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from symtrain.train.signals import GracefulInterrupt


def test_first_signal_is_recorded_second_aborts_and_handlers_are_restored():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with GracefulInterrupt() as g:
        os.kill(os.getpid(), signal.SIGTERM)
        assert g.requested == "SIGTERM"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert {s: signal.getsignal(s) for s in before} == before


def test_not_installed_off_the_main_thread():
    seen = []

    def run():
        with GracefulInterrupt() as g:
            seen.append(g._previous)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert seen == [{}]
