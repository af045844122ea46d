"""symtrain.shared / symtrain.function: what they accept, the rows each call sees, and the misuse errors."""

from __future__ import annotations

import numpy as np
import pytest

import symtrain
from symtrain.backend import function as backend_function
from symtrain.backend import pt
from symtrain.backend import shared as backend_shared
from symtrain.errors import ConfigError, StreamError
from symtrain.legacy import StreamedFunction, StreamedSharedVariable

BS = 10


@pytest.fixture(scope="module")
def arrays(tmp_path_factory):
    root = tmp_path_factory.mktemp("legacy")
    x = np.arange(250 * 3, dtype=np.float32).reshape(250, 3)
    y = (np.arange(250) % 7).astype(np.float32)
    np.save(root / "x.npy", x)
    np.save(root / "y.npy", y)
    np.save(root / "short.npy", y[:200])
    return root, x, y


def mm(root, name="x"):
    return np.load(root / f"{name}.npy", mmap_mode="r")


@pytest.fixture(scope="module")
def batch_fn(arrays):
    """f(i) -> (x batch, y batch as int32) over 250 rows in chunks of 60 (a short last chunk)."""
    root, _, _ = arrays
    xs = symtrain.shared(mm(root), chunk_rows=60, name="xs")
    ys = symtrain.shared(mm(root, "y"), chunk_rows=60, name="ys")
    index = pt.lscalar("index")
    x, y = pt.matrix("x"), pt.ivector("y")
    f = symtrain.function([index], [x * 1, y + 0], givens={
        x: xs[index * BS:(index + 1) * BS], y: pt.cast(ys, "int32")[index * BS:(index + 1) * BS]})
    yield f, xs, ys
    f.close()


def test_plain_arrays_and_scalars_are_backend_shared():
    a = np.ones((4, 2), dtype=np.float32)
    v = symtrain.shared(a, name="a", borrow=True)
    ref = backend_shared(a, name="a", borrow=True)
    assert type(v) is type(ref) and v.type == ref.type and v.name == "a"
    assert (v.get_value(borrow=True) is ref.get_value(borrow=True)
            or np.shares_memory(v.get_value(borrow=True), a))
    s = symtrain.shared(np.float32(0.5))
    assert type(s) is type(backend_shared(np.float32(0.5))) and s.get_value() == np.float32(0.5)


def test_function_without_streamed_variables_is_backend_function():
    w = backend_shared(np.float32(2.0))
    i = pt.lscalar("i")
    f = symtrain.function([i], i * w, updates=[(w, w + 1)])
    assert type(f) is type(backend_function([i], i * 2))
    assert f(3) == 6.0 and w.get_value() == 3.0


def test_memmap_becomes_a_streamed_variable(arrays):
    root, x, _ = arrays
    v = symtrain.shared(mm(root), chunk_rows=60, name="xs")
    assert isinstance(v, StreamedSharedVariable) and v.capacity == 60 and v.rows == 250
    full = v.get_value(borrow=True)
    assert isinstance(full, np.memmap) and full.shape == (250, 3) and not full.flags.writeable
    assert full.shape[0] // BS == 25  # how scripts compute n_train_batches
    assert tuple(v.shape.eval()) == (250, 3) and v.shape[0].eval() == 250
    assert np.array_equal(v.get_value(), x)  # small enough to load
    buffer = v.__dict__["_container"].value
    assert buffer.shape[0] == 0 and not isinstance(buffer, np.memmap)
    assert symtrain.shared(mm(root), chunk_rows=1000).capacity == 250  # never more than the data


def test_get_value_refused_above_max_load_bytes(arrays):
    root, _, _ = arrays
    v = symtrain.shared(mm(root), chunk_rows=60, name="big", max_load_bytes=1000)
    with pytest.raises(ConfigError, match=r"'big'.*3000 bytes, more than max_load_bytes=1000.*borrow=True"):
        v.get_value()
    assert v.get_value(borrow=True).shape == (250, 3)


def test_every_batch_holds_the_right_rows_in_any_order(batch_fn, arrays):
    f, xs, _ = batch_fn
    _, x, y = arrays
    assert isinstance(f, StreamedFunction)
    order = [*range(25), *np.random.default_rng(0).permutation(26), 24, 0, -1]
    for i in order:
        bx, by = f(i)
        s = slice(i * BS, (i + 1) * BS)
        assert np.array_equal(bx, x[s]) and np.array_equal(by, y[s].astype(np.int32))
        assert by.dtype == np.int32
    assert f(30)[0].shape == (0, 3)  # past the end: an empty batch, like the in-memory slice
    assert f(index=3)[0][0, 0] == x[30, 0]  # keyword arguments work too


