"""Out of core for real: the tutorial-style loop runs under an RLIMIT_DATA cap far below the data size.

A subprocess imports the graph library, builds and compiles the model over ``symtrain.shared`` memmaps,
measures its data segment (VmData: what RLIMIT_DATA counts; read-only file mappings do not count), then
caps RLIMIT_DATA at that baseline plus HEADROOM and trains over a dataset more than twice the headroom.
The same cap makes the in-memory ``backend.shared`` copy fail, so the cap is known to bite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

HEADROOM = 64 << 20
ROWS, FEATURES = 160 * 1024, 256  # 160 MiB of float32 features: 2.5x the headroom

CHILD = textwrap.dedent('''
    import json, resource, sys
    import numpy
    import pytensor.tensor as T
    import symtrain
    from symtrain.backend import shared, config

    x_path, y_path, headroom = sys.argv[1], sys.argv[2], int(sys.argv[3])
    batch_size = 256
    train_set_x = symtrain.shared(numpy.load(x_path, mmap_mode="r"), chunk_rows=4096)
    shared_y = symtrain.shared(numpy.load(y_path, mmap_mode="r"), chunk_rows=4096)
    train_set_y = T.cast(shared_y, "int32")
    n_train_batches = train_set_x.get_value(borrow=True).shape[0] // batch_size
    n_in = train_set_x.get_value(borrow=True).shape[1]
    index, x, y = T.lscalar(), T.matrix("x"), T.ivector("y")
    W = shared(numpy.zeros((n_in, 4), dtype=config.floatX))
    b = shared(numpy.zeros(4, dtype=config.floatX))
    p = T.special.softmax(T.dot(x, W) + b, axis=1)
    cost = -T.mean(T.log(p)[T.arange(y.shape[0]), y])
    gW, gb = T.grad(cost, [W, b])
    train_model = symtrain.function([index], [cost, x.sum()], updates=[(W, W - 0.01 * gW), (b, b - 0.01 * gb)],
        givens={x: train_set_x[index * batch_size:(index + 1) * batch_size],
                y: train_set_y[index * batch_size:(index + 1) * batch_size]})

    def vm_data():
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmData:"))

    baseline = vm_data()
    resource.setrlimit(resource.RLIMIT_DATA, (baseline + headroom, resource.RLIM_INFINITY))
    costs, peak = [], baseline
    data = numpy.load(x_path, mmap_mode="r")
    for i in range(n_train_batches):
        c, s = train_model(i)
        costs.append(float(c))
        if i % 97 == 0:
            want = data[i * batch_size:(i + 1) * batch_size].sum(dtype=numpy.float64)
            assert abs(float(s) - want) <= 1e-3 * (1 + abs(want)), (i, float(s), want)
            peak = max(peak, vm_data())
    train_model.close()
    try:
        shared(numpy.asarray(data))  # the in-memory way copies everything
        in_memory = "fit"
    except MemoryError:
        in_memory = "MemoryError"
    print(json.dumps({"baseline": baseline, "peak": max(peak, vm_data()), "steps": len(costs),
                      "first": costs[0], "last": costs[-1], "in_memory": in_memory,
                      "loads": train_model.group.loads}))
''')  # noqa: E501


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_DATA and /proc are Linux")
def test_tutorial_loop_runs_under_a_data_cap_below_the_dataset(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, ROWS)
    x = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32, shape=(ROWS, FEATURES))
    for s in range(0, ROWS, 16384):
        part = rng.standard_normal((min(16384, ROWS - s), FEATURES), dtype=np.float32)
        part[:, :4] += 2 * np.eye(4, dtype=np.float32)[y[s:s + len(part)]]
        x[s:s + len(part)] = part
    x.flush()
    del x
    np.save(tmp_path / "y.npy", y.astype(np.float32))
    size = os.path.getsize(tmp_path / "x.npy")
    assert size > 2 * HEADROOM
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "x.npy"), str(tmp_path / "y.npy"),
                           str(HEADROOM)], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["steps"] == ROWS // 256
    assert out["loads"] == ROWS // 4096
    assert out["last"] < out["first"]  # it learned
    assert out["peak"] - out["baseline"] <= HEADROOM < size / 2
    assert out["in_memory"] == "MemoryError"
