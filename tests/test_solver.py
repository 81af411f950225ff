"""Tests of solver/: parameter groups (SOLVER.WEIGHT_DECAY_ON) and the two warm-up + cosine schedules
(SOLVER.SCHEDULE), against closed forms (tests/helpers.py: math.cos, not timm)."""
import logging

import pytest
import torch
import torch.nn as nn

from configs import get_cfg_defaults
from helpers import paper_text_lr, release_lr
from solver import build_optimizer, build_scheduler, epoch_lr, epoch_lrs, epoch_t, start_epoch


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.norm = nn.LayerNorm(3)
        self.pos_embed = nn.Parameter(torch.zeros(1, 5, 3))
        self.attn_bias_table = nn.Parameter(torch.zeros(4, 3))  # 'bias' inside the name, not at its end
        self.frozen = nn.Linear(3, 3)
        self.frozen.requires_grad_(False)

    def no_weight_decay(self):
        return {"pos_embed"}


def groups_by_name(opt):
    return {n: g for g in opt.param_groups for n in g["names"]}


def cfg_with(*pairs):
    cfg = get_cfg_defaults()
    cfg.merge_from_list(list(pairs))
    return cfg


def test_param_groups_as_released():
    """'all': names containing 'bias' -> BIAS_LR_FACTOR x LR and WEIGHT_DECAY_BIAS; the rest WEIGHT_DECAY."""
    cfg = cfg_with("SOLVER.WEIGHT_DECAY_BIAS", "3e-4")
    opt = build_optimizer(cfg, Tiny())
    assert [g["name"] for g in opt.param_groups] == ["weights", "biases"]
    g = groups_by_name(opt)
    assert set(g) == {"fc.weight", "fc.bias", "norm.weight", "norm.bias", "pos_embed", "attn_bias_table"}
    for n in ("fc.weight", "norm.weight", "pos_embed"):
        assert g[n]["name"] == "weights" and g[n]["weight_decay"] == pytest.approx(1e-4)
        assert g[n]["initial_lr"] == pytest.approx(5e-3)
    for n in ("fc.bias", "norm.bias", "attn_bias_table"):
        assert g[n]["name"] == "biases" and g[n]["weight_decay"] == pytest.approx(3e-4)
        assert g[n]["initial_lr"] == pytest.approx(1e-2)  # timm's base value: the group's own peak
    assert not any("lr_scale" in grp for grp in opt.param_groups)
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["momentum"] == 0.9
    cfg.SOLVER.OPTIMIZER_NAME = "AdamW"
    assert isinstance(build_optimizer(cfg, Tiny()), torch.optim.AdamW)


def test_param_groups_weights_only():
    cfg = cfg_with("SOLVER.WEIGHT_DECAY_ON", "weights", "SOLVER.SCHEDULE", "paper_text")
    opt = build_optimizer(cfg, Tiny())
    assert [g["name"] for g in opt.param_groups] == ["weights", "biases", "no_decay"]
    g = groups_by_name(opt)
    assert g["fc.weight"]["weight_decay"] == pytest.approx(1e-4)
    assert g["attn_bias_table"]["weight_decay"] == pytest.approx(1e-4)  # 2-d, not ending in 'bias'
    for n in ("fc.bias", "norm.weight", "norm.bias", "pos_embed"):
        assert g[n]["weight_decay"] == 0.0
    assert g["fc.bias"]["lr_scale"] == 2.0 and g["norm.bias"]["lr_scale"] == 2.0
    assert g["fc.weight"]["lr_scale"] == 1.0 and g["pos_embed"]["lr_scale"] == 1.0
    assert all(grp["initial_lr"] == pytest.approx(5e-3) for grp in opt.param_groups)


def lr_at(cfg, epoch):
    """LR of the weight and bias groups while training 1-based ``epoch``, driven as the trainer does."""
    opt = build_optimizer(cfg, Tiny())
    sched = build_scheduler(cfg, opt)
    for e in range(1, epoch + 1):
        start_epoch(sched, e)
    g = groups_by_name(opt)
    return g["fc.weight"]["lr"], g["fc.bias"]["lr"], sched


