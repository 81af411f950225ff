"""The training objective: ID + triplet loss on every supervised feature, summed (Eq. 12)."""
import logging
from collections import OrderedDict
from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn

from loss.id_loss import CrossEntropyLabelSmooth
from loss.triplet import TripletLoss
from utils.distributed import all_gather_with_grad, is_dist

logger = logging.getLogger(__name__)

Outputs = Dict[str, Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]]


class ReIDLoss(nn.Module):
    """``(outputs, pids) -> (total, terms)``.

    ``outputs``: ``name -> (logits, feat)`` for any subset of the model's features ('cnn',
    'transformer', 'lru_cnn', ...); a ``None`` logits or feat skips that term. ``terms``: an ordered
    dict ``{'<name>/id': w_id * L_id, '<name>/triplet': w_tri * L_tri, ...}`` in the order of
    ``outputs``; ``total`` is their sum (Eq. 12).

    ``global_batch`` (``MODEL.TRIPLET_BATCH 'global'``): under DDP the triplet loss of this process's anchors
    mines its hardest positive and negative among the features of *every* process (gathered with their
    gradients), and DDP's gradient average over the processes then gives the gradient of the loss of the whole
    batch: N processes x B/N images compute what one process computes on B (as the release trained, on one
    GPU). The ID loss needs no gathering (a mean over images). Without a process group it changes nothing.
    """

    def __init__(self, num_classes: int, id_weight: float = 1.0, triplet_weight: float = 1.0,
                 label_smooth: float = 0.1, margin: float = 0.0, global_batch: bool = True):
        super().__init__()
        self.id_loss = CrossEntropyLabelSmooth(num_classes, label_smooth)
        self.triplet = TripletLoss(margin)
        self.id_weight = float(id_weight)
        self.triplet_weight = float(triplet_weight)
        self.global_batch = bool(global_batch)

    def _gathered(self, outputs: Outputs, pids: torch.Tensor):
        """``{name: every process's features}`` and every process's pids (one gather for all features)."""
        names = [n for n, (_, feat) in outputs.items() if feat is not None]
        if not (self.triplet_weight and names and self.global_batch and is_dist()):
            return {}, None
        feats = [outputs[n][1] for n in names]
        dtype = torch.promote_types(feats[0].dtype, torch.float32)
        gathered = all_gather_with_grad(torch.cat([f.to(dtype) for f in feats], dim=1))
        all_pids = all_gather_with_grad(pids)  # integers: gathered, no gradient
        return dict(zip(names, gathered.split([f.shape[1] for f in feats], dim=1))), all_pids

    def forward(self, outputs: Outputs, pids: torch.Tensor):
        if not outputs:
            raise ValueError("the loss got no model outputs")
        candidates, candidate_pids = self._gathered(outputs, pids)
        terms = OrderedDict()
        for name, (logits, feat) in outputs.items():
            if logits is not None and self.id_weight:
                terms[f"{name}/id"] = self.id_weight * self.id_loss(logits, pids)
            if feat is not None and self.triplet_weight:
                terms[f"{name}/triplet"] = self.triplet_weight * self.triplet(
                    feat, pids, candidates.get(name), candidate_pids)
        if not terms:
            raise ValueError("every loss term is disabled (zero weights or no logits/features)")
        total = torch.stack(list(terms.values())).sum()  # Eq. 12
        return total, terms


def build_loss(cfg, num_classes: int) -> ReIDLoss:
    """The objective of Sec. III-C from MODEL.ID_LOSS_WEIGHT, MODEL.TRIPLET_LOSS_WEIGHT,
    MODEL.LABEL_SMOOTH and SOLVER.MARGIN."""
    loss = ReIDLoss(num_classes, cfg.MODEL.ID_LOSS_WEIGHT, cfg.MODEL.TRIPLET_LOSS_WEIGHT,
                    cfg.MODEL.LABEL_SMOOTH, cfg.SOLVER.MARGIN, global_batch=cfg.MODEL.TRIPLET_BATCH == "global")
    logger.info("loss: label-smoothing CE (eps=%g, weight %g) + batch-hard triplet (%s, weight %g)",
                cfg.MODEL.LABEL_SMOOTH, cfg.MODEL.ID_LOSS_WEIGHT,
                f"margin {cfg.SOLVER.MARGIN:g}" if cfg.SOLVER.MARGIN > 0 else "soft margin",
                cfg.MODEL.TRIPLET_LOSS_WEIGHT)
    return loss


@torch.no_grad()
def id_accuracy_tensor(outputs: Outputs, pids: torch.Tensor, name: Optional[str] = None) -> torch.Tensor:
    """Top-1 identity accuracy of the logits of feature ``name``, or the mean over all features, as a 0-d
    float32 tensor on the logits' device (no device-to-host copy: the trainer copies it with the loss)."""
    names = [name] if name is not None else [n for n, (logits, _) in outputs.items() if logits is not None]
    if not names:
        raise ValueError("no logits to score")
    accs = [(outputs[n][0].argmax(dim=1) == pids).float().mean() for n in names]
    return torch.stack(accs).mean()


def id_accuracy(outputs: Outputs, pids: torch.Tensor, name: Optional[str] = None) -> float:
    """:func:`id_accuracy_tensor` as a Python float."""
    return float(id_accuracy_tensor(outputs, pids, name))
