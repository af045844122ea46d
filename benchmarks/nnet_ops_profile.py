"""Where a LeNet step's time goes: CPU time of each conv/pool Op kernel against PyTorch's, LeNet shapes.

Each symtrain Op is compiled alone (default Numba mode, static input shapes as in the LeNet step) and
timed by ``time.process_time`` (CPU seconds: robust to other processes' load on a shared machine); the
PyTorch rows time the same computation (backward through ``aten.convolution_backward`` and autograd).
The rest of a step (dense layers, tanh, softmax, bias sums, updates) is the step's CPU time minus these.

    .venv/bin/python -m benchmarks.nnet_ops_profile
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from benchmarks import common


def cpu_ms(fn: Callable[[], object], repeats: int = 15) -> float:
    """Median CPU milliseconds of ``fn()`` after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        c0 = time.process_time()
        fn()
        times.append(time.process_time() - c0)
    return common.median(times) * 1e3


def symtrain_rows(rng: np.random.Generator) -> list[tuple[str, float]]:
    """CPU ms of each Op kernel in the LeNet step."""
    from symtrain.backend import function, pt
    from symtrain.nnet.conv_ops import Conv2d, Conv2dGradInputs, Conv2dGradWeights
    from symtrain.nnet.pool_ops import MaxPoolGrad, Pool

    def arr(shape):
        return rng.standard_normal(shape).astype(np.float32)

    def var(a):
        return pt.TensorType("float32", shape=a.shape)()

    props = ("valid", (1, 1), True, (1, 1))
    rows = []
    for layer, (img, kern, top) in {
        "conv1": (arr((128, 1, 28, 28)), arr((20, 1, 5, 5)), arr((128, 20, 24, 24))),
        "conv2": (arr((128, 20, 12, 12)), arr((50, 20, 5, 5)), arr((128, 50, 8, 8))),
    }.items():
        i, k, t = var(img), var(kern), var(top)
        fwd = function([i, k], Conv2d(*props)(i, k))
        gw = function([i, t], Conv2dGradWeights(*props)(i, t, kern.shape[2:]))
        rows += [
            (f"{layer} forward", cpu_ms(lambda f=fwd, a=img, b=kern: f(a, b))),
            (f"{layer} weight gradient", cpu_ms(lambda f=gw, a=img, b=top: f(a, b))),
        ]
        if layer == "conv2":  # the first layer's input gradient is never needed
            gi = function([k, t], Conv2dGradInputs(*props)(k, t, img.shape[2:]))
            rows.append((f"{layer} input gradient", cpu_ms(lambda f=gi, a=kern, b=top: f(a, b))))
    for layer, shape in {"pool1": (128, 20, 24, 24), "pool2": (128, 50, 8, 8)}.items():
        x = arr(shape)
        xv = var(x)
        pool = Pool((2, 2), None, (0, 0), True, "max")
        fwd = function([xv], pool(xv))
        out = fwd(x)
        m, g = var(out), var(out)
        grad = function([xv, m, g], MaxPoolGrad((2, 2), None, (0, 0), True)(xv, m, g))
        rows += [
            (f"{layer} forward", cpu_ms(lambda f=fwd, a=x: f(a))),
            (f"{layer} gradient", cpu_ms(lambda f=grad, a=x, b=out: f(a, b, b))),
        ]
    return rows


def torch_rows(rng: np.random.Generator) -> list[tuple[str, float]]:
    """CPU ms of the same computations in PyTorch (1 thread)."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(1)

    def arr(shape):
        return torch.from_numpy(rng.standard_normal(shape).astype(np.float32))

    rows = []
    for layer, (img, kern, top) in {
        "conv1": (arr((128, 1, 28, 28)), arr((20, 1, 5, 5)), arr((128, 20, 24, 24))),
        "conv2": (arr((128, 20, 12, 12)), arr((50, 20, 5, 5)), arr((128, 50, 8, 8))),
    }.items():

        def backward(mask, img=img, kern=kern, top=top):
            return torch.ops.aten.convolution_backward(
                top, img, kern, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1, mask
            )

        rows += [
            (f"{layer} forward", cpu_ms(lambda a=img, b=kern: F.conv2d(a, b))),
            (f"{layer} weight gradient", cpu_ms(lambda: backward([False, True, False]))),
        ]
        if layer == "conv2":
            rows.append((f"{layer} input gradient", cpu_ms(lambda: backward([True, False, False]))))
    for layer, shape in {"pool1": (128, 20, 24, 24), "pool2": (128, 50, 8, 8)}.items():
        x = arr(shape).requires_grad_()
        fwd = cpu_ms(lambda a=x: F.max_pool2d(a, 2))
        y = F.max_pool2d(x, 2)
        g = torch.ones_like(y)
        both = cpu_ms(lambda a=x, gg=g: torch.autograd.grad(F.max_pool2d(a, 2), a, gg))
        rows += [(f"{layer} forward", fwd), (f"{layer} gradient", max(both - fwd, 0.0))]
    return rows


def main() -> None:
    rng = np.random.default_rng(0)
    ours = symtrain_rows(rng)
    theirs = dict(torch_rows(rng))
    table = common.Table(
        "LeNet conv/pool pieces, CPU ms per call (batch 128, float32, 1 thread)",
        ["piece", "symtrain Op (Numba)", "PyTorch", "ratio"],
    )
    for name, ms in ours:
        table.rows.append([name, f"{ms:.2f}", f"{theirs[name]:.2f}", f"{ms / max(theirs[name], 1e-9):.2f}x"])
    total_ours, total_theirs = sum(ms for _, ms in ours), sum(theirs.values())
    table.rows.append(
        ["total", f"{total_ours:.2f}", f"{total_theirs:.2f}", f"{total_ours / total_theirs:.2f}x"]
    )
    print("\n".join(f"{k}: {v}" for k, v in common.machine().items()))
    common.show(table)


if __name__ == "__main__":
    main()
