"""Backbones of the Dual-branch Feature Extraction, built by their registered names.

Each backbone module registers its names with ``@register_backbone(name, kind)`` (``registry.py``) and
implements the :class:`~model.backbones.base.Backbone` interface; importing this package imports them
all. A new backbone is one such module imported below: the config's allowed names, the builders and
the tests read the registry.
"""
from typing import Any, Sequence

from . import resnet, vit, t2t_vit  # noqa: F401  (register the backbones, in the order the config lists them)
from .base import Backbone, BackboneOutput, split_tokens
from .camera import CameraEmbedding
from .registry import KINDS, backbone_kind, backbone_names, build_backbone, option_names, register_backbone
from .resnet import ResNetBackbone
from .t2t_vit import T2TViT
from .vit import ReIDVisionTransformer, patch_grid
from .weights import WeightsError


def build_cnn(name: str, last_stride: int = 1, img_size: Sequence[int] = (256, 128), **options: Any) -> Backbone:
    """The registered CNN ``name`` (``MODEL.CNN.NAME``): a ``[B, out_dim, H, W]`` map, no class token.
    ``options``: more of ``model.spec.CNNOptions`` (:func:`build_backbone`)."""
    return build_backbone("cnn", name, img_size=tuple(img_size), last_stride=last_stride, **options)


def build_transformer(name: str, img_size: Sequence[int], stride_size: Sequence[int], **options: Any) -> Backbone:
    """The registered Transformer ``name`` (``MODEL.TRANSFORMER.NAME``): the class token and the other
    tokens as a ``[B, out_dim, *grid_size]`` map.

    ``options``: more of ``model.spec.TransformerOptions``, each passed to the factories that take it
    (:func:`build_backbone`): ``stride_size`` (patch stride) to the ViTs, ``t2t_attn_scale`` /
    ``t2t_pos_embed`` (``MODEL.TRANSFORMER.T2T_*``) to T2T-ViT; ``num_cams`` > 0 adds a camera embedding.
    Options not given keep the factory's defaults.
    """
    return build_backbone("transformer", name, img_size=tuple(img_size), stride_size=tuple(stride_size), **options)


__all__ = ["KINDS", "Backbone", "BackboneOutput", "CameraEmbedding", "ResNetBackbone", "ReIDVisionTransformer",
           "T2TViT", "WeightsError", "backbone_kind", "backbone_names", "build_backbone", "build_cnn",
           "build_transformer", "option_names", "patch_grid", "register_backbone", "split_tokens"]
