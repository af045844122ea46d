"""Bounded memory: a streamed epoch completes over a dataset more than twice an RLIMIT_DATA cap."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

CHILD = textwrap.dedent(r"""
    import json, os, re, resource, sys
    import numpy as np
    from symtrain.backend import function, pt, shared
    from symtrain.storage import DatasetWriter
    from symtrain.stream import ChunkStream

    def vm_data():  # private writable mappings + heap: what RLIMIT_DATA counts
        return int(re.search(r"VmData:\s+(\d+) kB", open("/proc/self/status").read()).group(1)) * 1024

    v = pt.vector("v")
    function([v], (v * 2).sum())(np.ones(3, dtype="float32"))  # baseline: graph library imported, one compile
    base = vm_data()
    budget = int(sys.argv[2]) << 20
    cap = base + budget
    features, block = 1024, 2048  # 4 KiB rows, 8 MiB per written block
    rows = -(-(2 * cap + (32 << 20)) // (features * 4) // block) * block  # > 2x the cap, whole blocks
    with DatasetWriter(sys.argv[1], {"x": ("float32", (features,))}) as w:
        for start in range(0, rows, block):
            x = np.empty((block, features), dtype=np.float32)
            x[:] = np.arange(start, start + block, dtype=np.float32)[:, None]
            w.append(x=x)
            del x
    size = os.path.getsize(os.path.join(sys.argv[1], "x.npy"))

    resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))
    with ChunkStream(sys.argv[1], 256, 2048, seed=0) as stream:
        total = shared(np.zeros((), dtype="float64"))
        step = function([stream.index], [], updates=[(total, total + stream.batch("x")[:, 0].sum(dtype="float64"))])
        for chunk in stream.epoch(0):
            for i in chunk.indices:
                step(i)
        steps = stream.steps_per_epoch
    try:  # control: the cap does bite when the whole file is loaded
        np.fromfile(os.path.join(sys.argv[1], "x.npy"), dtype=np.float32)
        whole_load = "succeeded"
    except MemoryError:
        whole_load = "MemoryError"
    print(json.dumps({"base": base, "cap": cap, "size": size, "rows": rows, "steps": steps,
                      "total": float(total.get_value()), "peak_data": vm_data(), "whole_load": whole_load}))
""")  # noqa: E501


def test_streamed_epoch_over_dataset_twice_the_data_limit(tmp_path):
    path = tmp_path / "big"
    env = {**os.environ, "MALLOC_ARENA_MAX": "2"}
    try:
        proc = subprocess.run([sys.executable, "-c", CHILD, str(path), "64"], capture_output=True, text=True,
                              timeout=300, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        r = json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(path, ignore_errors=True)
    assert r["size"] > 2 * r["cap"], r
    assert r["whole_load"] == "MemoryError", r  # the limit was real
    assert r["steps"] == r["rows"] // 256
    # every row once (drop_last drops none here)
    assert r["total"] == float(r["rows"] * (r["rows"] - 1) // 2), r
