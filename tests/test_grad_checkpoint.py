"""The model's memory and speed switches: activation checkpointing (MODEL.GRAD_CHECKPOINT, model/checkpointing.py)
gives the training step of the plain model exactly (gradients, parameters after the optimizer step, every
BatchNorm buffer) and is really used by each part; channels-last (MODEL.CHANNELS_LAST) changes only the
memory layout of the CNN branch."""
import copy
from collections import Counter
from typing import Dict, Tuple

import pytest
import torch
import torch.nn as nn
import torch.utils.checkpoint

from loss import build_loss
from model import build_model
from model.backbones import Backbone
from model.checkpointing import checkpoint
from solver import build_optimizer
from tests.helpers import tiny_cfg
from utils.errors import ConfigError

NUM_CLASSES, NUM_CAMS = 4, 3
TOL = 1e-6

CASES = {
    # ResNet18 (BasicBlock) + ViT-Tiny, without and with drop-path / dropout (RNG replayed in the recomputation)
    "vit_no_drop": [],
    "vit_drop_path": ["MODEL.TRANSFORMER.DROP_PATH", "0.2", "MODEL.TRANSFORMER.DROP_RATE", "0.1"],
    # T2T-ViT-t-14 with drop-path
    "t2t_drop_path": ["MODEL.TRANSFORMER.NAME", "t2t_vit_t_14", "MODEL.TRANSFORMER.DROP_PATH", "0.2"],
}


