"""Transformer branch of the Dual-branch Feature Extraction: ViT-B/16 and DeiT-B/16 as used in TransReID.

A subclass of timm's ``VisionTransformer`` with
- an overlapping patch embedding (kernel 16, stride from ``MODEL.TRANSFORMER.STRIDE_SIZE``; ViT-B/16*
  uses stride 12, so a 256x128 image gives a 21x10 grid), the grid derived from the input size;
- a learnable camera embedding (TransReID's SIE, ``model.backbones.camera``) of shape
  ``[num_cams, 1, dim]`` scaled by ``SIE_COE`` and added to every token after the position embedding;
- no classification head; ``forward`` gives the class token and the patch tokens on their grid.

Registered as ``vit_base_patch16_224``, ``deit_base_patch16_224``, ``vit_small_patch16_224`` and
``vit_tiny_patch16_224``.
"""
import logging
import math
from functools import partial
from typing import Callable, Dict, Optional, Sequence, Set, Tuple

import torch
import torch.nn as nn
from timm.models import checkpoint_seq, named_apply
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

from ..checkpointing import checkpointing_active
from ..weight_init import trunc_normal_
from .base import Backbone, BackboneOutput, split_tokens
from .camera import CameraEmbedding
from .registry import register_backbone
from .weights import WeightsError, check_path, load_checked, read_state_dict, strip_prefix

logger = logging.getLogger(__name__)


def patch_grid(img_size: Sequence[int], patch_size: Sequence[int], stride: Sequence[int]) -> Tuple[int, int]:
    """Tokens along (height, width) of a ``patch_size`` convolution with ``stride`` and no padding."""
    return tuple((s - p) // st + 1 for s, p, st in zip(img_size, patch_size, stride))


class OverlapPatchEmbed(nn.Module):
    """Image to patch tokens with a strided convolution (overlapping when stride < patch size)."""

    def __init__(self, img_size=(256, 128), patch_size=16, stride=(12, 12), in_chans=3, embed_dim=768,
                 bias=True, device=None, dtype=None, **_timm_args):
        super().__init__()
        self.img_size = tuple(img_size)
        self.patch_size = (patch_size, patch_size) if isinstance(patch_size, int) else tuple(patch_size)
        self.stride = tuple(stride)
        self.grid_size = patch_grid(self.img_size, self.patch_size, self.stride)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=self.patch_size, stride=self.stride, bias=bias,
                              device=device, dtype=dtype)

    def forward(self, x):
        if tuple(x.shape[-2:]) != self.img_size:
            raise ValueError(f"the Transformer branch was built for {self.img_size[0]}x{self.img_size[1]} "
                             f"inputs (INPUT.SIZE_*), got {x.shape[-2]}x{x.shape[-1]}")
        return self.proj(x).flatten(2).transpose(1, 2)  # B, N, C


