"""CNN branch of the Dual-branch Feature Extraction: a torchvision ResNet with a configurable last stride.

With last stride 1 a 256x128 image gives a 2048x16x8 map (X_c in Sec. III-A). The module keeps
torchvision's parameter names, so a torchvision-format ImageNet state dict loads as it is.
"""
import logging

import torch.nn as nn
import torchvision

from utils.errors import ConfigError

from .weights import load_checked, read_state_dict, strip_prefix

logger = logging.getLogger(__name__)

_RESNETS = {
    "resnet18": torchvision.models.resnet18,
    "resnet34": torchvision.models.resnet34,
    "resnet50": torchvision.models.resnet50,
    "resnet101": torchvision.models.resnet101,
    "resnet152": torchvision.models.resnet152,
}


class ResNetBackbone(nn.Module):
    """ResNet stem and four stages, without the ImageNet pooling and classifier."""

    def __init__(self, name="resnet50", last_stride=1):
        super().__init__()
        if name not in _RESNETS:
            raise ValueError(f"unknown ResNet {name!r}; known: {', '.join(_RESNETS)}")
        net = _RESNETS[name](weights=None)
        if last_stride not in (1, 2):
            raise ConfigError(f"MODEL.CNN.LAST_STRIDE must be 1 or 2, got {last_stride}")
        first = net.layer4[0]
        # torchvision puts the stage's stride on conv2 (Bottleneck) or conv1 (BasicBlock).
        strided = first.conv2 if hasattr(first, "conv3") else first.conv1
        strided.stride = (last_stride, last_stride)
        first.downsample[0].stride = (last_stride, last_stride)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.out_channels = net.fc.in_features
        self.name = name

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def load_pretrained(self, path, key="MODEL.CNN.PRETRAIN_PATH"):
        """Load a torchvision-format ImageNet state dict; ``fc.*`` is dropped, anything else must match."""
        state = read_state_dict(path, key)
        state = {k: v for k, v in strip_prefix(state).items() if not k.startswith("fc.")}
        load_checked(self, state, key, path, f"a torchvision {self.name} state dict")
        logger.info("loaded %s ImageNet weights from %s", self.name, path)
