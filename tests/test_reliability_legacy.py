"""Issue 14 rule 6 for the legacy layer: a value streamed by ``symtrain.shared`` is never silently wrong.

Outside ``symtrain.function`` a graph over a streamed variable cannot be compiled or evaluated (it would read
whatever chunk is loaded); a file replaced under it is refused at the next load; a large in-memory array
gets one warning saying how to stream it.
"""

from __future__ import annotations

import os
import threading
import warnings

import numpy as np
import pytest

import symtrain
from symtrain.backend import ancestors, function, pt
from symtrain.errors import ConfigError, StreamError
from symtrain.legacy import streamed

ROWS, COLS = 1000, 4


@pytest.fixture
def ds(tmp_path):
    data = np.arange(ROWS * COLS, dtype=np.float32).reshape(ROWS, COLS)
    np.save(tmp_path / "x.npy", data)
    var = symtrain.shared(np.load(tmp_path / "x.npy", mmap_mode="r"), chunk_rows=300, name="ds")
    return var, data, tmp_path / "x.npy"


def _loop(var):
    i = pt.lscalar("i")
    f = symtrain.function([i], var[i * 100:(i + 1) * 100].sum())
    return f


@pytest.mark.parametrize("expr", [
    lambda v, i: v[0:100].shape,                     # gave [0, 100] (the empty buffer)
    lambda v, i: v[0:3],                             # gave rows 9000-9002 after some calls
    lambda v, i: v[i * 100:(i + 1) * 100].sum(),     # read whatever chunk was loaded
    lambda v, i: v.T @ v,                            # the variable whole
    lambda v, i: (v * 2)[i],                         # through an elementwise op
])
def test_graphs_over_a_streamed_variable_refuse_the_graph_library_compile(ds, expr):
    var, data, _ = ds
    f = _loop(var)
    assert f(9) == data[900:1000].sum()  # the buffer now holds a late chunk
    i = pt.lscalar("i")
    out = expr(var, i)
    with pytest.raises(ConfigError, match=r"'ds' is streamed.*symtrain.function.*get_value\(borrow=True\)"):
        function([i], out, on_unused_input="ignore")
    with pytest.raises(ConfigError, match="is streamed"):
        out.eval({i: 0}) if i in set(ancestors([out])) else out.eval()
    f.close()


def test_whole_shape_and_memmap_reads_stay_right(ds):
    var, data, _ = ds
    f = _loop(var)
    f(9)
    assert tuple(var.shape.eval()) == (ROWS, COLS)
    np.testing.assert_array_equal(var.get_value(borrow=True)[0:3], data[0:3])
    clone = var.clone()
    with pytest.raises(ConfigError, match="is streamed"):
        (clone[0:3] + 0).eval()
    assert f(0) == data[0:100].sum()  # symtrain.function still computes the right rows
    f.close()


@pytest.mark.parametrize("how", ["replace", "rewrite"])
def test_file_replaced_mid_loop_is_refused(ds, how):
    var, data, path = ds
    f = _loop(var)
    assert f(0) == data[:100].sum()
    other = data[::-1].copy()
    if how == "replace":  # a new file renamed over the old name (same size)
        np.save(path.with_name("new.npy"), other)
        os.replace(path.with_name("new.npy"), path)
    else:  # the same file rewritten in place
        with open(path, "r+b") as fh:
            fh.seek(-other.nbytes, os.SEEK_END)
            fh.write(other.tobytes())
    with pytest.raises(StreamError, match="replaced or modified"):
        for b in range(10):
            f(b)
    f.close()


def test_large_in_memory_array_warns_once(tmp_path, monkeypatch):
    monkeypatch.setattr(streamed, "LARGE_IN_MEMORY_BYTES", 1 << 20)
    monkeypatch.setattr(streamed, "_warned_in_memory", False)
    np.save(tmp_path / "f.npy", np.zeros((100_000, 4), np.float32))
    mm = np.load(tmp_path / "f.npy", mmap_mode="r")
    with pytest.warns(streamed.InMemoryDataWarning,
                      match=r"float64\[100000, 4\] array of 3 MiB.*mmap_mode='r'"):
        symtrain.shared(np.asarray(mm, dtype="float64"))  # the tutorial's numpy.asarray(..., dtype=floatX)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        symtrain.shared(np.zeros((300_000,), np.float64))  # once per process
        symtrain.shared(mm)  # a memmap is streamed: no warning


def test_small_in_memory_array_does_not_warn(monkeypatch):
    monkeypatch.setattr(streamed, "_warned_in_memory", False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        symtrain.shared(np.zeros((10, 3)))


def test_fifo_swapped_in_for_the_file_fails_fast_and_close_is_bounded(ds):
    """Rule 3 and 5: a FIFO at the file's name neither blocks the next load nor the close."""
    var, data, path = ds
    f = _loop(var)
    assert f(0) == data[:100].sum()  # also prefetches the next chunk
    path.unlink()
    os.mkfifo(path)
    box: list = []

    def run() -> None:
        try:
            for b in range(3, 10):
                f(b)
        except StreamError as exc:
            box.append(exc)
        f.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(300)  # hang detection only: a blocked open or join would never return
    if t.is_alive():
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("a load or the close blocked on the FIFO")
    assert box and "replaced" in str(box[0]), box


def test_givens_over_a_streamed_variable_need_symtrain_function(ds):
    """The Theano tutorial's form, compiled by the graph library: refused; by symtrain.function: right
    rows."""
    var, data, _ = ds
    i, x = pt.lscalar("i"), pt.matrix("x", dtype="float32")
    with pytest.raises(ConfigError, match="'ds' is streamed"):
        function([i], x.sum(), givens={x: var[i * 100:(i + 1) * 100]})
    f = symtrain.function([i], x.sum(), givens={x: var[i * 100:(i + 1) * 100]})
    assert [f(k) for k in (7, 2)] == [data[700:800].sum(), data[200:300].sum()]
    f.close()
