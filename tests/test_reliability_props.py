"""Property tests (hypothesis) for checkpoint round trips: arbitrary sets of named arrays (every supported
dtype, zero-size and 0-d included), random generators and cursor dicts survive write -> read bit for bit,
and snapshot -> write -> read -> restore puts the same values back into shared variables.

(Plans: tests/test_plan.py; dataset writer/reader round trips: tests/test_storage_props.py.)
"""

from __future__ import annotations

import itertools
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from symtrain.train import checkpoint as ckpt

SETTINGS = settings(max_examples=30, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
DTYPES = ["float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint32", "uint64",
          "bool",
          ">f4", ">i8", "complex64"]
SHARED_DTYPES = [d for d in DTYPES if not d.startswith(">")]  # PyTensor refuses non-native byte orders
_counter = itertools.count()


@st.composite
def arrays(draw, dtypes=DTYPES):
    dtype = np.dtype(draw(st.sampled_from(dtypes)))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5))
    return draw(hnp.arrays(dtype, shape))  # NaN, inf, -0.0 and subnormals included for floats


NAMES = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=24)
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.floats(allow_nan=False,
                                                                           allow_infinity=False)
    | st.text(max_size=10),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=8), kids, max_size=3),
    max_leaves=10)
STREAM = {"plan": {"batch_size": 1}, "fingerprint": "f", "fields": ["x"], "rows": 1}


@st.composite
def cursors(draw):
    """A cursor the checkpoint schema accepts: global_step = epoch * steps_per_epoch + step_in_epoch."""
    spe = draw(st.integers(1, 10**6))
    c = {"epoch": draw(st.integers(0, 10**6)), "step_in_epoch": draw(st.integers(0, spe)),
         "steps_per_epoch": spe}
    c["global_step"] = c["epoch"] * spe + c["step_in_epoch"]
    if draw(st.booleans()):
        c["extra"] = draw(JSONISH)
    return c


def _meta(cursor=None):
    cursor = cursor or {"epoch": 0, "step_in_epoch": 0, "steps_per_epoch": 1, "global_step": 0}
    return {"epochs": max(1, cursor["epoch"]), "cursor": cursor, "stream": STREAM}


CURSORS = cursors()


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("ckpt_props")


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@SETTINGS
@given(st.dictionaries(NAMES, arrays(), min_size=0, max_size=6), CURSORS, JSONISH)
def test_write_read_round_trip(scratch, values, cursor, extra):
    target = scratch / f"run{next(_counter)}" / ckpt.checkpoint_name(cursor["epoch"], cursor["step_in_epoch"])
    try:
        ckpt.write_checkpoint(target, values, {**_meta(cursor), "extra": extra})
        c = ckpt.read_checkpoint(target)
        assert set(c.arrays) == set(values)
        for name, v in values.items():
            assert _same(c.arrays[name], v), name
        assert c.cursor == cursor and c.meta["extra"] == extra
        assert ckpt.load_latest(target.parent).path == target
    finally:
        shutil.rmtree(target.parent, ignore_errors=True)


@SETTINGS
@given(st.lists(arrays(SHARED_DTYPES), min_size=1, max_size=4), st.integers(0, 2**32 - 1))
def test_snapshot_restore_round_trip_through_disk(scratch, values, seed):
    """Shared variables (arrays and a random generator) -> snapshot -> disk -> restore into fresh variables:
    equal values, and the generator continues with the same draws."""
    from symtrain.backend import shared

    rng = np.random.default_rng(seed)
    live = {f"p{i}": shared(v.copy(), name=f"p{i}") for i, v in enumerate(values)}
    live["rng"] = shared(rng, name="rng")
    target = scratch / f"snap{next(_counter)}" / ckpt.checkpoint_name(0, 0)
    try:
        ckpt.write_checkpoint(target, ckpt.snapshot(live), _meta())
        expected_draws = live["rng"].get_value(borrow=True).random(5)  # advances the live generator
        fresh = {f"p{i}": shared(np.zeros_like(v), name=f"p{i}") for i, v in enumerate(values)}
        fresh["rng"] = shared(np.random.default_rng(0), name="rng")
        c = ckpt.read_checkpoint(target)
        ckpt.check_variables(ckpt.describe(c.arrays), fresh, target)
        ckpt.restore(c.arrays, fresh)
        for i, v in enumerate(values):
            assert _same(fresh[f"p{i}"].get_value(), v)
        assert np.array_equal(fresh["rng"].get_value(borrow=True).random(5), expected_draws)
    finally:
        shutil.rmtree(target.parent, ignore_errors=True)


@SETTINGS
@given(st.dictionaries(NAMES, arrays(), min_size=1, max_size=4), st.data())
def test_any_damage_to_arrays_is_detected(scratch, values, data):
    """Flipping, truncating or extending arrays.npz is always a CheckpointError (sha256), never wrong
    values."""
    target = scratch / f"dmg{next(_counter)}" / ckpt.checkpoint_name(1, 0)
    try:
        ckpt.write_checkpoint(target, values, _meta())
        f = target / ckpt.ARRAYS
        raw = bytearray(f.read_bytes())
        how = data.draw(st.sampled_from(["flip", "truncate", "extend"]))
        if how == "flip":
            i = data.draw(st.integers(0, len(raw) - 1))
            raw[i] ^= data.draw(st.integers(1, 255))
        elif how == "truncate":
            raw = raw[:data.draw(st.integers(0, len(raw) - 1))]
        else:
            raw += data.draw(st.binary(min_size=1, max_size=16))
        f.write_bytes(bytes(raw))
        with pytest.raises(ckpt.CheckpointError, match=r"arrays.npz"):
            ckpt.read_checkpoint(target)
    finally:
        shutil.rmtree(target.parent, ignore_errors=True)