def test_sequential_loop_loads_each_chunk_once_with_prefetch(batch_fn):
    f, _, _ = batch_fn
    f(0)
    group = f.group
    before = group.loads
    for _ in range(2):
        for i in range(25):
            f(i)
    # windows [0,60) [60,120) ... [240,250): 5 per pass; with the window of batch 0 already held at start,
    # the first pass loads 4 and the second 5; the next chunk was prefetched each time
    assert group.loads - before == 9
    assert group.pending == (0, 60)  # the next pass's first chunk is already on its way


def test_functions_share_buffers_and_loader(batch_fn, arrays):
    f, xs, ys = batch_fn
    _, x, _ = arrays
    index = pt.lscalar("j")
    g = symtrain.function([index], xs[index * 5:index * 5 + 5].sum() + pt.cast(ys, "int32")[index * 5].sum())
    assert g.group is f.group  # slices outside givens stream too
    assert np.isclose(g(13), x[65:70].sum() + (65 % 7))
    bx, _ = f(6)
    assert np.array_equal(bx, x[60:70])


def test_dataset_fields_and_splits_stream(make_dataset):
    ds = symtrain.open_dataset(make_dataset(rows=300, features=4))
    part = ds.split(50, 250)
    xs = symtrain.shared(part["x"], chunk_rows=40, name="px")
    ys = symtrain.shared(part["y"], chunk_rows=40, name="py")
    i = pt.lscalar("i")
    f = symtrain.function([i], [xs[i * 8:(i + 1) * 8], ys[i * 8:(i + 1) * 8]])
    want_x, want_y = np.asarray(ds["x"])[50:250], np.asarray(ds["y"])[50:250]
    for b in (0, 4, 5, 24, 3):
        bx, by = f(b)
        assert np.array_equal(bx, want_x[b * 8:(b + 1) * 8]) and np.array_equal(by, want_y[b * 8:(b + 1) * 8])
    f.close()


def test_a_memmap_backed_ndarray_streams_and_a_copy_does_not(arrays):
    root, _, _ = arrays
    view = np.asarray(mm(root), dtype=np.float32)  # what shared_dataset's numpy.asarray returns: no copy
    assert not isinstance(view, np.memmap)
    assert isinstance(symtrain.shared(view, chunk_rows=50), StreamedSharedVariable)
    copied = np.asarray(mm(root, "y"), dtype=np.int32)  # a dtype change loads the data: plain shared
    assert not isinstance(symtrain.shared(copied), StreamedSharedVariable)


def test_single_chunk_variable_can_be_used_whole(arrays):
    root, x, _ = arrays
    xs = symtrain.shared(mm(root), chunk_rows=500, name="whole")
    w = backend_shared(np.ones(3, dtype=np.float32))
    f = symtrain.function([], (xs * w).sum(axis=1).mean())
    assert np.isclose(f(), x.sum(axis=1).mean())
    f.close()


def test_one_row_index_and_offset_slices(arrays):
    root, x, _ = arrays
    xs = symtrain.shared(mm(root), chunk_rows=64, name="rows")
    i = pt.lscalar("i")
    f = symtrain.function([i], [xs[i], xs[i + 2:i + 6, 1:]])
    for k in (0, 63, 64, 70, 3, 73, 248):
        row, block = f(k)
        assert np.array_equal(row, x[k]) and np.array_equal(block, x[k + 2:k + 6, 1:])
    f.close()


# -- misuse ---------------------------------------------------------------------------------------------

@pytest.fixture
def two_chunks(arrays):
    root, _, _ = arrays
    return symtrain.shared(mm(root), chunk_rows=100, name="train_x")