def test_epoch_t():
    assert [epoch_t("release", e) for e in (1, 2, 180)] == [1, 2, 180]
    assert [epoch_t("paper_text", e) for e in (1, 2, 180)] == [0, 1, 179]
    with pytest.raises(ValueError, match="SOLVER.SCHEDULE"):
        epoch_t("cosine", 1)


def test_release_schedule_values():
    cfg = get_cfg_defaults()
    assert cfg.SOLVER.SCHEDULE == "release"
    expected = {1: (5.45e-4, 1.045e-3), 10: (4.962095e-3, 9.924115e-3), 11: (4.954160e-3, 9.908228e-3),
                90: (2.505e-3, 5.005e-3), 180: (1e-5, 1e-5)}
    for epoch, (w, b) in expected.items():
        lw, lb, sched = lr_at(cfg, epoch)
        assert lw == pytest.approx(w, rel=1e-6) and lw == pytest.approx(release_lr(epoch, 5e-3), rel=1e-12)
        assert lb == pytest.approx(b, rel=1e-6) and lb == pytest.approx(release_lr(epoch, 1e-2), rel=1e-12)
        assert epoch_lrs(sched, epoch) == pytest.approx([lw, lb], rel=1e-12)
        assert epoch_lr(sched, epoch) == pytest.approx(lw, rel=1e-12)
    lrs = [epoch_lr(sched, e) for e in range(1, 181)]
    assert all(a < b for a, b in zip(lrs[:9], lrs[1:10]))   # warm-up, epochs 1..10
    assert all(a > b for a, b in zip(lrs[9:], lrs[10:]))    # then decreasing
    assert max(lrs) == lrs[9] < 5e-3


def test_paper_text_schedule_values():
    cfg = cfg_with("SOLVER.SCHEDULE", "paper_text")
    for epoch in (1, 10, 11, 90, 180):
        lw, lb, sched = lr_at(cfg, epoch)
        assert lw == pytest.approx(paper_text_lr(epoch), rel=1e-12)
        assert lb == pytest.approx(2 * paper_text_lr(epoch), rel=1e-12)  # bias factor at every epoch
        assert epoch_lrs(sched, epoch) == pytest.approx([lw, lb], rel=1e-12)
    assert lr_at(cfg, 1)[0] == pytest.approx(5e-5) and lr_at(cfg, 11)[0] == pytest.approx(5e-3)
    lrs = [epoch_lr(sched, e) for e in range(1, 181)]
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:11]))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert max(lrs) == pytest.approx(5e-3)


@pytest.mark.parametrize("schedule", ["release", "paper_text"])
def test_scheduler_resume_round_trip(schedule):
    cfg = cfg_with("SOLVER.SCHEDULE", schedule)
    _, _, sched = lr_at(cfg, 39)
    state = sched.state_dict()
    opt = build_optimizer(cfg, Tiny())
    fresh = build_scheduler(cfg, opt)
    fresh.load_state_dict(state)
    start_epoch(fresh, 40)
    g = groups_by_name(opt)
    expected = epoch_lrs(sched, 40)
    assert [g["fc.weight"]["lr"], g["fc.bias"]["lr"]] == pytest.approx(expected, rel=1e-12)
    if schedule == "release":
        assert expected == pytest.approx([release_lr(40, 5e-3), release_lr(40, 1e-2)], rel=1e-12)
    else:
        assert expected == pytest.approx([paper_text_lr(40), 2 * paper_text_lr(40)], rel=1e-12)


@pytest.mark.parametrize("max_epochs,warmup", [(3, 5), (3, 3), (1, 10)])
def test_release_warmup_longer_than_the_run_is_kept_with_a_warning(max_epochs, warmup, caplog):
    cfg = cfg_with("SOLVER.MAX_EPOCHS", str(max_epochs), "SOLVER.WARMUP_EPOCHS", str(warmup))
    opt = build_optimizer(cfg, Tiny())
    with caplog.at_level(logging.WARNING):
        sched = build_scheduler(cfg, opt)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "does not end inside SOLVER.MAX_EPOCHS" in warnings[0], warnings
    assert sched.warmup_t == warmup and sched.t_initial == max_epochs
    for e in range(1, max_epochs + 1):
        expected = release_lr(e, 5e-3, warmup=warmup, max_epochs=max_epochs)
        assert epoch_lr(sched, e) == pytest.approx(expected, rel=1e-12)
