"""Learning-rate schedule: linear warm-up, then cosine decay (timm's ``CosineLRScheduler``), stepped per epoch.

Two schedules (``SOLVER.SCHEDULE``); :func:`epoch_t` is the one place that says which scheduler time ``t`` the
1-based epoch ``E`` trains at. The trainer (:func:`start_epoch` at the start of every epoch), resume and
:func:`epoch_lr` / :func:`epoch_lrs` all go through it.

``'release'`` (default): as the authors' released code trained::

    CosineLRScheduler(optimizer, t_initial=MAX_EPOCHS, lr_min=MIN_LR, warmup_t=WARMUP_EPOCHS,
                      warmup_lr_init=WARMUP_LR_INIT, warmup_prefix=False, cycle_limit=1, t_in_epochs=True)
    scheduler.step(E) at the start of epoch E:  epoch E trains at lr(t = E)

The cosine is counted from t = 0 and the warm-up is laid over its first WARMUP_EPOCHS (not a prefix). Each
parameter group has its own peak ``P`` (its initial LR: ``BASE_LR`` for weights, ``BASE_LR * BIAS_LR_FACTOR``
for biases; no ``lr_scale``), and every group starts from the same WARMUP_LR_INIT and ends at the same MIN_LR::

    lr(t) = WARMUP_LR_INIT + t * (P - WARMUP_LR_INIT) / WARMUP_EPOCHS          t < WARMUP_EPOCHS
    lr(t) = MIN_LR + (P - MIN_LR) / 2 * (1 + cos(pi * t / MAX_EPOCHS))          WARMUP_EPOCHS <= t < MAX_EPOCHS
    lr(t) = MIN_LR                                                             t >= MAX_EPOCHS

With the defaults (BASE_LR 5e-3, BIAS_LR_FACTOR 2, 180 epochs, 10 warm-up epochs, 5e-5, 1e-5):

    epoch:        1          10          11          90          180
    weights:  5.450e-4    4.962e-3    4.954e-3    2.505e-3    1.0e-5
    biases:   1.045e-3    9.924e-3    9.908e-3    5.005e-3    1.0e-5

(the peak is never trained exactly: epoch 10 is already on the cosine, cos(pi * 10 / 180); the last epoch
trains at MIN_LR). A warm-up that does not end inside the run (``WARMUP_EPOCHS >= MAX_EPOCHS``) is kept as
configured, as the released code would run it: the run never leaves the warm-up (or, when equal, its last
epoch is at MIN_LR); one warning says so with the first and last epochs' LRs.

``'paper_text'`` (the schedule as the paper's text words it; this repository's earlier default): the warm-up
as a prefix and the cosine over the remaining epochs::

    CosineLRScheduler(..., t_initial=MAX_EPOCHS - W, warmup_t=W, warmup_prefix=True, ...)
    epoch E trains at lr(t = E - 1)

    lr(t) = WARMUP_LR_INIT + t * (BASE_LR - WARMUP_LR_INIT) / W                 t < W   (epochs 1..W)
    lr(t) = MIN_LR + (BASE_LR - MIN_LR) / 2 * (1 + cos(pi * (t - W) / (MAX_EPOCHS - W)))   t >= W

and every group multiplied by its ``lr_scale`` (biases: BIAS_LR_FACTOR x the base LR at every epoch). With
the defaults: epoch 1 5.0e-5, epoch 10 4.505e-3, epoch 11 5.0e-3 (peak), epoch 90 2.781e-3, epoch 180
1.043e-5 (biases twice these). A warm-up that does not fit the run (``W >= MAX_EPOCHS``) is clipped to
``MAX_EPOCHS - 1`` epochs with one warning (:func:`warmup_epochs`): timm needs ``t_initial >= 1``, and that
is the longest warm-up that leaves it; the run keeps the configured shape, a linear ramp from WARMUP_LR_INIT
then the last epoch at the peak. So ``MAX_EPOCHS 1`` trains its one epoch at BASE_LR, ``MAX_EPOCHS 2`` trains
epoch 1 at WARMUP_LR_INIT and epoch 2 at BASE_LR; MIN_LR is only reached after the last epoch.
"""
import logging
from typing import List

import torch
from timm.scheduler import CosineLRScheduler

logger = logging.getLogger(__name__)

SCHEDULES = ("release", "paper_text")


def epoch_t(schedule: str, epoch: int) -> int:
    """The scheduler time ``t`` at which 1-based ``epoch`` trains, under ``schedule`` (the only place)."""
    if schedule == "release":
        return int(epoch)        # released: scheduler.step(epoch) at the start of the epoch
    if schedule == "paper_text":
        return int(epoch) - 1    # t counts the finished epochs
    raise ValueError(f"unknown SOLVER.SCHEDULE {schedule!r} ({' | '.join(SCHEDULES)})")


class EpochCosineLRScheduler(CosineLRScheduler):
    """timm's cosine scheduler that knows its ``schedule`` ('release' | 'paper_text'), so that the epoch -> t
    mapping (:func:`epoch_t`) travels with it (and with its ``state_dict``)."""

    def __init__(self, optimizer: torch.optim.Optimizer, schedule: str, **kwargs):
        epoch_t(schedule, 1)  # validates the name
        self.schedule = schedule
        super().__init__(optimizer, **kwargs)


def _schedule_of(scheduler) -> str:
    # a scheduler state saved before the schedule was recorded is the paper_text one (the only one then)
    return getattr(scheduler, "schedule", "paper_text")


