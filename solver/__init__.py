"""Optimizer and learning-rate schedule (Sec. IV-B)."""
from solver.optimizer import build_optimizer, no_decay_names, param_groups
from solver.scheduler import build_scheduler, epoch_lr

__all__ = ["build_optimizer", "build_scheduler", "param_groups", "no_decay_names", "epoch_lr"]
