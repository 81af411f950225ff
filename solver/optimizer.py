"""Optimizer of Sec. IV-B: parameter groups by weight decay and learning-rate scale."""
import logging
from typing import Dict, List, Set, Tuple

import torch
import torch.nn as nn

from utils.distributed import unwrap_model

logger = logging.getLogger(__name__)


def no_decay_names(model: nn.Module) -> Set[str]:
    """Full names listed by ``model.no_weight_decay()`` (timm convention), if it has one."""
    fn = getattr(model, "no_weight_decay", None)
    names = set(fn()) if callable(fn) else set()
    unknown = names - {n for n, _ in model.named_parameters()}
    if unknown:
        logger.warning("no_weight_decay() names that are not parameters (expected full names): %s",
                       sorted(unknown))
    return names


def param_groups(model: nn.Module, weight_decay: float, bias_lr_factor: float) -> List[Dict]:
    """Trainable parameters split into groups with ``weight_decay`` and ``lr_scale``.

    No decay: parameters with ndim <= 1 (norms, biases, GeM p, PReLU), names ending in 'bias',
    and the names from ``model.no_weight_decay()`` (position / class / camera embeddings).
    ``lr_scale = bias_lr_factor`` for names ending in 'bias', else 1. ``lr_scale`` is what timm
    schedulers multiply their learning rate by, so the factor survives scheduling.
    """
    model = unwrap_model(model)
    skip = no_decay_names(model)
    groups: Dict[Tuple[float, float], Dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_bias = name.endswith("bias")
        decay = 0.0 if (p.ndim <= 1 or is_bias or name in skip) else weight_decay
        scale = bias_lr_factor if is_bias else 1.0
        group = groups.setdefault((decay, scale), {"params": [], "names": [],
                                                   "weight_decay": decay, "lr_scale": scale})
        group["params"].append(p)
        group["names"].append(name)
    for (decay, scale), g in groups.items():
        logger.info("param group: %d tensors, weight_decay=%g, lr_scale=%g", len(g["params"]), decay, scale)
    return list(groups.values())


def build_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    """SGD (momentum SOLVER.MOMENTUM) or AdamW over ``param_groups``; each group starts at
    ``SOLVER.BASE_LR * lr_scale`` (the scheduler then sets it every epoch)."""
    s = cfg.SOLVER
    groups = param_groups(model, s.WEIGHT_DECAY, s.BIAS_LR_FACTOR)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    for g in groups:
        g["lr"] = s.BASE_LR * g["lr_scale"]
    name = s.OPTIMIZER_NAME
    if name == "SGD":
        return torch.optim.SGD(groups, lr=s.BASE_LR, momentum=s.MOMENTUM)
    if name == "AdamW":
        return torch.optim.AdamW(groups, lr=s.BASE_LR)
    raise ValueError(f"unknown SOLVER.OPTIMIZER_NAME {name!r} (SGD | AdamW)")
