"""Process-level guarantees: bounded memory under a hard RLIMIT_DATA cap, and SIGKILL mid-write."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from symtrain.atomic import stale_leftovers
from symtrain.errors import DatasetError
from symtrain.storage import open_dataset, write_dataset

ENV = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
CAP = 200 << 20  # interpreter + numpy + symtrain.storage take ~50 MiB of VmData with one BLAS thread
DATA = 300 << 20


def _run(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], env=ENV, capture_output=True,
                          text=True, timeout=timeout)


def test_write_larger_than_memory_cap(tmp_path):
    code = """
        import resource, sys
        import numpy as np
        from symtrain.storage import DatasetWriter
        cap, total, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
        resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))
        try:                                   # the cap is real: the whole dataset cannot be held at once
            np.ones(total // 4, np.float32)
            print("cap not enforced"); sys.exit(3)
        except MemoryError:
            pass
        rows, batch = total // (256 * 4), 8192
        with DatasetWriter(out, {"x": ("float32", (256,)), "y": ("int64", ())}) as w:
            for s in range(0, rows, batch):
                n = min(batch, rows - s)
                x = np.empty((n, 256), np.float32)
                x[:] = np.arange(s, s + n, dtype=np.float32)[:, None]
                w.append(x=x, y=np.arange(s, s + n, dtype=np.int64))
        print("ok", open("/proc/self/status").read().split("VmPeak:")[1].split()[0])
    """
    out = tmp_path / "big"
    res = _run(code, str(CAP), str(DATA), str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.startswith("ok")
    ds = open_dataset(out)
    assert ds.rows * ds.fields["x"].row_bytes == DATA and ds.rows > CAP // ds.fields["x"].row_bytes
    for r in (0, ds.rows // 2, ds.rows - 1):
        assert ds["x"][r, 7] == r and ds["y"][r] == r


def test_sigkill_mid_write_leaves_no_target(tmp_path):
    code = """
        import sys, time
        import numpy as np
        from symtrain.storage import DatasetWriter
        with DatasetWriter(sys.argv[1], {"x": ("float32", (1024,))}) as w:
            for i in range(10**6):
                w.append(x=np.full((64, 1024), i, np.float32))
                if i == 20:
                    print("writing", flush=True)
                time.sleep(0.001)
    """
    target = tmp_path / "victim"
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), str(target)], env=ENV,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    assert not target.exists()
    with pytest.raises(DatasetError, match="does not exist"):
        open_dataset(target)
    leftovers = stale_leftovers(target)
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".victim.partial-")
    with pytest.raises(DatasetError):
        open_dataset(leftovers[0])  # the partial directory has no manifest: never mistaken for data
    write_dataset(target, {"x": np.zeros((2, 1024), np.float32)})  # a new writer removes the dead partial
    assert stale_leftovers(target) == [] and open_dataset(target).rows == 2
