"""The run directory: its layout names, the one-writer lock, the ownership marker and the stored run options.

A run directory holds what ``fit(run_dir=...)`` / ``symtrain train --run-dir`` write::

    RUN/symtrain-run.json   ownership marker: the top-level entries symtrain created here
    RUN/symtrain-run.lock   the writer's lock (pid, host), present while a run is writing
    RUN/options.json        the options of ``symtrain train`` (``--resume`` reuses them)
    RUN/checkpoints/        one directory per checkpoint, plus ``best``
    RUN/metrics.jsonl, RUN/metrics.csv, RUN/curves.png

symtrain deletes or replaces only what it wrote: entries the marker lists, and inside ``checkpoints/`` only
directories that are symtrain checkpoints. Anything else at a layout name is refused, never removed.
See docs/checkpoints.md ("The run directory").
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import stat
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from symtrain.atomic import pid_alive, write_file_atomic
from symtrain.errors import DatasetError, RunDirError
from symtrain.validate import check_path_writable, is_int

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
BEST = "best"
JSONL = "metrics.jsonl"
CSV = "metrics.csv"
PNG = "curves.png"
MARKER = "symtrain-run.json"
LOCK = "symtrain-run.lock"
OPTIONS = "options.json"
LAYOUT = (CHECKPOINTS, JSONL, CSV, PNG, OPTIONS)  # the names a run may replace, once it owns them
WRITTEN_BY_FIT = (CHECKPOINTS, JSONL, CSV)
DATASET_MARKERS = ("manifest.json", "datasets.json", "digits.json")  # storage's: a dataset or a group of them
MARKER_FORMAT = "symtrain-run"
OPTIONS_FORMAT = "symtrain-run-options"
MAX_JSON_BYTES = 64 << 20  # a run-dir JSON file larger than this is not one symtrain wrote


# ----- reading small files safely --------------------------------------------------------------------


def _open_regular(path: Path, root: str | Path | None) -> int:
    """A read-only descriptor of ``path``, a regular file resolving inside ``root`` (a FIFO never blocks)."""
    if root is not None:
        real, top = os.path.realpath(path), os.path.realpath(root)
        if os.path.commonpath([real, top]) != top:
            raise RunDirError(f"{path}: is a symlink to {real}, outside {root}; refusing to read it")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise RunDirError(f"{path}: cannot be opened ({exc.strerror or exc})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise RunDirError(f"{path}: is not a regular file ({_kind(mode)}); refusing to read it")
    return fd


def check_regular(path: str | Path, root: str | Path | None = None) -> None:
    """RunDirError unless ``path`` is a regular file resolving inside ``root`` (FileNotFoundError passes)."""
    os.close(_open_regular(Path(path), root))


def read_regular(path: str | Path, root: str | Path | None = None, limit: int = MAX_JSON_BYTES) -> bytes:
    """The bytes of ``path``, which must be a regular file (never a FIFO or device: no hang) of at most
    ``limit`` bytes, resolving inside ``root`` when given (no symlink out of it). OSError-free: raises
    RunDirError naming the file and the problem; FileNotFoundError passes through."""
    path = Path(path)
    fd = _open_regular(path, root)
    try:
        size = os.fstat(fd).st_size
        if size > limit:
            raise RunDirError(
                f"{path}: {size} bytes, more than the {limit} a symtrain file of this kind can have"
            )
        chunks, total = [], 0
        while total <= limit:
            block = os.read(fd, 1 << 20)
            if not block:
                break
            chunks.append(block)
            total += len(block)
        if total > limit:
            raise RunDirError(f"{path}: grew past {limit} bytes while being read")
        return b"".join(chunks)
    except OSError as exc:
        raise RunDirError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    finally:
        os.close(fd)


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def read_json(path: str | Path, root: str | Path | None = None) -> Any:
    """JSON from a regular file (see :func:`read_regular`); RunDirError naming the file when malformed."""
    data = read_regular(path, root)
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise RunDirError(f"{path}: not valid JSON ({exc})") from None


# ----- checks before anything is created -------------------------------------------------------------


def check_run_dir(run_dir: Path) -> None:
    """RunDirError naming run_dir unless it is (or can be created as) a writable directory.

    A missing run_dir is diagnosed at its first missing component (parent not a directory, read-only,
    /proc, ...) so nothing is created or deleted before the error.
    """
    if run_dir.is_symlink() and not run_dir.exists():
        raise RunDirError(f"run_dir={str(run_dir)!r} is a dangling symlink")
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"run_dir={str(run_dir)!r} is not a directory (a file of that name exists)")
    data = [n for n in DATASET_MARKERS if os.path.lexists(run_dir / n)]
    if data:
        raise RunDirError(f"run_dir={str(run_dir)!r} is a dataset directory (it holds {data[0]}); a run "
                          "directory must be separate from the data: choose another run_dir")
    probe = run_dir / LOCK
    if not run_dir.is_dir():  # the first component that does not exist yet must be creatable
        probe = run_dir.absolute()
        while probe.parent != probe and not probe.parent.exists():
            probe = probe.parent
    try:
        check_path_writable(probe)
    except DatasetError as exc:
        problem = exc.problem.removeprefix("cannot be created: ")
        raise RunDirError(f"run_dir={str(run_dir)!r} cannot be used: {problem}") from None


def make_run_dir(run_dir: Path) -> bool:
    """Create run_dir (and its parents) after :func:`check_run_dir`; True when it did not exist before."""
    check_run_dir(run_dir)
    if run_dir.is_dir():
        return False
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"run_dir={str(run_dir)!r} cannot be created ({exc.strerror or exc})") from None
    return True


# ----- the lock: one writer per run directory ----------------------------------------------------------


def _start_time(pid: int) -> str | None:
    """The kernel's start time of process ``pid`` (field 22 of /proc/PID/stat), telling a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _owner_text(info: Mapping[str, Any]) -> str:
    started = info.get("started")
    when = (
        time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(started))
        if isinstance(started, int | float) and 0 < started < 1e11
        else ""
    )
    return f"pid {info.get('pid')!r} on host {info.get('host')!r}{when}"