def warmup_epochs(cfg) -> int:
    """The warm-up length the schedule uses.

    'paper_text': SOLVER.WARMUP_EPOCHS clipped to SOLVER.MAX_EPOCHS - 1, with one warning when it clips (see
    the module docstring). 'release': SOLVER.WARMUP_EPOCHS as configured (the warning about a warm-up that
    does not end inside the run is logged by :func:`build_scheduler`, which knows the LRs). The ranges
    (``MAX_EPOCHS >= 1``, ``WARMUP_EPOCHS >= 0``) are checked where the config is loaded (``configs.load_cfg``).
    """
    s = cfg.SOLVER
    requested, max_epochs = int(s.WARMUP_EPOCHS), int(s.MAX_EPOCHS)
    if s.SCHEDULE == "release" or requested < max_epochs:
        return requested
    used = max_epochs - 1
    logger.warning("SOLVER.WARMUP_EPOCHS (%d) does not fit in SOLVER.MAX_EPOCHS (%d): using %d warm-up "
                   "epoch(s), then %s at the peak LR %g", requested, max_epochs, used,
                   "the last epoch" if used else "the single epoch", s.BASE_LR)
    return used


def _drop_no_effect_warning(record):
    return "will have no effect" not in record.getMessage()


def build_scheduler(cfg, optimizer: torch.optim.Optimizer) -> EpochCosineLRScheduler:
    """The SOLVER.SCHEDULE warm-up + cosine schedule over SOLVER.MAX_EPOCHS, stepped once per epoch with
    :func:`start_epoch`.

    Each group's timm base value is its ``initial_lr`` (set by ``solver.build_optimizer``: the group's own peak
    under 'release', BASE_LR with an ``lr_scale`` under 'paper_text'); groups without one get BASE_LR.
    """
    s = cfg.SOLVER
    schedule = s.SCHEDULE
    epoch_t(schedule, 1)
    warmup = warmup_epochs(cfg)
    release = schedule == "release"
    for g in optimizer.param_groups:
        g.setdefault("initial_lr", s.BASE_LR)
    # A one-epoch cosine (t_initial 1) makes timm warn that the cosine "will have no effect": intended here
    # (paper_text: that epoch trains at the peak; release: MAX_EPOCHS 1), so not repeated.
    timm_logger = logging.getLogger(CosineLRScheduler.__module__)
    timm_logger.addFilter(_drop_no_effect_warning)
    try:
        scheduler = EpochCosineLRScheduler(
            optimizer,
            schedule,
            t_initial=s.MAX_EPOCHS if release else s.MAX_EPOCHS - warmup,
            lr_min=s.MIN_LR,
            warmup_t=warmup,
            warmup_lr_init=s.WARMUP_LR_INIT,
            warmup_prefix=not release,
            cycle_limit=1,
            t_in_epochs=True,
        )
    finally:
        timm_logger.removeFilter(_drop_no_effect_warning)
    first, last = epoch_lr(scheduler, 1), epoch_lr(scheduler, s.MAX_EPOCHS)
    if release:
        peak = max(epoch_lr(scheduler, e) for e in range(1, min(warmup, s.MAX_EPOCHS) + 2))
        logger.info("LR (schedule release): %g -> %g over %d warm-up epochs laid over a cosine of %d epochs to %g; "
                    "epoch 1 trains at %.4g, the highest at %.4g, epoch %d at %.4g", s.WARMUP_LR_INIT, s.BASE_LR,
                    warmup, s.MAX_EPOCHS, s.MIN_LR, first, peak, s.MAX_EPOCHS, last)
        if warmup and warmup >= s.MAX_EPOCHS:
            logger.warning("SOLVER.WARMUP_EPOCHS (%d) does not end inside SOLVER.MAX_EPOCHS (%d) under SOLVER.SCHEDULE "
                           "release: kept as the released code would run it, the run %s (epoch 1 at %.4g, epoch %d "
                           "at %.4g) and never trains at the peak LR %g", warmup, s.MAX_EPOCHS,
                           "stays in the warm-up" if warmup > s.MAX_EPOCHS else
                           "stays in the warm-up but for its last epoch, at MIN_LR",
                           first, s.MAX_EPOCHS, last, s.BASE_LR)
    else:
        logger.info("LR (schedule paper_text): %g -> %g over %d warm-up epochs, then cosine to %g after epoch %d; "
                    "epoch 1 trains at %.4g, epoch %d at %.4g", s.WARMUP_LR_INIT, s.BASE_LR, warmup, s.MIN_LR,
                    s.MAX_EPOCHS, first, s.MAX_EPOCHS, last)
    return scheduler


def start_epoch(scheduler: CosineLRScheduler, epoch: int) -> None:
    """Set every group's LR to the one 1-based ``epoch`` trains at: call at the start of the epoch (and on
    resume, with the epoch to come)."""
    scheduler.step(epoch_t(_schedule_of(scheduler), epoch))


def epoch_lrs(scheduler: CosineLRScheduler, epoch: int) -> List[float]:
    """The LR of each of the optimizer's groups while 1-based ``epoch`` trains (``lr_scale`` applied, as timm
    does; no side effect on the optimizer)."""
    values = scheduler._get_lr(epoch_t(_schedule_of(scheduler), epoch))
    return [float(v) * g.get("lr_scale", 1.0) for v, g in zip(values, scheduler.optimizer.param_groups)]


def base_group_index(optimizer: torch.optim.Optimizer) -> int:
    """The index of the group named 'weights' (the base LR), else 0."""
    for i, g in enumerate(optimizer.param_groups):
        if g.get("name") == "weights":
            return i
    return 0


def epoch_lr(scheduler: CosineLRScheduler, epoch: int) -> float:
    """The base LR (of the 'weights' group, else the first) while 1-based ``epoch`` trains."""
    return epoch_lrs(scheduler, epoch)[base_group_index(scheduler.optimizer)]