def test_non_affine_index_is_refused(two_chunks):
    i = pt.lscalar("i")
    with pytest.raises(ConfigError, match=r"cannot map the slice of train_x to chunks: it multiplies"):
        symtrain.function([i], two_chunks[i * i:i * i + 10].sum())
    other = backend_shared(np.int64(3))
    with pytest.raises(ConfigError, match=r"not an input of the function"):
        symtrain.function([i], two_chunks[other * 10:other * 10 + 10].sum())
    with pytest.raises(ConfigError, match=r"step is not 1"):
        symtrain.function([i], two_chunks[i * 10:i * 10 + 10:2].sum())
    with pytest.raises(ConfigError, match=r"is used whole.*fancy indexing"):
        symtrain.function([i], two_chunks[pt.arange(i, i + 3)].sum())


def test_whole_use_of_a_multi_chunk_variable_is_refused(two_chunks):
    x = pt.matrix("x")
    with pytest.raises(ConfigError, match=r"'train_x' \(250 rows, chunks of 100\) is used whole"):
        symtrain.function([], x.sum(), givens={x: two_chunks})


def test_updating_a_streamed_variable_is_refused(two_chunks):
    i = pt.lscalar("i")
    with pytest.raises(ConfigError, match=r"updates: 'train_x' is a streamed"):
        symtrain.function([i], two_chunks[i:i + 1].sum(), updates=[(two_chunks, two_chunks * 2)])


def test_mismatched_row_counts_are_refused(arrays, two_chunks):
    root, _, _ = arrays
    short = symtrain.shared(mm(root, "short"), chunk_rows=100, name="train_y")
    i = pt.lscalar("i")
    with pytest.raises(ConfigError, match=r"same number of rows") as err:
        symtrain.function([i], two_chunks[i * 10:i * 10 + 10].sum() + short[i * 10:i * 10 + 10].sum())
    assert "'train_x': 250" in str(err.value) and "'train_y': 200" in str(err.value)


def test_a_batch_wider_than_a_chunk_is_refused_at_call(two_chunks):
    i = pt.lscalar("i")
    f = symtrain.function([i], two_chunks[i * 150:(i + 1) * 150].sum())
    with pytest.raises(ConfigError, match=r"needs rows \[0, 150\).*more than the 100 rows of a chunk"):
        f(0)


def test_bad_arguments(arrays):
    root, _, _ = arrays
    with pytest.raises(ConfigError, match="chunk_rows must be a positive integer"):
        symtrain.shared(mm(root), chunk_rows=0)
    with pytest.raises(ConfigError, match="not C-contiguous"):
        symtrain.shared(mm(root)[:, 1:])
    with pytest.raises(ConfigError, match=r"\['strict'\] are not supported"):
        symtrain.shared(mm(root), strict=True)
    v = symtrain.shared(mm(root), chunk_rows=100, name="v")
    with pytest.raises(ConfigError, match="give it a read-only memmap"):
        v.set_value(np.zeros((5, 3), dtype=np.float32))
    i = pt.lscalar("i")
    f = symtrain.function([i], v[i * 10:i * 10 + 10].sum())
    with pytest.raises(ConfigError, match="must be one integer"):
        f(1.5)
    f.close()


def test_set_value_points_at_new_file_data(arrays):
    root, x, y = arrays
    v = symtrain.shared(mm(root, "short"), chunk_rows=64, name="sv")
    i = pt.lscalar("i")
    f = symtrain.function([i], v[i * 10:(i + 1) * 10])
    assert np.array_equal(f(2), y[20:30])
    v.set_value(mm(root, "y"))
    assert v.rows == 250 and v.shape[0].eval() == 250
    assert np.array_equal(f(22), y[220:230])
    f.close()


# -- generator-backed variables -------------------------------------------------------------------------

def chunks_of(a, size):
    def gen():
        for s in range(0, len(a), size):
            yield a[s:s + size]
    return gen


def test_generator_backed_variable_streams_sequentially(arrays):
    _, x, _ = arrays
    v = symtrain.shared(chunks_of(x, 33), chunk_rows=50, name="gen", rows=250)
    assert v.get_value(borrow=True).shape == (250, 3) and v.shape[0].eval() == 250
    i = pt.lscalar("i")
    f = symtrain.function([i], v[i * BS:(i + 1) * BS])
    for _epoch in range(2):  # the second pass restarts the callable
        for b in range(25):
            assert np.array_equal(f(b), x[b * BS:(b + 1) * BS])
    assert np.array_equal(f(3), x[30:40])  # going back restarts too (slow, documented)
    with pytest.raises(ConfigError, match="generator-backed: get_value"):
        v.get_value()


