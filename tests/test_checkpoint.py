"""Checkpoint files: atomic writes, the last_checkpoint pointer, weights_only loading, RNG states."""
import logging
import os
import random

import numpy as np
import pytest
import torch

from utils import checkpoint as ckpt
from utils.misc import (DATA_STREAM, TRAINING_STREAM, epoch_seed, get_rng_state, resolve_amp, set_rng_state,
                        set_seed)


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


def test_epoch_seed_depends_only_on_its_arguments():
    """The seed of an epoch is what makes a resumed run repeat an uninterrupted one, so it must not
    depend on the process (hash seed, earlier draws of the global RNGs) nor collide between epochs,
    ranks, base seeds or streams."""
    expected = {(1111, 3, 0, TRAINING_STREAM): 3140650550152898998,
                (1111, 3, 2, DATA_STREAM): 5840464697858170125}
    for state in (0, 1):  # whatever the global RNGs did before, the same values, and no draw taken
        set_seed(state)
        random.random(), np.random.rand(), torch.rand(1)
        before = (random.getstate(), np.random.get_state(), torch.get_rng_state())
        assert {args: epoch_seed(*args) for args in expected} == expected
        after = (random.getstate(), np.random.get_state(), torch.get_rng_state())
        assert after[0] == before[0] and torch.equal(after[2], before[2])
        assert np.array_equal(after[1][1], before[1][1]) and after[1][2] == before[1][2]  # keys, position
    seeds = [epoch_seed(s, e, r, stream) for s in (0, 1, 1111) for e in range(5) for r in range(3)
             for stream in (DATA_STREAM, TRAINING_STREAM)]
    assert len(set(seeds)) == len(seeds) == 90
    assert all(0 <= x < 2 ** 63 for x in seeds)  # a valid torch.manual_seed


def test_amp_on_cpu_is_off_unless_bf16():
    for mode in ("auto", "off", "fp16"):
        amp = resolve_amp(mode, torch.device("cpu"))
        assert not amp.enabled and not amp.use_scaler and amp.name == "off"
    amp = resolve_amp("bf16", torch.device("cpu"))  # CPU autocast, asked for by name only
    assert (amp.dtype, amp.use_scaler, amp.device_type) == (torch.bfloat16, False, "cpu")


def _train_state(epoch):
    """What ``load_last_checkpoint`` needs of a training checkpoint (utils.checkpoint.TRAINING_KEYS)."""
    return {"model": {"w": torch.full((2,), float(epoch))}, "optimizer": {"state": {}, "param_groups": []},
            "scheduler": {}, "epoch": epoch}


def _warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_resume_falls_back_to_the_newest_loadable_checkpoint(tmp_path, caplog):
    out = str(tmp_path)
    for epoch in (1, 2, 3):
        ckpt.save_checkpoint(out, epoch, _train_state(epoch))
    path, state = ckpt.load_last_checkpoint(out)
    assert path.endswith("checkpoint_epoch3.pth") and state["epoch"] == 3 and _warnings(caplog) == []
    # the named checkpoint truncated (disk trouble, a copy cut short): epoch 2, with warnings naming both
    data = (tmp_path / "checkpoint_epoch3.pth").read_bytes()
    (tmp_path / "checkpoint_epoch3.pth").write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING, logger="utils.checkpoint"):
        path, state = ckpt.load_last_checkpoint(out)
    assert path.endswith("checkpoint_epoch2.pth") and state["epoch"] == 2
    text = " ".join(_warnings(caplog))
    assert "checkpoint_epoch3.pth" in text and "newest loadable checkpoint" in text
    # the named file gone, and a loadable file that is no training checkpoint in between
    os.remove(tmp_path / "checkpoint_epoch3.pth")
    torch.save({"model": {}}, tmp_path / "checkpoint_epoch3.pth")
    (tmp_path / "last_checkpoint").write_text("checkpoint_epoch9.pth\n")
    path, state = ckpt.load_last_checkpoint(out)
    assert path.endswith("checkpoint_epoch2.pth") and state["epoch"] == 2
    # an empty pointer: the highest checkpoint that loads
    (tmp_path / "last_checkpoint").write_text("")
    assert ckpt.load_last_checkpoint(out)[1]["epoch"] == 2


def test_resume_with_only_temporary_files_or_nothing_usable(tmp_path):
    out = str(tmp_path)
    assert ckpt.load_last_checkpoint(out) is None
    assert ckpt.load_last_checkpoint(str(tmp_path / "missing")) is None
    (tmp_path / ".checkpoint_epoch1.pth.k2j4h5g6.tmp").write_bytes(b"half a checkpoint")
    assert ckpt.load_last_checkpoint(out) is None  # a killed first save: start from scratch
    (tmp_path / "checkpoint_epoch1.pth").write_bytes(b"garbage")
    (tmp_path / "checkpoint_epoch2.pth").write_bytes(b"")
    with pytest.raises(ckpt.CheckpointError) as info:
        ckpt.load_last_checkpoint(out)
    message = str(info.value)
    assert "\n" not in message and "no usable checkpoint" in message
    assert "checkpoint_epoch1.pth" in message and "checkpoint_epoch2.pth" in message


def test_save_deletes_leftovers_of_killed_writes(tmp_path):
    out = str(tmp_path)
    leftovers = [".checkpoint_epoch4.pth.a1b2c3d4.tmp", ".last_checkpoint.zz_9yx8w.tmp", ".model_best.pth.q1w2e3r4.tmp"]
    for name in leftovers:
        (tmp_path / name).write_bytes(b"partial")
    keep = ["notes.tmp", ".hidden", "checkpoint_epoch2.pth.tmp", ".notes.backup.tmp"]
    for name in keep:
        (tmp_path / name).write_bytes(b"not ours")
    (tmp_path / ".folder.abcdefgh.tmp").mkdir()  # a folder is never deleted
    ckpt.save_checkpoint(out, 5, _train_state(5))
    assert sorted(os.listdir(out)) == sorted(keep + [".folder.abcdefgh.tmp", "checkpoint_epoch5.pth",
                                                     "last_checkpoint"])
    assert ckpt.load_last_checkpoint(out)[1]["epoch"] == 5
