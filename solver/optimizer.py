"""Optimizer: parameter groups by weight decay and learning rate (SOLVER.WEIGHT_DECAY_ON, SOLVER.SCHEDULE).

Groups (every parameter with ``requires_grad``; each group has a readable ``"name"`` and its ``"names"``):

- ``WEIGHT_DECAY_ON 'all'`` (as released): names containing the substring 'bias' -> group ``'biases'``, LR
  ``BASE_LR * BIAS_LR_FACTOR`` and weight decay ``WEIGHT_DECAY_BIAS``; every other parameter (norm weights and
  embeddings included) -> group ``'weights'``, LR ``BASE_LR`` and weight decay ``WEIGHT_DECAY``. The release
  builds one group per parameter with these values; one group per kind is the same optimisation.
- ``WEIGHT_DECAY_ON 'weights'``: no weight decay on parameters with ndim <= 1 (norms, biases, GeM p, PReLU), on
  names ending in 'bias' and on the names of ``model.no_weight_decay()`` (position / class / camera
  embeddings): ``'weights'`` (WEIGHT_DECAY, BASE_LR), ``'no_decay'`` (0, BASE_LR), ``'biases'`` (names ending
  in 'bias': 0, BASE_LR * BIAS_LR_FACTOR).

How the bias LR factor meets the schedule (solver/scheduler.py):

- ``SCHEDULE 'release'``: the group's ``initial_lr`` (timm's base value) is its own peak, ``BASE_LR *
  BIAS_LR_FACTOR`` for biases, and there is no ``lr_scale``: the bias group warms up from the same
  WARMUP_LR_INIT to its own peak and ends at the same MIN_LR, as in the released code's timm.
- ``SCHEDULE 'paper_text'``: ``initial_lr = BASE_LR`` for every group and ``lr_scale = BIAS_LR_FACTOR`` on the
  biases (timm multiplies it in): biases at BIAS_LR_FACTOR x the base LR at every epoch.
"""
import logging
from typing import Dict, List, Optional, Set

import torch
import torch.nn as nn

from utils.distributed import unwrap_model

logger = logging.getLogger(__name__)

GROUP_ORDER = ("weights", "biases", "no_decay")


def no_decay_names(model: nn.Module) -> Set[str]:
    """Full names listed by ``model.no_weight_decay()`` (timm convention), if it has one."""
    fn = getattr(model, "no_weight_decay", None)
    names = set(fn()) if callable(fn) else set()
    unknown = names - {n for n, _ in model.named_parameters()}
    if unknown:
        logger.warning("no_weight_decay() names that are not parameters (expected full names): %s",
                       sorted(unknown))
    return names


def _kind(name: str, p: nn.Parameter, decay_on: str, skip: Set[str]) -> str:
    """'weights' | 'biases' | 'no_decay' of one parameter under ``decay_on``."""
    if decay_on == "all":
        return "biases" if "bias" in name else "weights"
    if decay_on == "weights":
        if name.endswith("bias"):
            return "biases"
        return "no_decay" if (p.ndim <= 1 or name in skip) else "weights"
    raise ValueError(f"unknown SOLVER.WEIGHT_DECAY_ON {decay_on!r} (all | weights)")


def param_groups(model: nn.Module, weight_decay: float, bias_lr_factor: float, decay_on: str = "all",
                 weight_decay_bias: float = None, loss: Optional[nn.Module] = None) -> List[Dict]:
    """Trainable parameters split into named groups (see the module docstring), in the order weights, biases,
    no_decay (groups without parameters left out). ``loss``: a loss with parameters of its own (e.g. class
    centres), trained with the model; its parameters are named ``loss.<name>`` and grouped by the same rules.

    Each group has ``params``, ``names``, ``name``, ``weight_decay`` and ``lr_factor`` (its LR over BASE_LR);
    :func:`build_optimizer` turns the factor into ``lr`` / ``initial_lr`` / ``lr_scale`` for the schedule.
    ``weight_decay_bias`` (default ``weight_decay``) is the biases' decay under 'all'.
    """
    model = unwrap_model(model)
    skip = no_decay_names(model) if decay_on == "weights" else set()
    if weight_decay_bias is None:
        weight_decay_bias = weight_decay
    settings = {
        "weights": (weight_decay, 1.0),
        "biases": (weight_decay_bias if decay_on == "all" else 0.0, bias_lr_factor),
        "no_decay": (0.0, 1.0),
    }
    groups: Dict[str, Dict] = {}
    named = list(model.named_parameters())
    if isinstance(loss, nn.Module):
        named += list(loss.named_parameters(prefix="loss"))
    for name, p in named:
        if not p.requires_grad:
            continue
        kind = _kind(name, p, decay_on, skip)
        decay, factor = settings[kind]
        group = groups.setdefault(kind, {"name": kind, "params": [], "names": [], "weight_decay": float(decay),
                                         "lr_factor": float(factor)})
        group["params"].append(p)
        group["names"].append(name)
    return [groups[k] for k in GROUP_ORDER if k in groups]


def build_optimizer(cfg, model: nn.Module, loss: Optional[nn.Module] = None) -> torch.optim.Optimizer:
    """SGD (momentum SOLVER.MOMENTUM) or AdamW over :func:`param_groups` of the model and the loss's own
    parameters, if it has any; logs one line per group."""
    s = cfg.SOLVER
    groups = param_groups(model, s.WEIGHT_DECAY, s.BIAS_LR_FACTOR, s.WEIGHT_DECAY_ON, s.WEIGHT_DECAY_BIAS, loss)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    for g in groups:
        factor = g.pop("lr_factor")
        g["lr"] = s.BASE_LR * factor
        if s.SCHEDULE == "release":
            g["initial_lr"] = s.BASE_LR * factor   # timm's base value: the group's own peak
        else:
            g["initial_lr"] = s.BASE_LR            # timm multiplies lr_scale in at every step
            g["lr_scale"] = factor
        logger.info("param group %r: %d tensors (%d values), peak lr %g (%g x SOLVER.BASE_LR, %s), weight decay %g",
                    g["name"], len(g["params"]), sum(p.numel() for p in g["params"]), g["lr"], factor,
                    "own warm-up and cosine" if s.SCHEDULE == "release" else "lr_scale", g["weight_decay"])
    name = s.OPTIMIZER_NAME
    if name == "SGD":
        return torch.optim.SGD(groups, lr=s.BASE_LR, momentum=s.MOMENTUM)
    if name == "AdamW":
        return torch.optim.AdamW(groups, lr=s.BASE_LR)
    raise ValueError(f"unknown SOLVER.OPTIMIZER_NAME {name!r} (SGD | AdamW)")