class RunLock:
    """The writer's lock of a run directory: ``RUN/symtrain-run.lock`` holding the owner's pid and host,
    kept ``flock``-ed while the run writes (the kernel drops it when the process dies)."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> RunLock:
        """Take the lock or raise RunDirError naming its owner; a dead owner's lock is taken over."""
        for _ in range(20):  # retried only when the lock file was replaced between open and flock
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                info = self._read_info(fd)
                if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    os.close(fd)
                    raise RunDirError(self._busy(info)) from None
                if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    os.close(fd)
                    raise RunDirError(f"{self.path}: cannot be locked ({exc.strerror or exc})") from None
                # a file system without flock (some network mounts): the pid and host in the file decide
                log.warning("%s: this file system cannot lock files (%s); the pid and host in the lock "
                            "file guard the run directory", self.path, exc.strerror or exc)
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            try:
                self._take(fd)
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
            return self
        raise RunDirError(f"{self.path}: the lock file keeps being replaced; is another run starting here?")

    def _open(self) -> int:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
        except OSError as exc:
            why = "it is a symlink" if exc.errno == errno.ELOOP else (exc.strerror or str(exc))
            raise RunDirError(
                f"run_dir={str(self.run_dir)!r} cannot be written: the lock {self.path} cannot "
                f"be created ({why})"
            ) from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise RunDirError(f"{self.path}: the lock is not a regular file; remove it")
        return fd

    @staticmethod
    def _read_info(fd: int) -> dict:
        try:
            data = os.pread(fd, 65536, 0)
            info = json.loads(data) if data.strip() else {}
        except (OSError, ValueError, RecursionError):
            return {}
        return info if isinstance(info, dict) else {}

    def _busy(self, info: Mapping[str, Any]) -> str:
        return (
            f"run_dir={str(self.run_dir)!r} is in use by another run ({_owner_text(info)}; "
            f"lock {self.path}): "
            "one run writes a run directory at a time; wait for it to end or stop it, or choose another "
            "--run-dir"
        )

    def _take(self, fd: int) -> None:
        """With the flock held: refuse a lock a live process still claims, take over a dead one's."""
        info = self._read_info(fd)
        host, pid = socket.gethostname(), os.getpid()
        if info and info.get("pid") != pid:
            other_pid, other_host = info.get("pid"), info.get("host")
            if not (is_int(other_pid) and 0 < other_pid < 2**31 and isinstance(other_host, str)):
                log.warning("%s: the lock names no valid owner (%.80r); nobody holds it, taking it over",
                            self.path, info)
            elif other_host != host:
                raise RunDirError(
                    f"{self.path}: the lock belongs to {_owner_text(info)}, another host; this host "
                    "cannot tell whether that run is still going: if it is over, delete the lock "
                    "file and rerun"
                )
            elif pid_alive(other_pid) and info.get("start_time") in (None, _start_time(other_pid)):
                raise RunDirError(self._busy(info) + f" (if no symtrain run is going, delete {self.path})")
            else:
                log.warning("%s: taking over the stale lock of %s (that process is gone)", self.path,
                            _owner_text(info))
        mine = {"pid": pid, "host": host, "start_time": _start_time(pid), "started": time.time()}
        data = (json.dumps(mine) + "\n").encode()
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
            os.fsync(fd)
        except OSError as exc:
            raise RunDirError(
                f"run_dir={str(self.run_dir)!r} cannot be written: the lock {self.path} "
                f"({exc.strerror or exc})"
            ) from None

    def release(self) -> None:
        """Remove the lock file and drop the lock (idempotent)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.unlink(self.path)
        except OSError:
            pass
        os.close(fd)


_HELD: dict[str, list] = {}  # realpath -> [RunLock, depth]: this process's locks (re-entrant)


@contextmanager
def locked(run_dir: str | Path) -> Iterator[RunLock]:
    """Hold the run directory's lock for the block (re-entrant within this process)."""
    key = os.path.realpath(run_dir)
    entry = _HELD.get(key)
    if entry is None:
        entry = _HELD[key] = [RunLock(run_dir).acquire(), 0]
    entry[1] += 1
    try:
        yield entry[0]
    finally:
        entry[1] -= 1
        if entry[1] == 0:
            _HELD.pop(key, None)
            entry[0].release()


