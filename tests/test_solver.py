"""Tests of solver/: parameter groups and the warm-up + cosine schedule."""
import math

import pytest
import torch
import torch.nn as nn

from configs import get_cfg_defaults
from solver import build_optimizer, build_scheduler, epoch_lr


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.norm = nn.LayerNorm(3)
        self.pos_embed = nn.Parameter(torch.zeros(1, 5, 3))
        self.frozen = nn.Linear(3, 3)
        self.frozen.requires_grad_(False)

    def no_weight_decay(self):
        return {"pos_embed"}


def groups_by_name(opt):
    return {n: g for g in opt.param_groups for n in g["names"]}


def test_param_groups():
    cfg = get_cfg_defaults()
    opt = build_optimizer(cfg, Tiny())
    g = groups_by_name(opt)
    assert set(g) == {"fc.weight", "fc.bias", "norm.weight", "norm.bias", "pos_embed"}  # no frozen
    assert g["fc.weight"]["weight_decay"] == pytest.approx(1e-4)
    for n in ("fc.bias", "norm.weight", "norm.bias", "pos_embed"):
        assert g[n]["weight_decay"] == 0.0
    assert g["fc.bias"]["lr_scale"] == 2.0 and g["norm.bias"]["lr_scale"] == 2.0
    assert g["fc.weight"]["lr_scale"] == 1.0 and g["pos_embed"]["lr_scale"] == 1.0
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["momentum"] == 0.9
    cfg.SOLVER.OPTIMIZER_NAME = "AdamW"
    assert isinstance(build_optimizer(cfg, Tiny()), torch.optim.AdamW)


def lr_at(cfg, epoch):
    """LR of the weight and bias groups while training 1-based ``epoch``, driven as a trainer would."""
    opt = build_optimizer(cfg, Tiny())
    sched = build_scheduler(cfg, opt)
    for e in range(1, epoch):
        sched.step(e)  # end of epoch e
    g = groups_by_name(opt)
    return g["fc.weight"]["lr"], g["fc.bias"]["lr"], sched


def test_schedule_values():
    cfg = get_cfg_defaults()
    w1, b1, _ = lr_at(cfg, 1)
    assert w1 == pytest.approx(5e-4) and b1 == pytest.approx(1e-3)  # bias factor kept
    w10, _, _ = lr_at(cfg, 10)
    assert w10 == pytest.approx(5e-4 + 9 * 4.5e-4)
    w11, b11, sched = lr_at(cfg, 11)
    assert w11 == pytest.approx(5e-3) and b11 == pytest.approx(1e-2)
    w180, b180, _ = lr_at(cfg, 180)
    expected = 1.6e-5 + 0.5 * (5e-3 - 1.6e-5) * (1 + math.cos(math.pi * 169 / 170))
    assert w180 == pytest.approx(expected) and w180 < 1.7e-5
    assert b180 == pytest.approx(2 * expected)
    lrs = [epoch_lr(sched, e) for e in range(1, 181)]
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:11]))  # monotone warm-up to the peak
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # then non-increasing
    assert max(lrs) == pytest.approx(5e-3)


def test_scheduler_resume_round_trip():
    cfg = get_cfg_defaults()
    _, _, sched = lr_at(cfg, 40)
    state = sched.state_dict()
    opt = build_optimizer(cfg, Tiny())
    fresh = build_scheduler(cfg, opt)
    fresh.load_state_dict(state)
    fresh.step(39)
    g = groups_by_name(opt)
    assert g["fc.weight"]["lr"] == pytest.approx(epoch_lr(sched, 40))
    assert g["fc.bias"]["lr"] == pytest.approx(2 * epoch_lr(sched, 40))