def test_generator_rows_discovered_and_one_shot_generators(arrays):
    _, x, _ = arrays
    v = symtrain.shared(iter([x[:100], x[100:250]]), chunk_rows=50, name="once")
    with pytest.raises(ConfigError, match=r"'once' is generator-backed.*pass rows=N"):
        _ = v.get_value(borrow=True).shape
    i = pt.lscalar("i")
    f = symtrain.function([i], v[i * BS:(i + 1) * BS])
    got = np.concatenate([f(b) for b in range(26)])
    assert np.array_equal(got, x) and v.rows == 250  # discovered at the end; batch 25 is empty
    with pytest.raises(StreamError, match="one-shot generator and cannot go back"):
        f(0)


def test_a_failed_read_is_a_stream_error_and_the_next_call_recovers(tmp_path):
    from symtrain.errors import DatasetError
    data = np.arange(200 * 2, dtype=np.float32).reshape(200, 2)
    np.save(tmp_path / "d.npy", data)
    v = symtrain.shared(np.load(tmp_path / "d.npy", mmap_mode="r"), chunk_rows=50, name="d")
    i = pt.lscalar("i")
    f = symtrain.function([i], v[i * 10:(i + 1) * 10])
    assert np.array_equal(f(0), data[:10])
    raw = (tmp_path / "d.npy").read_bytes()
    (tmp_path / "d.npy").write_bytes(raw[:len(raw) - 600])  # the file shrinks under the mapping's feet
    with pytest.raises(StreamError) as err:
        for b in range(5, 20):
            f(b)
    assert isinstance(err.value.__cause__, DatasetError) and "short read: the file shrank" in str(err.value)
    (tmp_path / "d.npy").write_bytes(raw)  # the same bytes again, but a rewritten file: still refused
    with pytest.raises(StreamError, match="replaced or modified"):
        f(19)
    v.set_value(np.load(tmp_path / "d.npy", mmap_mode="r"))  # pointing it at the file again recovers
    assert np.array_equal(f(19), data[190:200]) and np.array_equal(f(3), data[30:40])
    f.close()


def test_generator_batches_straddling_a_window_are_refused(arrays):
    _, x, _ = arrays
    v = symtrain.shared(chunks_of(x, 100), chunk_rows=45, name="g45", rows=250)
    i = pt.lscalar("i")
    f = symtrain.function([i], v[i * BS:(i + 1) * BS])
    assert np.array_equal(f(3), x[30:40])
    with pytest.raises(ConfigError, match=r"rows \[40, 50\) of generator-backed 'g45', which straddle"):
        f(4)


def test_unused_inputs_keep_the_backend_behaviour(two_chunks):
    from symtrain.backend import graph
    i, unused = pt.lscalar("i"), pt.lscalar("unused")
    with pytest.raises(graph.compile.UnusedInputError):
        symtrain.function([i, unused], two_chunks[i * 10:(i + 1) * 10].sum())
    f = symtrain.function([i, unused], two_chunks[i * 10:(i + 1) * 10].sum(), on_unused_input="ignore")
    assert np.isclose(f(1, 7), np.asarray(two_chunks.get_value(borrow=True))[10:20].sum())
    f.close()


def test_process_loader(arrays):
    root, x, y = arrays
    xs = symtrain.shared(mm(root), chunk_rows=60, name="pxs")
    ys = symtrain.shared(mm(root, "y"), chunk_rows=60, name="pys")
    i = pt.lscalar("i")
    f = symtrain.function([i], [xs[i * BS:(i + 1) * BS], ys[i * BS:(i + 1) * BS]], loader="process")
    for b in [*range(25), 7, 0, 24, 13]:
        bx, by = f(b)
        assert np.array_equal(bx, x[b * BS:(b + 1) * BS]) and np.array_equal(by, y[b * BS:(b + 1) * BS])
    with pytest.raises(ConfigError, match="already loaded by a process loader"):
        symtrain.function([i], xs[i * BS:(i + 1) * BS].sum() + ys[i * BS].sum(), loader="thread")
    f.close()  # releases the shared memory; the buffers were emptied first, the next call reloads
    assert xs.__dict__["_container"].value.shape[0] == 0
    assert np.array_equal(f(3)[0], x[30:40])
    f.close()
    with pytest.raises(ConfigError, match="loader must be 'thread' or 'process'"):
        symtrain.function([i], xs[i:i + 1].sum(), loader="fork")