# ----- ownership ------------------------------------------------------------------------------------


def read_marker(run_dir: Path) -> dict | None:
    """The ownership marker of run_dir, or None when there is none; RunDirError when it is malformed."""
    path = run_dir / MARKER
    try:
        marker = read_json(path, run_dir)
    except FileNotFoundError:
        return None
    files = marker.get("files") if isinstance(marker, dict) else None
    if not isinstance(marker, dict) or marker.get("format") != MARKER_FORMAT:
        raise RunDirError(f"{path}: not a symtrain run marker")
    if not isinstance(files, list) or not all(isinstance(f, str) and f in LAYOUT for f in files):
        raise RunDirError(
            f"{path}: field 'files' must be a list of names among {list(LAYOUT)}, got {files!r}"
        )
    return marker


def owned(run_dir: Path) -> set[str]:
    """The top-level layout entries symtrain created in run_dir (from its marker)."""
    marker = read_marker(run_dir)
    return set(marker["files"]) if marker else set()


def claim(run_dir: Path, names: Iterable[str]) -> None:
    """Record ``names`` as written by symtrain in run_dir's marker (created atomically if needed)."""
    mine = owned(run_dir)
    new = mine | set(names)
    if new == mine and (run_dir / MARKER).is_file():
        return
    doc = {
        "format": MARKER_FORMAT,
        "version": 1,
        "files": sorted(new),
        "note": "symtrain deletes or replaces only the entries listed here (and only its own checkpoints)",
    }
    try:
        write_file_atomic(run_dir / MARKER, (json.dumps(doc, indent=1) + "\n").encode())
    except OSError as exc:
        raise RunDirError(
            f"run_dir={str(run_dir)!r} cannot be written: {run_dir / MARKER} ({exc.strerror or exc})"
        ) from None


def foreign(run_dir: Path, names: Iterable[str], mine: set[str]) -> list[str]:
    """The ``names`` that exist in run_dir but symtrain did not write (not in ``mine``)."""
    return [n for n in names if n not in mine and os.path.lexists(run_dir / n)]


def _is_own_checkpoint(path: Path) -> bool:
    from symtrain.train.checkpoint import is_symtrain_checkpoint

    return is_symtrain_checkpoint(path)


def own_checkpoints(run_dir: Path) -> list[Path]:
    """Entries of run_dir/checkpoints that are symtrain checkpoints (rotation and ``best``)."""
    from symtrain.train.checkpoint import NAME_RE

    cdir = run_dir / CHECKPOINTS
    if not cdir.is_dir() or cdir.is_symlink():
        return []
    return sorted(
        p for p in cdir.iterdir() if (p.name == BEST or NAME_RE.match(p.name)) and _is_own_checkpoint(p)
    )