def _batch(cfg, n: int = 8) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` random images, identities in runs of 4 as the sampler gives them (8: 2 ids x 4), and cameras."""
    h, w = cfg.INPUT.SIZE_TRAIN
    gen = torch.Generator().manual_seed(1)
    return (torch.randn(n, 3, h, w, generator=gen), torch.arange(n) // 4 % NUM_CLASSES,
            torch.arange(n) % NUM_CAMS)


def _train_step(cfg, model: nn.Module, batch, seed: int = 3) -> Dict[str, Dict[str, torch.Tensor]]:
    """One step as the trainer takes it (forward, the repo's loss, backward, the repo's optimizer);
    returns the gradients, the parameters after the step and the buffers."""
    images, pids, cams = batch
    model.train()
    optimizer = build_optimizer(cfg, model)
    loss_fn = build_loss(cfg, NUM_CLASSES)
    torch.manual_seed(seed)
    optimizer.zero_grad(set_to_none=True)
    loss, _ = loss_fn(model(images, cams), pids)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    optimizer.step()
    return {"grads": grads, "params": {n: p.detach().clone() for n, p in model.named_parameters()},
            "buffers": {n: b.clone() for n, b in model.named_buffers()}}


def _max_differences(a, b) -> Dict[str, float]:
    """Max abs difference per kind (grads/params/buffers) over all tensors; the names must agree."""
    out = {}
    for kind in a:
        assert a[kind].keys() == b[kind].keys(), kind
        out[kind] = max((a[kind][n].double() - b[kind][n].double()).abs().max().item() for n in a[kind])
    return out


def _pair(overrides, **switches):
    """(plain model, model with ``switches`` on) with the same weights; the config of the plain one."""
    cfg = tiny_cfg(*overrides)
    torch.manual_seed(0)
    plain = build_model(cfg, NUM_CLASSES, NUM_CAMS)
    keys = [k for name, on in switches.items() if on for k in (f"MODEL.{name}", "True")]
    other = build_model(tiny_cfg(*overrides, *keys), NUM_CLASSES, NUM_CAMS)
    other.load_state_dict(plain.state_dict())
    return cfg, plain, other


@pytest.fixture
def checkpoint_calls(monkeypatch) -> Counter:
    """Counts calls of ``torch.utils.checkpoint.checkpoint`` (timm's ``checkpoint_seq`` and
    ``model.checkpointing.checkpoint`` both go through it) by the class of the checkpointed module."""
    calls = Counter()
    original = torch.utils.checkpoint.checkpoint

    def counting(function, *args, **kwargs):
        owner = function if isinstance(function, nn.Module) else None
        if owner is None:  # timm's checkpoint_seq: a closure over the sequence of blocks
            cells = [c.cell_contents for c in (function.__closure__ or ())]
            owner = next(m for cell in cells if isinstance(cell, (tuple, list)) for m in cell)
        calls[type(owner).__name__] += 1
        return original(function, *args, **kwargs)

    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", counting)
    return calls


@pytest.mark.parametrize("case", sorted(CASES))
def test_checkpointed_step_equals_the_plain_step(case, checkpoint_calls):
    cfg, plain, ckpt = _pair(CASES[case], GRAD_CHECKPOINT=True)
    batch = _batch(cfg)
    ref = _train_step(cfg, plain, batch)
    assert not checkpoint_calls
    got = _train_step(cfg, ckpt, batch)
    assert checkpoint_calls, "MODEL.GRAD_CHECKPOINT True checkpointed nothing"
    diff = _max_differences(ref, got)
    print(case, diff)
    assert all(d <= TOL for d in diff.values()), diff
    # every BatchNorm counted the batch once
    for name, b in got["buffers"].items():
        if name.endswith("num_batches_tracked"):
            assert b.item() == 1, name


@pytest.mark.parametrize("overrides", [[], ["MODEL.CNN.NAME", "resnet50", "MODEL.TRANSFORMER.NAME", "t2t_vit_t_14"]],
                         ids=["resnet18_vit", "resnet50_t2t"])
def test_each_part_checkpoints(overrides, checkpoint_calls):
    """Transformer blocks, ResNet blocks and HTM layers each go through checkpoint once per forward, and only
    in training with gradients."""
    cfg = tiny_cfg(*overrides, "MODEL.GRAD_CHECKPOINT", "True")
    model = build_model(cfg, NUM_CLASSES, NUM_CAMS).train()
    images, _, cams = _batch(cfg, 4)
    model(images, cams)
    expected = {"Block": len(model.transformer.blocks),
                "BasicBlock" if cfg.MODEL.CNN.NAME == "resnet18" else "Bottleneck": len(list(model.cnn.residual_blocks())),
                "HeterogenousTransmissionModule": len(model.htm)}
    assert dict(checkpoint_calls) == expected
    checkpoint_calls.clear()
    with torch.no_grad():
        model(images, cams)
    model.eval()
    model(images, cams)
    assert not checkpoint_calls
    model.train().set_grad_checkpointing(False)
    model(images, cams)
    assert not checkpoint_calls


def test_recomputation_updates_batchnorm_statistics_once():
    """Plain ``torch.utils.checkpoint`` applies BatchNorm's momentum twice; ``model.checkpointing.checkpoint``
    leaves the statistics of one update, bit for bit, with the same gradients."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8))
    x = torch.randn(4, 3, 9, 9) * 2 + 1

    def step(run):
        model = copy.deepcopy(net).train()
        run(model, x.clone().requires_grad_()).pow(2).sum().backward()
        return [b.clone() for b in model.buffers()], [p.grad.clone() for p in model.parameters()]

    buffers, grads = step(lambda m, t: m(t))
    for run in (checkpoint, lambda m, t: torch.utils.checkpoint.checkpoint(m, t, use_reentrant=False)):
        got_buffers, got_grads = step(run)
        assert all(torch.equal(a, b) for a, b in zip(grads, got_grads))
        same = all(torch.equal(a, b) for a, b in zip(buffers, got_buffers))
        assert same == (run is checkpoint)


def test_checkpoint_under_torch_compile_updates_batchnorm_once():
    """Under torch.compile (MODEL.COMPILE) the recomputation is the compiler's (functional): no context is
    passed, and the statistics are still those of one update."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU())
    x = torch.randn(4, 3, 9, 9)
    ref, ckpt = copy.deepcopy(net).train(), copy.deepcopy(net).train()
    ref(x).sum().backward()
    torch.compile(lambda t: checkpoint(ckpt, t), backend="aot_eager")(x).sum().backward()
    assert all(torch.equal(a, b) for a, b in zip(ref.buffers(), ckpt.buffers()))
    assert all(torch.allclose(a.grad, b.grad, atol=1e-6) for a, b in zip(ref.parameters(), ckpt.parameters()))


def test_channels_last_changes_only_the_memory_layout():
    cfg, plain, fast = _pair([], CHANNELS_LAST=True)
    assert list(plain.state_dict()) == list(fast.state_dict())
    assert fast.cnn.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert plain.cnn.conv1.weight.is_contiguous()
    batch = _batch(cfg)
    ref, got = _train_step(cfg, plain, batch), _train_step(cfg, fast, batch)
    # float32 sums in another order: equal up to rounding, relative to each tensor's scale; the gradients of the
    # gradient-free parameters (trained by default, as released) are rounding noise only and are left out
    noise = set(plain.gradient_free_parameter_names())
    for kind in ("grads", "buffers"):
        for n, a in ref[kind].items():
            if kind == "grads" and n in noise:
                continue
            scale = a.double().abs().max().item()
            assert (a.double() - got[kind][n].double()).abs().max().item() <= 1e-4 * scale + 1e-7, (kind, n)
    images, _, cams = batch
    plain.eval(), fast.eval()
    with torch.no_grad():
        assert torch.allclose(plain(images, cams), fast(images, cams), atol=1e-5)


def test_switches_keep_the_state_dict_keys():
    cfg, plain, both = _pair([], GRAD_CHECKPOINT=True, CHANNELS_LAST=True)
    assert list(plain.state_dict()) == list(both.state_dict())


def test_a_backbone_without_the_switches_names_the_key():
    bare = Backbone()
    bare.set_grad_checkpointing(False), bare.set_channels_last(False)  # off is always possible
    with pytest.raises(ConfigError, match="MODEL.GRAD_CHECKPOINT"):
        bare.set_grad_checkpointing(True)
    with pytest.raises(ConfigError, match="MODEL.CHANNELS_LAST"):
        bare.set_channels_last(True)
