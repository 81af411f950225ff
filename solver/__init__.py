"""Optimizer and learning-rate schedule (Sec. IV-B; as released by default, see solver/scheduler.py)."""
from solver.optimizer import build_optimizer, no_decay_names, param_groups
from solver.scheduler import (SCHEDULES, base_group_index, build_scheduler, epoch_lr, epoch_lrs, epoch_t,
                              start_epoch)

__all__ = ["build_optimizer", "build_scheduler", "param_groups", "no_decay_names", "epoch_lr", "epoch_lrs",
           "epoch_t", "start_epoch", "base_group_index", "SCHEDULES"]
