"""Forward + backward time of a LeNet training step built from ``symtrain.nnet`` (conv2d, max_pool_2d).

The DLT LeNet: 1x28x28 input, conv 20 5x5 -> 2x2 max pool -> conv 50 5x5 -> 2x2 max pool -> 500 tanh ->
10 softmax; batch 128, float32, plain SGD updates, the batch selected from a shared buffer by a symbolic
index through ``givens`` (one compiled call per step). Compared: three ways to build conv2d
- ``im2col``: ``symtrain.nnet.conv2d`` (2k strided slices stacked into patches, one GEMM);
- ``im2col-gather``: the same patches taken by one gather with a constant index array (2 indexing ops
  in the graph instead of 2*k*k strided slices: much smaller graphs to compile);
- ``im2col-bmm``: the same patches kept per image, ``W @ patches`` as a batched matmul (no transpose);
- ``convolve2d``: PyTensor's scipy-style ``pt.signal.convolve2d`` broadcast over (batch, filter,
  channel), summed over channels (what MIGRATION_NOTES suggests as the other shim).
in the default Numba mode and in FAST_COMPILE. "first call" includes the JIT/compile of the function.

    .venv/bin/python -m benchmarks.nnet_speed                       # all impls, NUMBA and FAST_COMPILE
    .venv/bin/python -m benchmarks.nnet_speed --impls im2col --modes NUMBA --steps 50
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks import common

IMPLS = ("im2col", "im2col-gather", "im2col-bmm", "convolve2d")
# pt.signal.convolve2d runs in Numba object mode (tens of seconds a step): measured on request only
DEFAULT_IMPLS = IMPLS[:3]
MODES = ("NUMBA", "FAST_COMPILE")


def _conv_bmm(x, w, k: int):
    """im2col variant: per-image patches (batch, C*k*k, rows*cols) and a batched ``W @ patches``."""
    from symtrain.backend import pt

    rows, cols = x.shape[2] - k + 1, x.shape[3] - k + 1
    w = w[:, :, ::-1, ::-1]
    views = [x[:, :, a:a + rows, b:b + cols] for a in range(k) for b in range(k)]
    patches = pt.stack(views, axis=2).reshape((x.shape[0], -1, rows * cols))
    out = pt.matmul(w.reshape((w.shape[0], -1)), patches)
    return out.reshape((x.shape[0], w.shape[0], rows, cols))


def _conv_gather(x, w, k: int):
    """im2col variant: all patches in one gather by a constant index array (static 28x28/12x12 inputs)."""
    from symtrain.backend import pt

    rows, cols = x.type.shape[2], x.type.shape[3]
    out_r, out_c = rows - k + 1, cols - k + 1
    idx = (np.arange(out_r)[:, None, None, None] * cols + np.arange(out_c)[None, :, None, None]
           + np.arange(k)[None, None, :, None] * cols + np.arange(k)[None, None, None, :]).reshape(out_r * out_c, k * k)
    patches = x.reshape((x.shape[0], x.shape[1], rows * cols))[:, :, idx]  # (batch, C, out_r*out_c, k*k)
    patches = patches.dimshuffle(0, 2, 1, 3).reshape((x.shape[0] * out_r * out_c, -1))
    out = pt.dot(patches, w[:, :, ::-1, ::-1].reshape((w.shape[0], -1)).T)
    return out.reshape((x.shape[0], out_r, out_c, w.shape[0])).dimshuffle(0, 3, 1, 2)


def _conv_signal(x, w, k: int):
    """scipy-style convolve2d (flips like Theano) broadcast over batch and filters, summed over channels."""
    from symtrain.backend import signal

    full = signal.convolve2d(x[:, None, :, :, :], w[None, :, :, :, :], mode="valid")
    return full.sum(axis=2)


def lenet_step(impl: str, mode: str, batch: int = 128, rows: int = 1024):
    """Compile the LeNet SGD step; returns (step(i), params, batches in the buffer, seconds in function())."""
    import symtrain.nnet as nn
    from symtrain.backend import config, function, pt, shared

    fx = config.floatX
    rng = np.random.default_rng(0)
    buf_x = shared(rng.random((rows, 1 * 28 * 28), dtype=np.float32).astype(fx), name="x")
    buf_y = shared(rng.integers(0, 10, rows).astype("int64"), name="y")

    def param(shape, scale):
        return shared((rng.standard_normal(shape) * scale).astype(fx))

    w1, b1 = param((20, 1, 5, 5), 0.1), param((20,), 0)
    w2, b2 = param((50, 20, 5, 5), 0.03), param((50,), 0)
    w3, b3 = param((50 * 4 * 4, 500), 0.03), param((500,), 0)
    w4, b4 = param((500, 10), 0.03), param((10,), 0)
    params = [w1, b1, w2, b2, w3, b3, w4, b4]

    def conv(x, w, shape):
        if impl == "im2col":
            return nn.conv2d(x, w, filter_shape=shape)
        other = {"im2col-gather": _conv_gather, "im2col-bmm": _conv_bmm, "convolve2d": _conv_signal}[impl]
        return other(x, w, shape[-1])

    index = pt.lscalar("index")
    x, y = pt.matrix("x", dtype=fx), pt.lvector("y")
    h = x.reshape((batch, 1, 28, 28))
    h = pt.tanh(nn.max_pool_2d(conv(h, w1, (20, 1, 5, 5)), (2, 2), ignore_border=True) + b1.dimshuffle("x", 0, "x", "x"))
    h = pt.tanh(nn.max_pool_2d(conv(h, w2, (50, 20, 5, 5)), (2, 2), ignore_border=True) + b2.dimshuffle("x", 0, "x", "x"))
    h = pt.tanh(h.flatten(2) @ w3 + b3)
    p = nn.softmax(h @ w4 + b4)
    cost = nn.categorical_crossentropy(p, y).mean()
    grads = pt.grad(cost, params)
    lr = np.asarray(0.05, dtype=fx)
    t0 = time.perf_counter()
    f = function([index], cost, updates=[(q, q - lr * g) for q, g in zip(params, grads)],
                 givens={x: buf_x[index * batch:(index + 1) * batch], y: buf_y[index * batch:(index + 1) * batch]},
                 mode=mode)
    return f, params, rows // batch, time.perf_counter() - t0


def measure(impl: str, mode: str, steps: int) -> dict:
    f, params, n_batches, t_function = lenet_step(impl, mode)
    first = common.timed(lambda: f(0))
    times = [common.timed(lambda i=i: f(i % n_batches)) for i in range(1, steps + 1)]
    loss = float(f(0))
    layouts = {"C" if q.get_value(borrow=True).flags.c_contiguous else "non-C" for q in params}
    return {"layouts": layouts, "impl": impl, "mode": mode, "function_s": t_function, "first_s": first, "times": times, "loss": loss}


def run(quick: bool = False, impls=DEFAULT_IMPLS, modes=MODES, steps: int | None = None) -> list[common.Table]:
    steps = steps or (5 if quick else 30)
    table = common.Table(
        "LeNet step (batch 128, conv 20+50 5x5, 2x2 max pools, 500 hidden), forward + backward + SGD",
        ["conv2d built as", "mode", "function()", "first call (compile)", "step, median (min-max)", "images/s"])
    for mode in modes:
        for impl in impls:
            r = measure(impl, mode, steps)
            med = common.median(r["times"])
            table.rows.append([impl, mode, f"{r['function_s']:.1f} s", f"{r['first_s']:.1f} s",
                               common.spread(r["times"]), f"{128 / med:,.0f}"])
            print(table.rows[-1], f"loss {r['loss']:.3f}", "param layouts", r["layouts"],
                  "slowest steps", sorted(r["times"])[-3:], flush=True)
    table.notes.append(f"{steps} timed steps after the first call; float32; BLAS threads {common.BLAS_THREADS}.")
    return [table]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--impls", default=",".join(DEFAULT_IMPLS), help=f"comma-separated subset of {IMPLS}")
    ap.add_argument("--modes", default=",".join(MODES), help=f"comma-separated subset of {MODES}")
    ap.add_argument("--steps", type=int, default=30, help="timed steps per configuration")
    ap.add_argument("--blas-threads", type=int, help="BLAS threads (read by benchmarks/__init__.py)")
    a = ap.parse_args(argv)
    info = common.machine()
    print("\n".join(f"{k}: {v}" for k, v in info.items()), flush=True)
    for t in run(impls=a.impls.split(","), modes=a.modes.split(","), steps=a.steps):
        print("\n" + t.markdown())


if __name__ == "__main__":
    main()
