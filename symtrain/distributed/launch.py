"""``symtrain train ... --ranks N``: start ``mpiexec -n N`` on this command line and watch it.

The MPICH wheel's ``mpiexec`` (next to this Python) is preferred, else the one on PATH. ``mpiexec`` runs
in its own session so a terminal's Ctrl-C reaches it once, through us: the first SIGINT/SIGTERM is
forwarded (mpiexec passes it to every rank; they stop after the same step and rank 0 checkpoints), a
second one too (mpiexec then aborts at once). If this launcher dies, mpiexec gets SIGTERM (Linux
parent-death signal), so no rank is left behind. When a rank is killed, the error names its rank.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import IO

from symtrain.errors import ConfigError
from symtrain.validate import check_int

PID_DIR_ENV = "SYMTRAIN_RANK_PID_DIR"
DIR_PREFIX = "symtrain-ranks-"  # the launcher's private dir in the temp dir (rank pids, mpiexec output)
LAUNCHER_FILE = "launcher.pid"
BLAS_THREADS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
_BAD_PID = re.compile(r"PID (\d+) RUNNING AT")
READER_JOIN_TIMEOUT = 5.0  # seconds to drain the output relays after mpiexec exits
MAX_RANKS_PER_CORE = 8  # --ranks starts every rank on this machine: more would only exhaust its memory
RELAY_TRUNCATE = 1 << 24  # bytes of relayed mpiexec output kept on disk before the file is emptied


def find_mpiexec() -> str:
    """The ``mpiexec`` of this Python's environment (the MPICH wheel's), else the one on PATH."""
    for folder in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidate = Path(folder) / "mpiexec"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("mpiexec")
    if found is None:
        raise ConfigError("--ranks needs mpiexec, found neither next to this Python nor on PATH; install it "
                          "with `pip install symtrain[mpi]` (the MPICH wheel ships one)")
    return found


def register_rank(rank: int) -> None:
    """Record this rank's pid for the launcher (which names the rank when one dies); no-op without it."""
    folder = os.environ.get(PID_DIR_ENV)
    if folder:
        try:
            Path(folder, f"{os.getpid()}.rank").write_text(str(rank))
        except OSError:
            pass


def _parent_death_signal() -> None:
    """In the child before exec: get SIGTERM when the launcher dies (Linux; elsewhere nothing)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def launch(ranks: int, argv: Sequence[str]) -> int:
    """Run ``python -m symtrain.cli ARGV`` on ``ranks`` ranks under mpiexec; its exit status (130: signal).

    mpiexec writes to files in a private directory that this launcher copies through as they grow (not to
    pipes: if the launcher dies, mpiexec must not die of a broken pipe before the ranks checkpoint).
    """
    check_int("--ranks", ranks, 1)
    cores = os.cpu_count() or 1
    if ranks > MAX_RANKS_PER_CORE * cores:
        raise ConfigError(f"--ranks {ranks} would start {ranks} processes on this machine ({cores} cores; "
                          f"--ranks allows at most {MAX_RANKS_PER_CORE * cores}); to run on other hosts too, "
                          "start the site's mpiexec yourself: mpiexec -n N [-f hostfile] symtrain train ...")
    mpiexec = find_mpiexec()
    env = dict(os.environ)
    threads = str(max(1, (os.cpu_count() or 1) // ranks))
    for var in BLAS_THREADS:
        env.setdefault(var, threads)
    sweep_stale_dirs()
    with tempfile.TemporaryDirectory(prefix=DIR_PREFIX) as pid_dir:
        Path(pid_dir, LAUNCHER_FILE).write_text(str(os.getpid()))
        env[PID_DIR_ENV] = pid_dir
        cmd = [mpiexec, "-n", str(ranks), sys.executable, "-m", "symtrain.cli", *argv]
        logs = [Path(pid_dir, name) for name in ("stdout.log", "stderr.log")]
        with open(logs[0], "ab") as out, open(logs[1], "ab") as err:  # append: the relay may truncate
            proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, start_new_session=True,
                                    preexec_fn=_parent_death_signal)
        received: list[str] = []

        def forward(signum: int, frame: FrameType | None) -> None:
            received.append(signal.Signals(signum).name)
            if proc.poll() is None:
                proc.send_signal(signum)

        previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
        bad: list[int] = []
        readers = [threading.Thread(target=_relay, args=(log, dst, proc, bad), daemon=True)
                   for log, dst in zip(logs, (sys.stdout, sys.stderr))]
        for reader in readers:
            reader.start()
        try:
            code = proc.wait()
            for reader in readers:  # bounded: a grandchild keeping the pipe open must not hang the exit
                reader.join(READER_JOIN_TIMEOUT)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        killed = {pid: _rank_of(pid_dir, pid) for pid in dict.fromkeys(bad)}
    for pid, rank in killed.items():
        who = f"rank {rank}" if rank is not None else "a rank"
        print(f"symtrain train: error: {who} (pid {pid}) ended abnormally and mpiexec stopped the other "
              "ranks; the last checkpoint written is intact: rerun with --resume to continue",
              file=sys.stderr)
    if received and not killed:  # the ranks stopped as asked (and checkpointed)
        return 130
    return code if code >= 0 else 128 - code


def sweep_stale_dirs() -> list[Path]:
    """Remove this user's private launcher dirs whose launcher is gone (killed with SIGKILL, it could not
    remove its own); returns them. Each dir names its launcher's pid in ``launcher.pid``."""
    removed = []
    for folder in Path(tempfile.gettempdir()).glob(DIR_PREFIX + "*"):
        try:
            if folder.stat().st_uid != os.getuid():
                continue
            pid = int(Path(folder, LAUNCHER_FILE).read_text())
        except (OSError, ValueError):
            continue
        if pid != os.getpid() and _gone(pid):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def _relay(log: Path, dst: IO[str], proc: subprocess.Popen, bad: list[int]) -> None:
    """Copy the growing file ``log`` to ``dst`` until mpiexec has exited and the file is read to its end,
    noting the pids mpiexec reports as badly terminated; a long run's log is emptied once read (mpiexec
    appends), so the copy on disk stays small."""
    out = getattr(dst, "buffer", None)
    tail = b""
    with open(log, "rb") as f:
        while True:
            if f.tell() > RELAY_TRUNCATE and os.stat(log).st_size == f.tell():
                os.truncate(log, 0)
                f.seek(0)
            done = proc.poll() is not None
            chunk = f.read(1 << 16)
            if chunk:
                if out is not None:
                    out.write(chunk)
                else:
                    dst.write(chunk.decode(errors="replace"))
                dst.flush()
                *lines, tail = (tail + chunk).split(b"\n")
                for line in lines:
                    m = _BAD_PID.search(line.decode(errors="replace"))
                    if m:
                        bad.append(int(m.group(1)))
            elif done:
                return
            else:
                time.sleep(0.05)


def _rank_of(pid_dir: str, pid: int) -> int | None:
    try:
        return int(Path(pid_dir, f"{pid}.rank").read_text())
    except (OSError, ValueError):
        return None


def without_ranks(argv: Sequence[str]) -> list[str]:
    """``argv`` minus its ``--ranks N`` / ``--ranks=N`` (the ranks run the same command on one rank each)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--ranks":
            skip = True
        elif not arg.startswith("--ranks="):
            out.append(arg)
    return out
