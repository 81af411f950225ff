"""Small modules a user could plug in, shared by several tests: the smallest backbone to register (the registry
tests, the user-code registration test) and a loss with a parameter of its own (the engine and DDP tests)."""
import torch
import torch.nn as nn

from loss import build_loss
from model.backbones import Backbone, BackboneOutput


class ToyCNN(Backbone):
    """A strided convolution: a [B, 24, H/8, W/8] map, no class token."""

    def __init__(self, img_size, name="toy_cnn"):
        super().__init__()
        self.name, self.out_dim, self.img_size = name, 24, tuple(img_size)
        self.conv = nn.Conv2d(3, 24, kernel_size=8, stride=8)

    @property
    def grid_size(self):
        return (self.img_size[0] // 8, self.img_size[1] // 8)

    def forward(self, x, cam_ids=None):
        return BackboneOutput(None, self.conv(x).relu())


class ScaledLoss(nn.Module):
    """The configured loss times a learned scale exp(log_scale): a loss that owns a parameter."""

    def __init__(self, cfg, num_classes):
        super().__init__()
        self.inner = build_loss(cfg, num_classes)
        self.log_scale = nn.Parameter(torch.zeros(()))

    def forward(self, outputs, pids):
        total, terms = self.inner(outputs, pids)
        return total * self.log_scale.exp(), terms
