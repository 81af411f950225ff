"""The smallest backbone a user could register: shared by the registry tests and the user-code registration test."""
import torch.nn as nn

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
