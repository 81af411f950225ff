"""Training as released, observed on a real ``Trainer`` in float64 (docs/RELEASE_DIFFERENCES.md).

The reference here is the authors' released training written out by hand from its facts (docs/PAPER.md,
"Training as run"), not through this repository's loss, optimizer or scheduler:

- loss: for each of the six features, label-smoothed cross-entropy as ``(-targets * log_softmax).mean(0).sum()``
  with targets ``(1 - 0.1) * one_hot + 0.1 / K``, plus the soft-margin batch-hard triplet loss
  ``mean(log(1 + exp(d_ap - d_an)))`` on Euclidean distances ``sqrt(clamp(|x|^2 + |y|^2 - 2 x.y, 1e-12))`` of
  the raw features; summed (Eq. 12);
- optimizer: SGD momentum 0.9, one group per parameter, LR ``BASE_LR`` and weight decay ``WEIGHT_DECAY`` except
  names containing 'bias' (LR ``BASE_LR * BIAS_LR_FACTOR``, ``WEIGHT_DECAY_BIAS``); torch's SGD update written
  out: ``buf = m * buf + (g + wd * p)`` (``buf = g + wd * p`` at the first step), ``p -= lr * buf``;
- schedule: timm's cosine over all MAX_EPOCHS with the warm-up laid over its start, each group from
  ``WARMUP_LR_INIT`` to its own peak, stepped with ``step(epoch)`` at the start of each 1-based epoch: in
  closed form below.

The model's forward is this repository's (its equality with the released model is pinned in
tests/test_release_parity.py): what is compared is what training does with it.
"""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from helpers import release_lr, tiny_cfg
from loss import build_loss
from model import build_model
from processor.trainer import Trainer
from solver import build_optimizer, build_scheduler

NUM_CLASSES, NUM_CAMS = 6, 3
P, K = 4, 4


def _release_cfg(*overrides):
    """The tiny architecture with the paper's optimisation (SGD 5e-3, 180 epochs, the release's schedule)."""
    return tiny_cfg("MODEL.DEVICE", "cpu", "SOLVER.IMS_PER_BATCH", str(P * K), "DATALOADER.NUM_INSTANCE", str(K),
                    "OUTPUT_DIR", "", *overrides)


