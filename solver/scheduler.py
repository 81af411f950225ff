"""Learning-rate schedule of Sec. IV-B: linear warm-up, then cosine decay (timm's scheduler).

``build_scheduler`` returns a ``timm.scheduler.CosineLRScheduler`` with ``warmup_prefix=True``
and ``t_initial = MAX_EPOCHS - WARMUP_EPOCHS`` (the warm-up is clipped in short runs, see below).
Its argument t counts *finished* epochs, so 1-based epoch E trains at ``lr(t = E - 1)``. Use it as
timm does: build it (this sets ``lr(0)``), train epoch 1, then after each epoch E call
``scheduler.step(E)`` (equivalently ``step(E - 1)`` at the start of epoch E). On resume after
epoch E, load the state dicts then call ``scheduler.step(E)``.

With the defaults (5e-4 -> 5e-3 over 10 epochs, cosine to 1.6e-5 at epoch 180):

    lr(t) = 5e-4 + t * 4.5e-4                             for t < 10 (epochs 1..10)
    lr(t) = 1.6e-5 + (5e-3 - 1.6e-5) / 2 * (1 + cos(pi * (t - 10) / 170))   for t >= 10

    epoch 1: 5.0e-4, epoch 10: 4.55e-3, epoch 11: 5.0e-3 (peak), epoch 180: 1.643e-5
    (lr(180) = MIN_LR exactly, i.e. after the last epoch).

Every group's LR is multiplied by its ``lr_scale`` (biases: SOLVER.BIAS_LR_FACTOR).

Short runs (smoke tests with ``SOLVER.MAX_EPOCHS 1`` or ``2``): a warm-up that does not fit the run
(``WARMUP_EPOCHS >= MAX_EPOCHS``) is clipped to ``MAX_EPOCHS - 1`` epochs with one warning
(:func:`warmup_epochs` is the only place that decides this). timm needs ``t_initial >= 1`` (one
cosine epoch at least), and ``MAX_EPOCHS - 1`` is the longest warm-up that leaves it: the run keeps
the configured shape, a linear ramp from WARMUP_LR_INIT, then the last epoch at the peak
(``lr(t = warm-up)`` is the start of the cosine, i.e. BASE_LR), exactly as an unclipped config with
``WARMUP_EPOCHS = MAX_EPOCHS - 1`` would. So ``MAX_EPOCHS 1`` has no warm-up and its one epoch trains
at BASE_LR; ``MAX_EPOCHS 2`` trains epoch 1 at WARMUP_LR_INIT and epoch 2 at BASE_LR. As in a full
run, MIN_LR is only reached after the last epoch.
"""
import logging

import torch
from timm.scheduler import CosineLRScheduler

logger = logging.getLogger(__name__)


def warmup_epochs(cfg) -> int:
    """The warm-up length the schedule uses: SOLVER.WARMUP_EPOCHS, clipped to SOLVER.MAX_EPOCHS - 1.

    Logs one warning when it clips (see the module docstring for why ``MAX_EPOCHS - 1``). The ranges
    (``MAX_EPOCHS >= 1``, ``WARMUP_EPOCHS >= 0``) are checked where the config is loaded
    (``configs.load_cfg``), with the file and key named.
    """
    s = cfg.SOLVER
    requested, max_epochs = int(s.WARMUP_EPOCHS), int(s.MAX_EPOCHS)
    if requested < max_epochs:
        return requested
    used = max_epochs - 1
    logger.warning("SOLVER.WARMUP_EPOCHS (%d) does not fit in SOLVER.MAX_EPOCHS (%d): using %d warm-up "
                   "epoch(s), then %s at the peak LR %g", requested, max_epochs, used,
                   "the last epoch" if used else "the single epoch", s.BASE_LR)
    return used


def _drop_no_effect_warning(record):
    return "will have no effect" not in record.getMessage()


def build_scheduler(cfg, optimizer: torch.optim.Optimizer) -> CosineLRScheduler:
    """Warm-up + cosine schedule over SOLVER.MAX_EPOCHS, stepped once per epoch."""
    s = cfg.SOLVER
    warmup = warmup_epochs(cfg)
    for g in optimizer.param_groups:
        # timm scales by lr_scale itself: its base value is the unscaled peak LR
        g.setdefault("initial_lr", s.BASE_LR)
    # With a one-epoch cosine phase (warm-up = MAX_EPOCHS - 1, clipped or not) timm warns that the
    # cosine "will have no effect": intended here (that epoch trains at the peak), so not repeated.
    timm_logger = logging.getLogger(CosineLRScheduler.__module__)
    timm_logger.addFilter(_drop_no_effect_warning)
    try:
        scheduler = CosineLRScheduler(
            optimizer,
            t_initial=s.MAX_EPOCHS - warmup,
            lr_min=s.MIN_LR,
            warmup_t=warmup,
            warmup_lr_init=s.WARMUP_LR_INIT,
            warmup_prefix=True,
            cycle_limit=1,
            t_in_epochs=True,
        )
    finally:
        timm_logger.removeFilter(_drop_no_effect_warning)
    logger.info("LR: %g -> %g over %d warm-up epochs, cosine to %g at epoch %d",
                s.WARMUP_LR_INIT, s.BASE_LR, warmup, s.MIN_LR, s.MAX_EPOCHS)
    return scheduler


def epoch_lr(scheduler: CosineLRScheduler, epoch: int) -> float:
    """The unscaled LR that 1-based ``epoch`` trains at (no side effect on the optimizer)."""
    return float(scheduler._get_lr(epoch - 1)[0])
