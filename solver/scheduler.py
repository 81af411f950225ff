"""Learning-rate schedule of Sec. IV-B: linear warm-up, then cosine decay (timm's scheduler).

``build_scheduler`` returns a ``timm.scheduler.CosineLRScheduler`` with ``warmup_prefix=True``
and ``t_initial = MAX_EPOCHS - WARMUP_EPOCHS``. Its argument t counts *finished* epochs, so 1-based
epoch E trains at ``lr(t = E - 1)``. Use it as timm does: build it (this sets ``lr(0)``), train
epoch 1, then after each epoch E call ``scheduler.step(E)`` (equivalently ``step(E - 1)`` at the
start of epoch E). On resume after epoch E, load the state dicts then call ``scheduler.step(E)``.

With the defaults (5e-4 -> 5e-3 over 10 epochs, cosine to 1.6e-5 at epoch 180):

    lr(t) = 5e-4 + t * 4.5e-4                             for t < 10 (epochs 1..10)
    lr(t) = 1.6e-5 + (5e-3 - 1.6e-5) / 2 * (1 + cos(pi * (t - 10) / 170))   for t >= 10

    epoch 1: 5.0e-4, epoch 10: 4.55e-3, epoch 11: 5.0e-3 (peak), epoch 180: 1.643e-5
    (lr(180) = MIN_LR exactly, i.e. after the last epoch).

Every group's LR is multiplied by its ``lr_scale`` (biases: SOLVER.BIAS_LR_FACTOR).
"""
import logging

import torch
from timm.scheduler import CosineLRScheduler

logger = logging.getLogger(__name__)


def build_scheduler(cfg, optimizer: torch.optim.Optimizer) -> CosineLRScheduler:
    """Warm-up + cosine schedule over SOLVER.MAX_EPOCHS, stepped once per epoch."""
    s = cfg.SOLVER
    if s.WARMUP_EPOCHS >= s.MAX_EPOCHS:
        raise ValueError(f"SOLVER.WARMUP_EPOCHS ({s.WARMUP_EPOCHS}) must be < MAX_EPOCHS ({s.MAX_EPOCHS})")
    for g in optimizer.param_groups:
        # timm scales by lr_scale itself: its base value is the unscaled peak LR
        g.setdefault("initial_lr", s.BASE_LR)
    scheduler = CosineLRScheduler(
        optimizer,
        t_initial=s.MAX_EPOCHS - s.WARMUP_EPOCHS,
        lr_min=s.MIN_LR,
        warmup_t=s.WARMUP_EPOCHS,
        warmup_lr_init=s.WARMUP_LR_INIT,
        warmup_prefix=True,
        cycle_limit=1,
        t_in_epochs=True,
    )
    logger.info("LR: %g -> %g over %d warm-up epochs, cosine to %g at epoch %d",
                s.WARMUP_LR_INIT, s.BASE_LR, s.WARMUP_EPOCHS, s.MIN_LR, s.MAX_EPOCHS)
    return scheduler


def epoch_lr(scheduler: CosineLRScheduler, epoch: int) -> float:
    """The unscaled LR that 1-based ``epoch`` trains at (no side effect on the optimizer)."""
    return float(scheduler._get_lr(epoch - 1)[0])
