"""BNNeck heads: BatchNorm (bias frozen) then a bias-free ID classifier, one per supervised feature.

The named results of the heads and of the model in training mode live here too: :class:`HeadOutput`
(what a head returns) and :class:`FeatureOutput` (what the model returns per feature in training, the
loss's input). Both are ``NamedTuple``\\ s, so ``logits, feature = output`` keeps working.
"""
from typing import NamedTuple, Optional

import torch
import torch.nn as nn


class HeadOutput(NamedTuple):
    """What a :class:`BNNeckHead` returns."""

    logits: torch.Tensor      # [B, num_classes], ID classifier scores
    bn_feature: torch.Tensor  # [B, d], the feature after the BNNeck's BatchNorm


class FeatureOutput(NamedTuple):
    """One supervised feature in training mode: the loss's input (``loss.build_loss``).

    ``None`` in a field skips that loss term (no ID loss without logits, no triplet loss without a feature).
    """

    logits: Optional[torch.Tensor]   # [B, num_classes], the ID loss's input (Eq. 10)
    feature: Optional[torch.Tensor]  # [B, d], the feature before the BNNeck, the triplet loss's input (Eq. 11)


class BNNeckHead(nn.Module):
    """feature [B, d] -> ``HeadOutput(logits [B, num_classes], bn_feature [B, d])``."""

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm1d(dim)
        self.bn.bias.requires_grad_(False)
        nn.init.ones_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)
        self.classifier = nn.Linear(dim, num_classes, bias=False)
        nn.init.normal_(self.classifier.weight, std=0.001)

    def forward(self, feat: torch.Tensor) -> HeadOutput:
        bn_feat = self.bn(feat)
        return HeadOutput(self.classifier(bn_feat), bn_feat)
