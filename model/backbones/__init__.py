"""Backbones of the Dual-branch Feature Extraction, built by name."""
from .resnet import ResNetBackbone
from .t2t_vit import T2TViT, build_t2t_vit_t_14
from .vit import VIT_ARCHS, ReIDVisionTransformer, build_vit, patch_grid
from .weights import WeightsError


def build_cnn(name, last_stride=1):
    return ResNetBackbone(name, last_stride)


def build_transformer(name, img_size, stride_size, num_cams=0, sie_coe=3.0, drop_path_rate=0.1, drop_rate=0.0,
                      attn_drop_rate=0.0, t2t_attn_scale="head_dim", t2t_pos_embed="checkpoint"):
    """A token backbone returning ``[B, 1 + N, C]``; ``.grid_size`` gives the (H, W) layout of the N tokens.

    ``t2t_attn_scale`` / ``t2t_pos_embed``: T2T-ViT only (``MODEL.TRANSFORMER.T2T_*``).
    """
    kwargs = dict(num_cams=num_cams, sie_coe=sie_coe, drop_path_rate=drop_path_rate, drop_rate=drop_rate,
                  attn_drop_rate=attn_drop_rate)
    if name == "t2t_vit_t_14":
        return build_t2t_vit_t_14(img_size, attn_scale=t2t_attn_scale, pos_embed=t2t_pos_embed, **kwargs)
    if name in VIT_ARCHS:
        return build_vit(name, img_size, stride_size, **kwargs)
    raise ValueError(f"unknown Transformer {name!r}; known: {', '.join(list(VIT_ARCHS) + ['t2t_vit_t_14'])}")


__all__ = ["ResNetBackbone", "ReIDVisionTransformer", "T2TViT", "WeightsError", "build_cnn", "build_transformer",
           "patch_grid"]