def _adopt(run_dir: Path) -> set[str]:
    """What an unmarked run dir written by an earlier symtrain (before the marker existed) holds of
    symtrain's: its ``checkpoints/`` when that holds symtrain checkpoints (other files in it stay foreign
    and are never deleted), and a metrics log and table that are symtrain's format."""
    if not own_checkpoints(run_dir):
        return set()
    out = {CHECKPOINTS}
    for name, start in ((JSONL, '{"kind": '), (CSV, "kind,epoch,step,time")):
        path = run_dir / name
        empty = path.is_file() and not path.is_symlink() and path.stat().st_size == 0  # nothing to lose
        if empty or _first_line(path).startswith(start):
            out.add(name)
    return out


def _first_line(path: Path) -> str:
    """The start of a regular file's first line ("" for anything else or on an error)."""
    try:
        fd = _open_regular(path, path.parent)
    except (OSError, RunDirError):
        return ""
    try:
        return os.read(fd, 256).split(b"\n", 1)[0].decode(errors="replace")
    except OSError:
        return ""
    finally:
        os.close(fd)


def prepare(run_dir: Path, resume: bool, overwrite: bool, dry_run: bool = False,
            writes: tuple[str, ...] = WRITTEN_BY_FIT) -> None:
    """Check (and unless ``dry_run`` set up) run_dir for a run; the caller holds its lock.

    Refuses the names the run ``writes`` when symtrain did not write them (a user's ``metrics.csv``, their
    own ``checkpoints/``),
    refuses a fresh start over existing checkpoints unless ``overwrite``, which then deletes only
    symtrain's own checkpoints and logs. Claims the names fit writes in the ownership marker.
    """
    from symtrain.train.checkpoint import clean_leftovers

    if resume and overwrite:
        raise RunDirError("resume=True (--resume) continues the run and overwrite=True (--overwrite) "
                          "starts it over: pass one of them")
    mine = owned(run_dir) if run_dir.is_dir() else set()
    if not (run_dir / MARKER).exists():  # a run dir of an earlier symtrain: adopt what is symtrain's
        mine = _adopt(run_dir)
    _check_kinds(run_dir, writes)
    others = foreign(run_dir, writes, mine)
    if others:
        shown = ", ".join(f"{n}/ ({_listing(run_dir / n)})" if (run_dir / n).is_dir() else n for n in others)
        raise RunDirError(
            f"run_dir={str(run_dir)!r} holds {shown}, which symtrain did not write (no {MARKER} lists "
            f"{'it' if len(others) == 1 else 'them'}); symtrain never replaces or deletes files it did not "
            "write, so move them away or choose another run_dir"
        )
    ours = own_checkpoints(run_dir)
    best = run_dir / CHECKPOINTS / BEST
    if os.path.lexists(best) and best not in ours:
        raise RunDirError(
            f"{best} exists and is not a symtrain checkpoint; symtrain writes its best checkpoint "
            "there and never replaces what it did not write: move it away"
        )
    if not resume and not overwrite and any(p.name != BEST for p in ours):
        raise RunDirError(
            f"run_dir={str(run_dir)!r} already holds checkpoints of a run: pass resume=True to "
            "continue it (--resume), overwrite=True to start over (--overwrite: deletes symtrain's "
            "own checkpoints and logs only), or choose another run_dir"
        )
    if dry_run:
        return
    claim(run_dir, set(mine) | set(WRITTEN_BY_FIT))
    if overwrite and not resume:
        _discard_run(run_dir, ours, mine)
    clean_leftovers(run_dir / CHECKPOINTS)


def _check_kinds(run_dir: Path, names: Iterable[str]) -> None:
    """RunDirError when a name the run writes is a symlink, a FIFO, a device... (writing to it could hang or
    land outside the run dir): checkpoints/ must be a directory, the rest regular files."""
    for name in names:
        path = run_dir / name
        if not os.path.lexists(path):
            continue
        mode = os.lstat(path).st_mode
        if stat.S_ISLNK(mode):
            raise RunDirError(
                f"{path} is a symlink (to {os.path.realpath(path)}); symtrain writes only real "
                "files inside the run directory: remove the link or choose another run_dir"
            )
        want = stat.S_ISDIR if name == CHECKPOINTS else stat.S_ISREG
        if not want(mode):
            raise RunDirError(
                f"{path} is {_kind(mode)}, not {'a directory' if name == CHECKPOINTS else 'a regular file'}"
                "; move it away or choose another run_dir"
            )


def _listing(path: Path, most: int = 3) -> str:
    try:
        names = sorted(p.name for p in path.iterdir())
    except OSError:
        return "unreadable"
    if not names:
        return "empty"
    return ", ".join(names[:most]) + (f", ... {len(names)} entries" if len(names) > most else "")


