"""Issue 14 rule 5 outside the stream package: an interrupted storage command exits promptly (status 130),
leaving neither its target nor its hidden partial directory, and waits for no worker on the way out."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    env = dict(os.environ,
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    return subprocess.Popen([sys.executable, "-m", "symtrain.cli", "-q", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_partial(cwd: Path, name: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if any(p.name.startswith(f".{name}.partial-") for p in cwd.iterdir()):
            return
        time.sleep(0.05)
    pytest.fail(f"no partial directory appeared (exit status {proc.poll()})")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_digits_build_exits_promptly_and_leaves_nothing(tmp_path: Path, signum: int) -> None:
    proc = _start(["datasets", "digits", "out", "--rows", "2000000"], tmp_path)
    try:
        _wait_for_partial(tmp_path, "out", proc)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode in (130, -signum, 128 + signum), err
    assert not (tmp_path / "out").exists()
    assert not [p.name for p in tmp_path.iterdir() if ".partial-" in p.name]
