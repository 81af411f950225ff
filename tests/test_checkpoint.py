"""Checkpoint files: atomic writes, the last_checkpoint pointer, weights_only loading, RNG states."""
import os
import random

import numpy as np
import pytest
import torch

from utils import checkpoint as ckpt
from utils.misc import epoch_seed, get_rng_state, resolve_amp, set_rng_state, set_seed


def _state(value):
    return {"model": {"w": torch.full((3,), float(value))}, "epoch": value, "config": "A: 1\n"}


def test_save_and_find_last(tmp_path):
    out = str(tmp_path)
    assert ckpt.find_last_checkpoint(out) is None
    ckpt.save_checkpoint(out, 1, _state(1))
    path = ckpt.save_checkpoint(out, 2, _state(2))
    assert path == os.path.join(out, "checkpoint_epoch2.pth")
    assert (tmp_path / "last_checkpoint").read_text().strip() == "checkpoint_epoch2.pth"
    assert ckpt.find_last_checkpoint(out) == path
    loaded = ckpt.load_checkpoint(path)
    assert loaded["epoch"] == 2 and torch.equal(loaded["model"]["w"], torch.full((3,), 2.0))
    # No temporary files left behind.
    assert sorted(os.listdir(out)) == ["checkpoint_epoch1.pth", "checkpoint_epoch2.pth", "last_checkpoint"]


def test_find_last_without_pointer(tmp_path):
    out = str(tmp_path)
    ckpt.save_checkpoint(out, 3, _state(3))
    ckpt.save_checkpoint(out, 10, _state(10))
    os.remove(tmp_path / "last_checkpoint")
    assert ckpt.find_last_checkpoint(out).endswith("checkpoint_epoch10.pth")


def test_failing_save_keeps_previous(tmp_path, monkeypatch):
    out = str(tmp_path)
    first = ckpt.save_checkpoint(out, 1, _state(1))
    before = (tmp_path / "checkpoint_epoch1.pth").read_bytes()
    real_save = torch.save

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"partial bytes")  # a write that dies half way
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_checkpoint(out, 2, _state(2))
    # Overwriting an existing checkpoint fails the same way and leaves it intact.
    with pytest.raises(OSError):
        ckpt.save_checkpoint(out, 1, _state(5))
    monkeypatch.setattr(torch, "save", real_save)
    assert sorted(os.listdir(out)) == ["checkpoint_epoch1.pth", "last_checkpoint"]
    assert (tmp_path / "checkpoint_epoch1.pth").read_bytes() == before
    assert ckpt.find_last_checkpoint(out) == first
    assert ckpt.load_checkpoint(first)["epoch"] == 1


def test_load_errors_name_key_and_path(tmp_path):
    with pytest.raises(ckpt.CheckpointError, match="TEST.WEIGHT file not found: .*nope.pth"):
        ckpt.load_checkpoint(str(tmp_path / "nope.pth"), key="TEST.WEIGHT")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ckpt.CheckpointError, match="not a loadable checkpoint"):
        ckpt.load_checkpoint(str(bad))


def test_rng_state_roundtrip_weights_only(tmp_path):
    set_seed(123)
    random.random(), np.random.rand(), torch.rand(1)
    state = get_rng_state()
    ckpt.atomic_torch_save({"rng": state}, str(tmp_path / "rng.pth"))
    expected = (random.random(), float(np.random.rand()), np.random.randn(), torch.rand(3))
    set_seed(999)
    set_rng_state(ckpt.load_checkpoint(str(tmp_path / "rng.pth"))["rng"])
    got = (random.random(), float(np.random.rand()), np.random.randn(), torch.rand(3))
    assert got[:3] == expected[:3] and torch.equal(got[3], expected[3])


def test_epoch_seed_and_amp_on_cpu():
    assert epoch_seed(1111, 3) == epoch_seed(1111, 3)
    assert len({epoch_seed(1111, e, r) for e in range(5) for r in range(3)}) == 15
    for mode in ("auto", "off", "fp16", "bf16"):
        amp = resolve_amp(mode, torch.device("cpu"))
        assert not amp.enabled and not amp.use_scaler and amp.name == "off"