def _batches(cfg, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    h, w = cfg.INPUT.SIZE_TRAIN
    out = []
    for _ in range(n):
        pids = torch.arange(P).repeat_interleave(K)[torch.randperm(P * K, generator=g)]
        out.append((torch.randn(P * K, 3, h, w, generator=g, dtype=torch.float64), pids,
                    torch.randint(0, NUM_CAMS, (P * K,), generator=g), [""] * (P * K)))
    return out


def _float64_model(cfg, seed=3):
    torch.manual_seed(seed)
    return build_model(cfg, NUM_CLASSES, NUM_CAMS).double()


class _OneBatchPerEpoch:
    """A train loader that yields batch ``epoch - 1`` in epoch ``epoch`` (the trainer calls ``set_epoch``)."""

    def __init__(self, batches):
        self.batches, self.epoch = batches, 1

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return 1

    def __iter__(self):
        return iter([self.batches[self.epoch - 1]])


def _trainer(cfg, model, batches):
    optimizer = build_optimizer(cfg, model)
    return Trainer(cfg, model, build_loss(cfg, NUM_CLASSES), optimizer, build_scheduler(cfg, optimizer),
                   _OneBatchPerEpoch(batches), None, 0, torch.device("cpu"), test_sets=[object()])


def _record_gradients(trainer):
    """Wrap the trainer's optimizer.step: the gradients it is about to apply, by parameter name, per step."""
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    seen, step = [], trainer.optimizer.step

    def recording_step(*args, **kwargs):
        seen.append({names[id(p)]: p.grad.detach().clone() for g in trainer.optimizer.param_groups
                     for p in g["params"] if p.grad is not None})
        return step(*args, **kwargs)

    trainer.optimizer.step = recording_step
    return seen


# ----------------------------------------------------------------------------- the release, by hand
def release_loss(outputs, pids, eps=0.1):
    total = 0.0
    for logits, feat in outputs.values():
        log_p = torch.log_softmax(logits, dim=1)
        targets = torch.zeros_like(log_p).scatter_(1, pids[:, None], 1.0) * (1 - eps) + eps / logits.shape[1]
        total = total + (-targets * log_p).mean(0).sum()
        sq = (feat ** 2).sum(1, keepdim=True)
        dist = (sq + sq.t() - 2 * feat @ feat.t()).clamp(min=1e-12).sqrt()
        same = pids[:, None] == pids[None, :]
        d_ap = torch.stack([dist[i][same[i]].max() for i in range(len(pids))])
        d_an = torch.stack([dist[i][~same[i]].min() for i in range(len(pids))])
        total = total + torch.log1p(torch.exp(-(d_an - d_ap))).mean()
    return total


def release_sgd_steps(model, batches, base_lr=5e-3, bias_factor=2.0, wd=1e-4, wd_bias=1e-4, momentum=0.9):
    """``len(batches)`` training steps of the release (epochs 1, 2, ...) on ``model``, by hand."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    buffers = {}
    model.train()
    for epoch, (images, pids, camids, _) in enumerate(batches, start=1):
        model.zero_grad(set_to_none=True)
        release_loss(model(images, camids), pids).backward()
        with torch.no_grad():
            for name, p in params:
                bias = "bias" in name
                lr = release_lr(epoch, base_lr * (bias_factor if bias else 1.0), 0.01 * base_lr, 0.002 * base_lr)
                d = p.grad + (wd_bias if bias else wd) * p
                buffers[name] = d.clone() if name not in buffers else buffers[name].mul_(momentum).add_(d)
                p.sub_(lr * buffers[name])


def _assert_close_per_tensor(ours, ref, rel, what):
    """Each tensor within ``rel`` of its own scale (or of the largest tensor's, for tensors that are ~0)."""
    scale = max(float(t.abs().max()) for t in ref.values())
    bad = []
    for name, r in ref.items():
        tol = rel * max(float(r.abs().max()), 1e-6 * scale)
        err = float((ours[name] - r).abs().max())
        if err > tol:
            bad.append(f"{name}: {err:.3g} > {tol:.3g}")
    assert not bad, f"{what} differ from the release's in {len(bad)} tensors: " + "; ".join(bad[:8])


# ----------------------------------------------------------------------------- tests
def test_one_step_loss_and_every_gradient_equal_the_release():
    cfg = _release_cfg()
    batches = _batches(cfg, 1)
    model = _float64_model(cfg)
    reference = copy.deepcopy(model).train()
    trainer = _trainer(cfg, model, batches)
    grads = _record_gradients(trainer)
    losses = []
    loss_fn = trainer.loss_fn
    trainer.loss_fn = lambda outputs, pids: losses.append(loss_fn(outputs, pids)) or losses[-1]
    trainer.train_one_epoch(1)

    images, pids, camids, _ = batches[0]
    ref_loss = release_loss(reference(images, camids), pids)
    ref_loss.backward()
    ours = losses[0][0]
    assert ours.dtype == torch.float64
    assert abs(ours.item() - ref_loss.item()) <= 1e-9 * abs(ref_loss.item())
    ref_grads = {n: p.grad for n, p in reference.named_parameters() if p.grad is not None}
    assert set(grads[0]) == set(ref_grads)
    _assert_close_per_tensor(grads[0], ref_grads, 1e-9, "gradients")


def test_three_sgd_steps_move_every_parameter_as_the_release():
    """Three epochs of one batch each through Trainer.train_one_epoch (its scheduler stepping, param groups,
    weight decay and momentum) against the release's update by hand; the gradient-free parameters included:
    the release trains them, so weight decay shrinks them."""
    cfg = _release_cfg()
    batches = _batches(cfg, 3)
    model = _float64_model(cfg)
    reference = copy.deepcopy(model)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = _trainer(cfg, model, batches)
    for epoch in (1, 2, 3):
        trainer.train_one_epoch(epoch)
    release_sgd_steps(reference, batches)

    ours = dict(model.named_parameters())
    ref = dict(reference.named_parameters())
    moved = {n: ours[n].detach() - start[n] for n in ours}
    ref_moved = {n: ref[n].detach() - start[n] for n in ref}
    _assert_close_per_tensor(moved, ref_moved, 1e-9, "parameter updates")
    # BatchNorm statistics: the forwards of steps 2 and 3 see weights equal to rounding (the update's operation
    # order differs from torch's SGD by an ulp), so equal to rounding too
    _assert_close_per_tensor(dict(model.named_buffers()), dict(reference.named_buffers()), 1e-9, "buffers")
    # every trainable parameter moved, the gradient-free ones by the weight decay alone
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert all("bias" in n for n in frozen), frozen  # BNNeck biases, frozen in the release too
    still = [n for n in ours if n not in frozen and torch.equal(ours[n].detach(), start[n])]
    assert not still, still
    for name in model.gradient_free_parameter_names():
        p0 = start[name]
        # three SGD steps of p <- p - lr * (m * buf + wd * p) with a zero gradient shrink p by a known factor
        buf = torch.zeros_like(p0)
        p = p0.clone()
        for epoch in (1, 2, 3):
            lr = release_lr(epoch, 5e-3 * (2.0 if "bias" in name else 1.0))
            buf = buf * 0.9 + 1e-4 * p
            p = p - lr * buf
        assert torch.allclose(ours[name].detach(), p, rtol=1e-9, atol=1e-12), name


class _DtypeRecorder(TorchDispatchMode):
    """The floating dtypes of every op's outputs."""

    def __init__(self):
        super().__init__()
        self.seen = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in (out if isinstance(out, (tuple, list)) else (out,)):
            if isinstance(t, torch.Tensor) and t.is_floating_point():
                self.seen.setdefault(t.dtype, set()).add(str(func))
        return out


@pytest.mark.parametrize("overrides", [(), ("MODEL.FUSION.POOLING", "avg", "MODEL.CNN.POOLING", "max"),
                                       ("SOLVER.MARGIN", "0.3"), ("MODEL.TRANSFORMER.NAME", "t2t_vit_t_14")])
def test_float64_training_path_never_computes_below_float64(overrides):
    """The model's training forward, the loss (Eq. 12) and the backward in float64: no op produces a narrower
    float (pooling, normalisation, heads and losses included)."""
    cfg = _release_cfg(*overrides)
    images, pids, camids, _ = _batches(cfg, 1)[0]
    model = _float64_model(cfg).train()
    loss_fn = build_loss(cfg, NUM_CLASSES)
    with _DtypeRecorder() as rec:
        loss, terms = loss_fn(model(images, camids), pids)
        loss.backward()
    assert loss.dtype == torch.float64 and all(t.dtype == torch.float64 for t in terms.values())
    narrow = {str(d): sorted(ops)[:6] for d, ops in rec.seen.items() if d != torch.float64}
    assert not narrow, f"ops computing below float64: {narrow}"
