"""indexmap: which row selections of streamed variables are found, their affine bounds, the rows they read."""

from __future__ import annotations

import numpy as np
import pytest

from symtrain.backend import pt
from symtrain.backend import shared as backend_shared
from symtrain.errors import ConfigError
from symtrain.legacy.indexmap import Affine, affine_of, find_row_slices

X = backend_shared(np.zeros((10, 3), dtype=np.float32), name="X")
Y = backend_shared(np.zeros(10, dtype=np.float32), name="Y")
OTHER = backend_shared(np.zeros((10, 3), dtype=np.float32), name="OTHER")
IDX, J = pt.lscalar("i"), pt.iscalar("j")


def streamed(v):
    return v is X or v is Y


def one(expr, inputs=(IDX, J)):
    slices, whole = find_row_slices([expr], list(inputs), streamed)
    assert len(slices) == 1 and not whole
    return slices[0]


@pytest.mark.parametrize("expr, a, b, d", [
    (lambda: X[IDX * 20:(IDX + 1) * 20], 20, 0, 20),
    (lambda: X[IDX * 20:IDX * 20 + 20], 20, 0, 20),
    (lambda: X[20 * IDX + 5:20 * IDX + 25], 20, 5, 25),
    (lambda: X[(IDX - 1) * 4:IDX * 4 - 0], 4, -4, 0),
    (lambda: X[-IDX:], -1, 0, None),
    (lambda: pt.cast(Y, "int32")[IDX * 3:(IDX + 1) * 3], 3, 0, 3),
    (lambda: (X * 2 + OTHER[0])[IDX * 2:(IDX + 1) * 2, 1:], 2, 0, 2),
    (lambda: X[pt.cast(J, "int64") * 6:(J + 1) * 6], 6, 0, 6),
])
def test_affine_bounds(expr, a, b, d):
    sl = one(expr())
    assert sl.kind == "slice" and sl.start.a == a and sl.start.b == b
    if d is None:
        assert sl.stop is None
    else:
        assert sl.stop.a == a and sl.stop.b == d


def test_rows_follow_python_slice_semantics_on_the_whole_data():
    sl = one(X[IDX * 4:(IDX + 1) * 4])
    assert sl.rows({IDX: 0}, 10) == (0, 4)
    assert sl.rows({IDX: 2}, 10) == (8, 10)  # the partial last batch
    assert sl.rows({IDX: 3}, 10) == (10, 10)  # past the end: empty
    rows = np.arange(10)
    for i in range(-4, 5):  # every range agrees with numpy slicing of the whole data (negatives included)
        s, e = sl.rows({IDX: i}, 10)
        assert np.array_equal(rows[s:e], rows[i * 4:(i + 1) * 4])
    row = one(X[IDX])
    assert row.kind == "index" and row.rows({IDX: -1}, 10) == (9, 10)
    with pytest.raises(IndexError, match="row 10 is out of bounds"):
        row.rows({IDX: 10}, 10)


def test_constant_and_omitted_bounds():
    sl = one(X[3:7])
    assert sl.start == Affine(None, 0, 3) and sl.rows({}, 10) == (3, 7)
    assert one(X[:IDX]).rows({IDX: 5}, 10) == (0, 5)


def test_other_variables_and_whole_uses():
    slices, whole = find_row_slices([X.sum() + OTHER[IDX].sum() + Y[IDX * 2:IDX * 2 + 2].sum()], [IDX],
                                    streamed)
    assert [s.streamed for s in slices] == [(Y,)] and whole == [X]
    slices, whole = find_row_slices([X.T[IDX * 2:IDX * 2 + 2].sum()], [IDX], streamed)
    assert not slices and whole == [X]  # a transpose does not keep rows on axis 0


@pytest.mark.parametrize("expr, why", [
    (lambda: X[IDX * IDX:IDX * IDX + 1], "multiplies the index by itself"),
    (lambda: X[IDX * J:IDX * J + 1], "multiplies the index by itself"),
    (lambda: X[IDX:J + IDX], "combines two different inputs"),
    (lambda: X[IDX // 2:IDX // 2 + 1], "IntDiv"),
    (lambda: X[IDX * 2:IDX * 2 + 4:2], "step is not 1"),
    (lambda: X[backend_shared(np.int64(1)) * 2:4], "not an input of the function"),
])
def test_refused_bounds(expr, why):
    with pytest.raises(ConfigError, match=f"cannot map the slice of X to chunks: .*{why}"):
        find_row_slices([expr()], [IDX, J], streamed)


def test_float_input_is_not_an_index():
    f = pt.dscalar("f")
    with pytest.raises(Exception, match="not a scalar integer"):
        affine_of(f, [f])