def _discard_run(run_dir: Path, checkpoints: list[Path], mine: set[str]) -> None:
    """``overwrite``: delete this run dir's symtrain checkpoints, metrics log and plot (those ``mine``
    lists); keep the rest."""
    import shutil

    for p in checkpoints:
        shutil.rmtree(p)
    for name in (JSONL, CSV, PNG):
        p = run_dir / name
        if name in mine and p.is_file() and not p.is_symlink():
            p.unlink()
    cdir = run_dir / CHECKPOINTS
    kept = [p.name for p in cdir.iterdir() if not p.name.startswith(".")] if cdir.is_dir() else []
    if kept:
        log.warning(
            "overwrite: kept %d entr%s of %s that symtrain did not write: %s",
            len(kept),
            "y" if len(kept) == 1 else "ies",
            cdir,
            ", ".join(sorted(kept)[:5]),
        )


def _head(path: Path) -> bytes:
    """The first 4 bytes of a regular file (b"" for anything else or on an error)."""
    try:
        fd = _open_regular(path, None)
    except (OSError, RunDirError):
        return b""
    try:
        return os.read(fd, 4)
    except OSError:
        return b""
    finally:
        os.close(fd)


def claim_plot(run_dir: Path, out: Path) -> None:
    """Before ``plot`` writes RUN/curves.png: refuse a curves.png symtrain did not write, then claim it."""
    if out.absolute() != (run_dir / PNG).absolute():  # -o OUT: replace only a PNG image, never other content
        if os.path.lexists(out) and (out.is_symlink() or not out.is_file() or _head(out) != b"\x89PNG"):
            raise RunDirError(f"-o {out}: exists and is not a PNG image; symtrain never replaces it: choose "
                              "another name")
        return
    mine = owned(run_dir)
    if foreign(run_dir, [PNG], mine):
        raise RunDirError(
            f"{out} exists and symtrain did not write it (no {MARKER} lists it); symtrain never "
            "replaces it: move it away or pass -o OUT"
        )
    claim(run_dir, mine | {PNG})


# ----- stored run options ----------------------------------------------------------------------------


def save_options(run_dir: Path, options: Mapping[str, Any]) -> None:
    """Store the options a run was started with (RUN/options.json), atomically."""
    doc = {"format": OPTIONS_FORMAT, "version": 1, **options}
    claim(run_dir, [OPTIONS])
    try:
        write_file_atomic(run_dir / OPTIONS, (json.dumps(doc, indent=1) + "\n").encode())
    except OSError as exc:
        raise RunDirError(f"{run_dir / OPTIONS}: cannot be written ({exc.strerror or exc})") from None


def load_options(run_dir: Path, schema: Mapping[str, tuple[type, ...]]) -> dict | None:
    """The stored options of run_dir checked against ``schema`` (name -> allowed types), or None when
    there are none; RunDirError naming the file and the field when one is missing or mistyped."""
    path = run_dir / OPTIONS
    try:
        doc = read_json(path, run_dir)
    except FileNotFoundError:
        return None
    if not isinstance(doc, dict) or doc.get("format") != OPTIONS_FORMAT:
        raise RunDirError(f"{path}: not symtrain run options (format {OPTIONS_FORMAT!r})")
    out = {}
    for name, types in schema.items():
        value = doc.get(name)
        if isinstance(value, bool) and bool not in types or not isinstance(value, types):
            raise RunDirError(
                f"{path}: field {name!r} must be {' or '.join(_tname(t) for t in types)}, got {value!r}"
            )
        out[name] = value
    return out


def _tname(t: type) -> str:
    return "null" if t is type(None) else t.__name__


@contextmanager
def session(run_dir: Path, resume: bool, overwrite: bool, check_only: bool = False,
            writes: tuple[str, ...] = WRITTEN_BY_FIT) -> Iterator[RunLock]:
    """Create run_dir if needed, hold its lock and :func:`prepare` it for the block (``check_only``: only
    the refusals, nothing claimed or deleted yet); a run_dir this call created is removed again if it is
    still empty at the end (a refused or failed start leaves nothing behind)."""
    created = make_run_dir(run_dir)
    try:
        with locked(run_dir) as lock:
            prepare(run_dir, resume, overwrite, dry_run=check_only, writes=writes)
            yield lock
    finally:
        if created:
            try:
                run_dir.rmdir()
            except OSError:
                pass