class ReIDVisionTransformer(VisionTransformer, CameraEmbedding, Backbone):
    """ViT/DeiT with overlapping patches and camera embeddings; ``forward`` gives the class token and the
    patch tokens after the final norm, the latter as a ``[B, C, H, W]`` map on the patch grid."""

    def __init__(self, img_size: Sequence[int] = (256, 128), stride_size: Sequence[int] = (12, 12),
                 num_cams: int = 0, sie_coe: float = 3.0, patch_size: int = 16, embed_dim: int = 768,
                 depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0, drop_path_rate: float = 0.1,
                 drop_rate: float = 0.0, attn_drop_rate: float = 0.0, name: str = ""):
        super().__init__(
            img_size=tuple(img_size), patch_size=patch_size, num_classes=0, embed_dim=embed_dim, depth=depth,
            num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=True, drop_path_rate=drop_path_rate,
            pos_drop_rate=drop_rate, proj_drop_rate=drop_rate, attn_drop_rate=attn_drop_rate,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
            embed_layer=partial(OverlapPatchEmbed, stride=tuple(stride_size)),
        )
        self.init_camera_embedding(num_cams, embed_dim, sie_coe)
        self.name = name
        self.out_dim = embed_dim

    @property
    def grid_size(self) -> Tuple[int, int]:
        return self.patch_embed.grid_size

    def init_weights(self, mode: str = "", needs_reset: bool = True) -> None:
        """timm's default ViT initialisation (the random start without ``MODEL.TRANSFORMER.PRETRAIN_PATH``,
        ``PRETRAIN_CHOICE none``), with the truncated normals bounded at +-2 std (``model.weight_init``): timm's
        absolute bounds (+-2 at std 0.02) let a weight come out at exactly -2.0 (a 100-sigma outlier, several
        per random ViT-B). Same tensors, same order, same draws as timm's: position embedding N(0, 0.02)
        truncated, class token N(0, 1e-6), every Linear weight N(0, 0.02) truncated and its bias 0, the rest
        (patch-embedding convolution, LayerNorms) at their PyTorch defaults. timm calls this from its
        ``__init__``."""
        if mode or getattr(self, "weight_init_mode", ""):
            raise ValueError(f"ReIDVisionTransformer has timm's default initialisation only, not {mode!r}")
        trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        named_apply(partial(_init_vit_module, needs_reset=needs_reset), self)

    @torch.jit.ignore
    def no_weight_decay(self) -> Set[str]:
        return {"pos_embed", "cls_token", "sie_embed"}

    def forward(self, x: torch.Tensor, cam_ids: Optional[torch.Tensor] = None) -> BackboneOutput:
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.pos_embed
        x = self.add_camera_embedding(x, cam_ids)
        x = self.pos_drop(x)
        # timm's switch (``set_grad_checkpointing``) and helper, as in ``VisionTransformer.forward_features``
        x = checkpoint_seq(self.blocks, x) if checkpointing_active(self) else self.blocks(x)
        return split_tokens(self.norm(x), self.grid_size)  # f^_t [B, C]; X_t [B, C, H, W]

    # ----------------------------------------------------------------------------------- weights
    def load_pretrained(self, path: str, key: str = "MODEL.TRANSFORMER.PRETRAIN_PATH") -> None:
        """ImageNet weights in timm's format (``.pth``/``.safetensors``, DeiT's ``{'model': ...}``, the old
        ``jx_vit_base_p16_224-80ecf9dd.pth``) or Google's ``.npz``; the position embedding is resized
        bilinearly from the pretraining grid to this model's patch grid."""
        if path.endswith(".npz"):
            state = self._read_npz(path, key)
        else:
            state = strip_prefix(read_state_dict(path, key))
        state = self.checkpoint_filter_fn(state, key, path)
        # The camera embedding is this repository's own and starts from its initialisation.
        load_checked(self, state, key, path, f"a {self.embed_dim}-d ViT checkpoint", ignore_missing=("sie_embed",))
        logger.info("loaded Transformer ImageNet weights from %s (position embedding resized to %dx%d)",
                    path, *self.grid_size)

    def checkpoint_filter_fn(self, state: Dict[str, torch.Tensor], key: str = "",
                             path: str = "") -> Dict[str, torch.Tensor]:
        """Foreign ViT/DeiT weights -> this model: drop heads and DeiT's distillation token, resample pos_embed."""
        state = dict(state)
        if "dist_token" in state:  # distilled DeiT: the second prefix token has its own position
            state.pop("dist_token")
            pos = state.get("pos_embed")
            if pos is not None:
                state["pos_embed"] = torch.cat([pos[:, :1], pos[:, 2:]], dim=1)
        state = {k: v for k, v in state.items() if not k.startswith(("head", "fc_norm", "pre_logits"))}
        pos = state.get("pos_embed")
        if pos is not None:
            tokens = pos.shape[1] - 1
            side = int(math.isqrt(tokens))
            if side * side != tokens and tokens != self.patch_embed.num_patches:
                raise WeightsError(f"{key}: {path}: pos_embed has {tokens} patch positions, not a square grid")
        # timm resamples pos_embed from the pretraining grid (square) to ``patch_embed.grid_size``;
        # bilinear without antialiasing, as TransReID and the released FusionReID (docs/PAPER.md, "Backbones").
        return checkpoint_filter_fn(state, self, interpolation="bilinear", antialias=False)

    def _read_npz(self, path: str, key: str) -> Dict[str, torch.Tensor]:
        """Google's JAX checkpoint, read by timm into a plain ViT of the same width, as a state dict."""
        check_path(path, key)
        ref = VisionTransformer(img_size=224, patch_size=16, num_classes=0, embed_dim=self.embed_dim,
                                depth=len(self.blocks), num_heads=self.blocks[0].attn.num_heads, qkv_bias=True,
                                norm_layer=partial(nn.LayerNorm, eps=1e-6))
        try:
            ref.load_pretrained(path)
        except Exception as e:  # noqa: BLE001
            raise WeightsError(f"{key}: cannot read {path} as a ViT .npz checkpoint: {type(e).__name__}: {e}") from None
        return ref.state_dict()


def _init_vit_module(module: nn.Module, name: str = "", needs_reset: bool = True) -> None:
    """timm's ``init_weights_vit_timm`` with bounded truncation (:meth:`ReIDVisionTransformer.init_weights`)."""
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif hasattr(module, "init_weights"):
        module.init_weights()
    elif needs_reset and hasattr(module, "reset_parameters"):
        module.reset_parameters()


def _register_vit(name: str, embed_dim: int, depth: int, num_heads: int) -> Callable[..., ReIDVisionTransformer]:
    """Register ``name``: a :class:`ReIDVisionTransformer` of this width, depth and head count; returns its factory."""
    def factory(img_size: Sequence[int] = (256, 128), stride_size: Sequence[int] = (12, 12), num_cams: int = 0,
                sie_coe: float = 3.0, drop_path_rate: float = 0.1, drop_rate: float = 0.0,
                attn_drop_rate: float = 0.0) -> ReIDVisionTransformer:
        return ReIDVisionTransformer(img_size=img_size, stride_size=stride_size, num_cams=num_cams, sie_coe=sie_coe,
                                     embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                                     drop_path_rate=drop_path_rate, drop_rate=drop_rate,
                                     attn_drop_rate=attn_drop_rate, name=name)

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = f"{name}: {embed_dim}-d tokens, {depth} blocks, {num_heads} heads, 16x16 patches."
    return register_backbone(name, "transformer")(factory)


vit_base_patch16_224 = _register_vit("vit_base_patch16_224", 768, 12, 12)
deit_base_patch16_224 = _register_vit("deit_base_patch16_224", 768, 12, 12)  # the architecture of ViT-B
vit_small_patch16_224 = _register_vit("vit_small_patch16_224", 384, 12, 6)
vit_tiny_patch16_224 = _register_vit("vit_tiny_patch16_224", 192, 12, 3)
