"""What FusionReID asks of a backbone, the same for both branches of the Dual-branch Feature Extraction.

Every registered backbone (``model.backbones.registry``) is a :class:`Backbone`:

* ``name``: its registered name; ``out_dim``: the width C of its features (2048 for ResNet50's map,
  768 for ViT-B's tokens, 384 for T2T-ViT-14's);
* ``grid_size``: the (H, W) of its local map for the input size it was built for (the CNN map at that
  size and last stride, 16x8 for ResNet50 at 256x128; the patch grid of a ViT, 21x10 at stride 12);
* ``has_camera_embedding``: whether ``forward`` adds a learned per-camera embedding (then it needs
  ``cam_ids``; see ``model.backbones.camera``);
* ``load_pretrained(path, key)``: ImageNet weights from a local file, errors naming ``key``;
* ``no_weight_decay()``: its parameter names that take no weight decay (timm convention);
* ``set_grad_checkpointing(enable)``: recompute its blocks' activations in the backward instead of
  storing them (timm's convention; ``MODEL.GRAD_CHECKPOINT``, see ``model.checkpointing``); a CNN
  also ``set_channels_last(enable)`` (``MODEL.CHANNELS_LAST``). Without them, turning them on is an error;
* ``forward(images, cam_ids=None)`` -> :class:`BackboneOutput` ``(cls_token, feature_map)``: the local
  features as a ``[B, C, H, W]`` map (X_c; X_t with the patch tokens laid out on their grid) and, for a
  backbone with a class token, that token ``[B, C]`` (f̂_t). A backbone without one (the CNN) gives
  ``cls_token=None``: its global feature is the pooled map (f̂_c = GeMP(X_c), pooled by FusionReID).
"""
from typing import NamedTuple, Optional, Set, Tuple

import torch
import torch.nn as nn

from utils.errors import ConfigError


class BackboneOutput(NamedTuple):
    """A backbone's features: the class token ``[B, C]`` (None without one) and the local map ``[B, C, H, W]``."""

    cls_token: Optional[torch.Tensor]
    feature_map: torch.Tensor


def split_tokens(tokens: torch.Tensor, grid_size: Tuple[int, int]) -> BackboneOutput:
    """``[B, 1 + H*W, C]`` tokens (class token first, then the patches row by row) -> ``BackboneOutput``."""
    h, w = grid_size
    if tokens.shape[1] != 1 + h * w:
        raise ValueError(f"{tokens.shape[1]} tokens are not a class token and a {h}x{w} grid")
    return BackboneOutput(tokens[:, 0], tokens[:, 1:].transpose(1, 2).reshape(tokens.shape[0], -1, h, w))


class Backbone(nn.Module):
    """Interface of the backbones (see the module docstring); subclasses set ``name`` and ``out_dim`` and
    provide ``grid_size``, ``forward`` and ``load_pretrained``. Defines no ``__init__``, so it can follow
    another base class (timm's ``VisionTransformer``) in a subclass's bases."""

    name: str = ""
    out_dim: int
    grid_size: Tuple[int, int]

    @property
    def has_camera_embedding(self) -> bool:
        return False

    def forward(self, x: torch.Tensor, cam_ids: Optional[torch.Tensor] = None) -> BackboneOutput:
        raise NotImplementedError

    def load_pretrained(self, path: str, key: str) -> None:
        """Load ImageNet weights from the local file ``path``; errors name the config ``key``."""
        raise NotImplementedError

    @torch.jit.ignore
    def no_weight_decay(self) -> Set[str]:
        """Names (relative to this module) of parameters that take no weight decay."""
        return set()

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Turn activation checkpointing of the blocks on or off (a backbone without it: off only)."""
        if enable:
            raise ConfigError(f"MODEL.GRAD_CHECKPOINT: the {self.name or type(self).__name__} backbone has no "
                              f"activation checkpointing (Backbone.set_grad_checkpointing)")

    def set_channels_last(self, enable: bool = True) -> None:
        """Run in channels-last memory format, or back (a CNN backbone's option; others: off only)."""
        if enable:
            raise ConfigError(f"MODEL.CHANNELS_LAST: the {self.name or type(self).__name__} backbone has no "
                              f"channels-last mode (Backbone.set_channels_last)")
