"""Triplet loss with batch-hard mining (Eq. 11)."""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F


def euclidean_dist(x: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Pairwise Euclidean distances [len(x), len(y)] between the rows of ``x`` and ``y`` (default ``x``), in
    float32 or wider.

    Euclidean, not squared: the paper writes squared norms in Eq. 11, but the released code (as
    TransReID) ranks and trains with the plain Euclidean distance (docs/PAPER.md, "Losses"). The
    clamp keeps the square root's gradient finite on the diagonal.

    Both sets are centred on the mean of ``y`` first. Distances do not change, but the expansion
    |x|^2 + |y|^2 - 2 x.y no longer cancels a large common component: features of norm 100 that differ by
    0.1 (as a fused feature drifts during training from scratch) otherwise get float32 distances that are
    mostly rounding error, and the batch-hard triplet loss spikes on them.
    """
    dtype = torch.promote_types(x.dtype, torch.float32)
    y = x if y is None else y
    x, y = x.to(dtype), y.to(dtype)
    centre = y.mean(dim=0, keepdim=True)
    x, y = x - centre, y - centre
    d2 = torch.addmm((x * x).sum(dim=1, keepdim=True) + (y * y).sum(dim=1).unsqueeze(0), x, y.t(), alpha=-2.0)
    return d2.clamp_min(1e-12).sqrt()


def hard_example_mining(dist: torch.Tensor, pids: torch.Tensor, candidate_pids: Optional[torch.Tensor] = None):
    """Per anchor (row of ``dist``): the largest positive distance (itself included) and the smallest negative
    one among the candidates (columns; their identities ``candidate_pids``, default ``pids``).

    Returns ``(d_ap, d_an, has_negative)``; anchors without a negative get ``d_an = +inf``.
    """
    candidate_pids = pids if candidate_pids is None else candidate_pids
    same = pids.unsqueeze(1) == candidate_pids.unsqueeze(0)
    d_ap = dist.masked_fill(~same, float("-inf")).amax(dim=1)
    d_an = dist.masked_fill(same, float("inf")).amin(dim=1)
    return d_ap, d_an, (~same).any(dim=1)


class TripletLoss(nn.Module):
    """Batch-hard triplet loss on un-normalised features.

    ``margin == 0``: soft margin log(1 + exp(d_ap - d_an)) (Eq. 11), computed as softplus so that
    it stays finite for any distances (``nn.SoftMarginLoss`` overflows in float32 once d_an - d_ap < -88.7).
    ``margin > 0``: hinge max(0, d_ap - d_an + margin). Mean over anchors that have a negative;
    0 (with a graph) when none has.
    """

    def __init__(self, margin: float = 0.0):
        super().__init__()
        if margin < 0:
            raise ValueError(f"triplet margin must be >= 0, got {margin}")
        self.margin = float(margin)

    def forward(self, feat: torch.Tensor, pids: torch.Tensor, candidates: Optional[torch.Tensor] = None,
                candidate_pids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Mean loss of the anchors ``feat`` [B, d]; positives and negatives are mined among ``candidates``
        [M, d] with identities ``candidate_pids`` (default: the anchors themselves; the global batch under DDP,
        see ``loss.reid_loss.ReIDLoss``)."""
        if (candidates is None) != (candidate_pids is None):
            raise ValueError("candidates and candidate_pids go together")
        with torch.autocast(device_type=feat.device.type, enabled=False):
            dist = euclidean_dist(feat, candidates)
            d_ap, d_an, valid = hard_example_mining(dist, pids, candidate_pids)
            if not bool(valid.any()):
                return feat.float().sum() * 0.0
            gap = d_ap[valid] - d_an[valid]
            if self.margin > 0:
                return F.relu(gap + self.margin).mean()
            return F.softplus(gap).mean()  # Eq. 11
