"""CNN branch of the Dual-branch Feature Extraction: a torchvision ResNet with a configurable last stride.

With last stride 1 a 256x128 image gives a 2048x16x8 map (X_c in Sec. III-A). The module keeps
torchvision's parameter names, so a torchvision-format ImageNet state dict loads as it is.
Registered as ``resnet18``, ``resnet34``, ``resnet50``, ``resnet101`` and ``resnet152``.
"""
import logging
from typing import Callable, Iterator, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torchvision

from utils.errors import ConfigError

from ..checkpointing import checkpoint, checkpointing_active
from .base import Backbone, BackboneOutput
from .registry import register_backbone
from .weights import load_checked, read_state_dict, strip_prefix

logger = logging.getLogger(__name__)


def _layer_output_size(size: Tuple[int, int], layer: nn.Module) -> Tuple[int, int]:
    """(H, W) after a ``Conv2d`` or ``MaxPool2d`` (floor mode), from its kernel, stride, padding, dilation."""
    def pair(v):
        return tuple(v) if isinstance(v, (tuple, list)) else (v, v)

    k, s, p, d = (pair(layer.kernel_size), pair(layer.stride), pair(layer.padding), pair(layer.dilation))
    return tuple((n + 2 * p[i] - d[i] * (k[i] - 1) - 1) // s[i] + 1 for i, n in enumerate(size))


class ResNetBackbone(Backbone):
    """ResNet stem and four stages, without the ImageNet pooling and classifier.

    ``name``: a torchvision ResNet builder (``resnet50``...); ``img_size``: the input (H, W) that
    ``grid_size`` is given for (the network itself takes any size).
    """

    def __init__(self, name: str = "resnet50", last_stride: int = 1, img_size: Sequence[int] = (256, 128)):
        super().__init__()
        if name not in torchvision.models.resnet.__all__ or not name.islower():
            raise ValueError(f"{name!r} is not a torchvision ResNet builder")
        net = getattr(torchvision.models.resnet, name)(weights=None)
        if last_stride not in (1, 2):
            raise ConfigError(f"MODEL.CNN.LAST_STRIDE must be 1 or 2, got {last_stride}")
        first = net.layer4[0]
        # torchvision puts the stage's stride on conv2 (Bottleneck) or conv1 (BasicBlock).
        strided = first.conv2 if hasattr(first, "conv3") else first.conv1
        strided.stride = (last_stride, last_stride)
        first.downsample[0].stride = (last_stride, last_stride)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.out_dim = net.fc.in_features
        self.name = name
        self.img_size = tuple(img_size)
        self.grad_checkpointing = False
        self.channels_last = False

    @property
    def grid_size(self) -> Tuple[int, int]:
        """(H, W) of the map for ``img_size`` inputs: every layer on the main path, in order."""
        size = self.img_size
        for layer in self._main_path():
            size = _layer_output_size(size, layer)
        return size

    def _main_path(self) -> Iterator[nn.Module]:
        yield self.conv1
        yield self.maxpool
        for block in self.residual_blocks():
            yield from (block.conv1, block.conv2) + ((block.conv3,) if hasattr(block, "conv3") else ())

    def residual_blocks(self) -> Iterator[nn.Module]:
        """The residual blocks of the four stages, in order."""
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            yield from stage

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each residual block's activations in the backward (``MODEL.GRAD_CHECKPOINT``);
        BatchNorm running statistics are still updated once per step (``model.checkpointing``)."""
        self.grad_checkpointing = enable

    def set_channels_last(self, enable: bool = True) -> None:
        """Keep the convolution weights and run the images in channels-last memory format
        (``MODEL.CHANNELS_LAST``); the values and the state dict are unchanged."""
        self.channels_last = enable
        self.to(memory_format=torch.channels_last if enable else torch.contiguous_format)

    def forward(self, x: torch.Tensor, cam_ids: Optional[torch.Tensor] = None) -> BackboneOutput:
        """``BackboneOutput(None, X_c [B, out_dim, H, W])``: no class token; ``cam_ids`` is not used."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        if checkpointing_active(self):
            for block in self.residual_blocks():
                x = checkpoint(block, x)
        else:
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return BackboneOutput(None, x)

    def load_pretrained(self, path: str, key: str = "MODEL.CNN.PRETRAIN_PATH") -> None:
        """Load a torchvision-format ImageNet state dict; ``fc.*`` is dropped, anything else must match."""
        state = read_state_dict(path, key)
        state = {k: v for k, v in strip_prefix(state).items() if not k.startswith("fc.")}
        load_checked(self, state, key, path, f"a torchvision {self.name} state dict")
        logger.info("loaded %s ImageNet weights from %s", self.name, path)


def _register_resnet(name: str) -> Callable[..., ResNetBackbone]:
    """Register the torchvision ResNet ``name`` as a CNN backbone; returns its factory."""
    def factory(img_size: Sequence[int] = (256, 128), last_stride: int = 1) -> ResNetBackbone:
        return ResNetBackbone(name, last_stride=last_stride, img_size=img_size)

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = f"torchvision {name} without its pooling and classifier (the CNN branch)."
    return register_backbone(name, "cnn")(factory)


resnet18 = _register_resnet("resnet18")
resnet34 = _register_resnet("resnet34")
resnet50 = _register_resnet("resnet50")
resnet101 = _register_resnet("resnet101")
resnet152 = _register_resnet("resnet152")
