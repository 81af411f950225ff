"""BNNeck heads: BatchNorm (bias frozen) then a bias-free ID classifier, one per supervised feature."""
import torch.nn as nn


class BNNeckHead(nn.Module):
    """feature [B, d] -> (logits [B, num_classes], feature after BN [B, d])."""

    def __init__(self, dim, num_classes):
        super().__init__()
        self.bn = nn.BatchNorm1d(dim)
        self.bn.bias.requires_grad_(False)
        nn.init.ones_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)
        self.classifier = nn.Linear(dim, num_classes, bias=False)
        nn.init.normal_(self.classifier.weight, std=0.001)

    def forward(self, feat):
        bn_feat = self.bn(feat)
        return self.classifier(bn_feat), bn_feat
