"""Checkpoint files: round trip (arrays and random generators), no pickle, damage detection, rotation."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from symtrain.errors import CheckpointError
from symtrain.train import checkpoint as ckpt


class Var:
    """Stands in for a shared variable (get_value/set_value)."""

    def __init__(self, value):
        self.value = value

    def get_value(self, borrow=False):
        return self.value

    def set_value(self, value, borrow=False):
        self.value = value


def _meta(epoch=0, step=0, spe=10):
    """The smallest checkpoint.json body the schema accepts."""
    return {"epochs": max(epoch, 1), "cursor": {"epoch": epoch, "step_in_epoch": step, "steps_per_epoch": spe,
                                                "global_step": epoch * spe + step},
            "stream": {"plan": {"batch_size": 2}, "fingerprint": "f", "fields": ["x"], "rows": 20}}


def _vars():
    return {"W": Var(np.arange(6, dtype=np.float32).reshape(2, 3)), "adam/t": Var(np.asarray(4, np.int64)),
            "rng": Var(np.random.default_rng(3))}


def test_round_trip_copies_and_generators(tmp_path):
    variables = _vars()
    values = ckpt.snapshot(variables)
    variables["W"].value[0, 0] = 99  # a later step must not change the snapshot
    assert values["W"][0, 0] == 0
    expect_draw = np.random.default_rng(3).random()
    ckpt.write_checkpoint(tmp_path / "epoch-00000-step-00000001", values, _meta(0, 1))
    c = ckpt.read_checkpoint(tmp_path / "epoch-00000-step-00000001")
    fresh = {"W": Var(None), "adam/t": Var(None), "rng": Var(None)}
    ckpt.restore(c.arrays, fresh)
    assert fresh["W"].value.tolist() == [[0, 1, 2], [3, 4, 5]] and fresh["W"].value.dtype == np.float32
    assert fresh["adam/t"].value == 4 and fresh["rng"].value.random() == expect_draw
    with zipfile.ZipFile(tmp_path / "epoch-00000-step-00000001" / "arrays.npz") as z:
        assert sorted(z.namelist()) == ["a0.npy", "a1.npy"]  # plain .npy members, loadable without pickle
    meta = json.loads((tmp_path / "epoch-00000-step-00000001" / "checkpoint.json").read_text())
    assert meta["format"] == "symtrain-checkpoint" and [v["name"]
                                                        for v in meta["variables"]] == ["W", "adam/t", "rng"]


def test_damage_is_detected_and_rotation_keeps_k(tmp_path):
    values = ckpt.snapshot(_vars())
    for s in range(5):
        ckpt.write_checkpoint(tmp_path / ckpt.checkpoint_name(0, s), values, _meta(0, s))
        ckpt.prune(tmp_path, 3)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == [ckpt.checkpoint_name(0, s)
                                                                 for s in (2, 3, 4)]
    newest = tmp_path / ckpt.checkpoint_name(0, 4)
    raw = bytearray((newest / "arrays.npz").read_bytes())
    raw[60] ^= 0xFF
    (newest / "arrays.npz").write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        ckpt.read_checkpoint(newest)
    assert ckpt.load_latest(tmp_path).path.name == ckpt.checkpoint_name(0, 3)
    for p in ckpt.list_checkpoints(tmp_path):
        (p / "checkpoint.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="no usable checkpoint"):
        ckpt.load_latest(tmp_path)
    assert ckpt.load_latest(tmp_path / "missing") is None


def test_variable_mismatch_message(tmp_path):
    saved = ckpt.describe(ckpt.snapshot(_vars()))
    live = _vars()
    live["W"] = Var(np.zeros((2, 4), np.float64))
    del live["adam/t"]
    live["extra"] = Var(np.zeros(1, np.float32))
    with pytest.raises(CheckpointError) as err:
        ckpt.check_variables(saved, live, "ck")
    msg = str(err.value)
    assert "lacks: ['extra']" in msg and "model lacks: ['adam/t']" in msg
    assert "W: checkpoint float32(2, 3), model float64(2, 4)" in msg


def test_write_failure_is_a_checkpoint_error_and_leaves_nothing(tmp_path, monkeypatch):
    """An OSError while writing (here ENOSPC from savez) becomes a CheckpointError naming the target and
    the checkpoint that remains; the hidden partial directory is removed."""
    import errno

    ck = tmp_path / "checkpoints"
    ckpt.write_checkpoint(ck / ckpt.checkpoint_name(0, 1), ckpt.snapshot(_vars()), _meta())
    ckpt.write_checkpoint(ck / ckpt.BEST, ckpt.snapshot(_vars()), _meta())

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt.np, "savez", full)
    with pytest.raises(CheckpointError, match=r"epoch-00000-step-00000002: writing the checkpoint failed "
                                              r"\(No space left on device\).*epoch-00000-step-00000001 "
                                              r"remains"):
        ckpt.write_checkpoint(ck / ckpt.checkpoint_name(0, 2), ckpt.snapshot(_vars()), _meta())
    with pytest.raises(CheckpointError, match=r"best: writing .*the previous best remains"):
        ckpt.write_checkpoint(ck / ckpt.BEST, ckpt.snapshot(_vars()), _meta())
    assert sorted(p.name for p in ck.iterdir()) == [ckpt.BEST, ckpt.checkpoint_name(0, 1)]
    assert ckpt.read_checkpoint(ck / ckpt.BEST).arrays["W"].shape == (2, 3)
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(CheckpointError, match=r"a_file/checkpoints/.*no earlier checkpoint"):
        ckpt.write_checkpoint(tmp_path / "a_file" / "checkpoints" / ckpt.checkpoint_name(0, 1), {}, {})
