"""T2T-ViT-14 (``t2t_vit_t_14``: the Tokens-to-Token module with small transformer layers) for the
Transformer branch (Table VI). timm has no T2T-ViT, so it is written here.

Tokens-to-Token: soft split Unfold(7, stride 4, pad 2) -> token transformer (width 64) -> re-structurize
-> Unfold(3, 2, 1) -> token transformer -> re-structurize -> Unfold(3, 2, 1) -> Linear(576 -> 384);
then 14 timm blocks of width 384 (6 heads, MLP ratio 3, no qkv bias) on a fixed position table. The
reference code assumes square inputs; here the (H, W) grid is tracked, so 256x128 gives a 16x8 grid.
Parameter names follow the official checkpoints, which load directly.

Two details follow the released FusionReID by default (docs/PAPER.md, "T2T-ViT-14 as the released code
builds it"), with the T2T-ViT authors' variant as an option (docs/RELEASE_DIFFERENCES.md): the attention
scale (``attn_scale``: 'head_dim' = head_dim^-0.5, or 'embed_dim' = 384^-0.5 as the ImageNet weights were
trained) and the position table (``pos_embed``: 'checkpoint' = the pretrained file's 14x14 table resized
bilinearly to the token grid, or 'sinusoid' = a sine/cosine table computed for the token grid). Every
LayerNorm is PyTorch's (eps 1e-5), as released. Registered as ``t2t_vit_t_14``.
"""
import logging
import math
from typing import Optional, Sequence, Set, Tuple

import numpy as np
import torch
import torch.nn as nn
from timm.layers import Mlp, resample_abs_pos_embed
from timm.models import checkpoint_seq
from timm.models.vision_transformer import Block

from ..checkpointing import checkpointing_active
from ..weight_init import trunc_normal_
from .base import Backbone, BackboneOutput, split_tokens
from .camera import CameraEmbedding
from .registry import register_backbone
from .weights import WeightsError, load_checked, read_state_dict, strip_prefix

ATTN_SCALES = ("head_dim", "embed_dim")
POS_EMBEDS = ("checkpoint", "sinusoid")

logger = logging.getLogger(__name__)


def sinusoid_position_table(num_positions, dim):
    """Fixed sine/cosine position embedding (1, num_positions, dim)."""
    pos = np.arange(num_positions)[:, None]
    table = pos / np.power(10000.0, 2 * (np.arange(dim) // 2) / dim)[None, :]
    table[:, 0::2] = np.sin(table[:, 0::2])
    table[:, 1::2] = np.cos(table[:, 1::2])
    return torch.from_numpy(table).float().unsqueeze(0)


def unfold_size(size, kernel, stride, padding):
    return (size + 2 * padding - kernel) // stride + 1


class TokenAttention(nn.Module):
    """Single-head attention that maps ``dim`` tokens to ``out_dim``; the residual goes through the values."""

    def __init__(self, dim, out_dim, num_heads=1, attn_drop=0.0):
        super().__init__()
        self.num_heads, self.out_dim = num_heads, out_dim
        self.scale = (dim // num_heads) ** -0.5  # as in T2T-ViT: scaled by the *input* width
        self.qkv = nn.Linear(dim, out_dim * 3, bias=False)
        self.proj = nn.Linear(out_dim, out_dim)
        self.attn_drop = attn_drop

    def forward(self, x):
        B, N, _ = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, self.out_dim // self.num_heads).permute(2, 0, 3, 1, 4)
        out = nn.functional.scaled_dot_product_attention(
            q, k, v, dropout_p=self.attn_drop if self.training else 0.0, scale=self.scale)
        out = self.proj(out.transpose(1, 2).reshape(B, N, self.out_dim))
        return v.transpose(1, 2).reshape(B, N, self.out_dim) + out


class TokenTransformer(nn.Module):
    """Token transformer layer of the T2T module (changes the width from ``dim`` to ``out_dim``)."""

    def __init__(self, dim, out_dim, mlp_ratio=1.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = TokenAttention(dim, out_dim)
        self.norm2 = nn.LayerNorm(out_dim)
        self.mlp = Mlp(out_dim, int(out_dim * mlp_ratio), out_dim)

    def forward(self, x):
        x = self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TokensToToken(nn.Module):
    """Progressive tokenisation: three soft splits with two token transformers in between."""

    SPLITS = ((7, 4, 2), (3, 2, 1), (3, 2, 1))  # (kernel, stride, padding)

    def __init__(self, img_size=(256, 128), in_chans=3, embed_dim=384, token_dim=64):
        super().__init__()
        (k0, s0, p0), (k1, s1, p1), (k2, s2, p2) = self.SPLITS
        self.soft_split0 = nn.Unfold(kernel_size=k0, stride=s0, padding=p0)
        self.soft_split1 = nn.Unfold(kernel_size=k1, stride=s1, padding=p1)
        self.soft_split2 = nn.Unfold(kernel_size=k2, stride=s2, padding=p2)
        self.attention1 = TokenTransformer(in_chans * k0 * k0, token_dim)
        self.attention2 = TokenTransformer(token_dim * k1 * k1, token_dim)
        self.project = nn.Linear(token_dim * k2 * k2, embed_dim)
        sizes = [tuple(img_size)]
        for k, s, p in self.SPLITS:
            sizes.append(tuple(unfold_size(v, k, s, p) for v in sizes[-1]))
        self.sizes = sizes[1:]  # grid after each soft split
        self.grid_size = self.sizes[-1]
        self.num_patches = self.grid_size[0] * self.grid_size[1]

    def forward(self, x):
        x = self.soft_split0(x).transpose(1, 2)
        for attention, split, (h, w) in ((self.attention1, self.soft_split1, self.sizes[0]),
                                         (self.attention2, self.soft_split2, self.sizes[1])):
            x = attention(x)
            x = x.transpose(1, 2).reshape(x.shape[0], x.shape[2], h, w)  # re-structurize
            x = split(x).transpose(1, 2)
        return self.project(x)


class _QueryScale(nn.Module):
    """Multiplies queries by a constant: gives timm's fused attention the official T2T-ViT-t-14 scale."""

    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def forward(self, q):
        return q * self.factor


class T2TViT(CameraEmbedding, Backbone):
    """T2T-ViT with the camera embedding of the ViT branch; ``forward`` gives the class token and the
    tokens after the final norm, the latter as a ``[B, C, H, W]`` map on the token grid."""

    def __init__(self, img_size: Sequence[int] = (256, 128), num_cams: int = 0, sie_coe: float = 3.0,
                 embed_dim: int = 384, depth: int = 14, num_heads: int = 6, mlp_ratio: float = 3.0,
                 drop_path_rate: float = 0.1, drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 attn_scale: str = "head_dim", pos_embed: str = "checkpoint", name: str = "t2t_vit_t_14"):
        super().__init__()
        if attn_scale not in ATTN_SCALES:
            raise ValueError(f"T2T-ViT attention scale must be one of {ATTN_SCALES}, got {attn_scale!r}")
        if pos_embed not in POS_EMBEDS:
            raise ValueError(f"T2T-ViT position table must be one of {POS_EMBEDS}, got {pos_embed!r}")
        self.attn_scale, self.pos_embed_source = attn_scale, pos_embed
        self.img_size = tuple(img_size)
        self.embed_dim = self.num_features = self.out_dim = embed_dim
        self.tokens_to_token = TokensToToken(img_size, embed_dim=embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        # Fixed (not trained), but saved with the model: with 'checkpoint' it comes from the pretrained file.
        self.register_buffer("pos_embed", sinusoid_position_table(self.tokens_to_token.num_patches + 1, embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = torch.linspace(0, drop_path_rate, depth, device="cpu").tolist()  # also under a meta default device
        self.blocks = nn.Sequential(*[
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias=False, proj_drop=drop_rate, attn_drop=attn_drop_rate,
                  drop_path=dpr[i], norm_layer=nn.LayerNorm) for i in range(depth)])
        if attn_scale == "embed_dim":
            # The T2T-ViT authors trained t2t_vit_t_14 with qk scale 384^-0.5 instead of head_dim^-0.5.
            head_dim = embed_dim // num_heads
            for blk in self.blocks:
                blk.attn.q_norm = _QueryScale((embed_dim ** -0.5) / (head_dim ** -0.5))
        self.norm = nn.LayerNorm(embed_dim)
        trunc_normal_(self.cls_token, std=0.02)
        self.init_camera_embedding(num_cams, embed_dim, sie_coe)  # after the class token: the same random draws
        self.apply(self._init_weights)
        self.name = name
        self.grad_checkpointing = False

    @staticmethod
    def _init_weights(m):
        """As the T2T-ViT reference: Linear weights truncated normal std 0.02 (bounded at +-2 std,
        ``model.weight_init``), biases 0, LayerNorms 1 and 0."""
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    @property
    def grid_size(self) -> Tuple[int, int]:
        return self.tokens_to_token.grid_size

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute the blocks' activations in the backward (``MODEL.GRAD_CHECKPOINT``), as timm's ViT."""
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def no_weight_decay(self) -> Set[str]:
        return {"cls_token", "sie_embed"}

    def forward(self, x: torch.Tensor, cam_ids: Optional[torch.Tensor] = None) -> BackboneOutput:
        if tuple(x.shape[-2:]) != self.img_size:
            raise ValueError(f"T2T-ViT was built for {self.img_size[0]}x{self.img_size[1]} inputs (INPUT.SIZE_*), "
                             f"got {x.shape[-2]}x{x.shape[-1]}")
        x = self.tokens_to_token(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.pos_drop(self.add_camera_embedding(x, cam_ids))
        x = checkpoint_seq(self.blocks, x) if checkpointing_active(self) else self.blocks(x)
        return split_tokens(self.norm(x), self.grid_size)

    def load_pretrained(self, path: str, key: str = "MODEL.TRANSFORMER.PRETRAIN_PATH") -> None:
        """The official T2T-ViT checkpoint (``state_dict``, ``state_dict_ema`` or bare, in the order the released
        FusionReID reads them); the head is dropped. The position table is the file's, resized bilinearly to
        this token grid ('checkpoint'), or kept as computed ('sinusoid')."""
        state = strip_prefix(read_state_dict(path, key, containers=("state_dict", "state_dict_ema", "model")))
        state = {k: v for k, v in state.items() if not k.startswith("head")}
        table = state.pop("pos_embed", None)
        if self.pos_embed_source == "checkpoint":
            if table is None:
                raise WeightsError(f"{key}: {path} has no pos_embed (MODEL.TRANSFORMER.T2T_POS_EMBED 'checkpoint' "
                                   f"resizes the file's position table; use 'sinusoid' to compute one)")
            state["pos_embed"] = self.resize_position_table(table, key, path)
        load_checked(self, state, key, path, "a T2T-ViT-t-14 checkpoint", ignore_missing=("sie_embed", "pos_embed"))
        logger.info("loaded T2T-ViT-t-14 ImageNet weights from %s (position table: %s)", path,
                    "the file's, resized to %dx%d" % self.grid_size if self.pos_embed_source == "checkpoint"
                    else "sinusoid")

    def resize_position_table(self, table: torch.Tensor, key: str = "", path: str = "") -> torch.Tensor:
        """A [1, 1 + S*S, C] table of a square token grid -> [1, 1 + H*W, C] for this grid (bilinear)."""
        tokens = table.shape[1] - 1
        side = math.isqrt(tokens)
        if table.ndim != 3 or side * side != tokens or table.shape[2] != self.embed_dim:
            raise WeightsError(f"{key}: {path}: pos_embed of shape {tuple(table.shape)} is not [1, 1 + S*S, "
                               f"{self.embed_dim}] (a square grid of {self.embed_dim}-d positions)")
        return resample_abs_pos_embed(table.float(), list(self.grid_size), [side, side], num_prefix_tokens=1,
                                      interpolation="bilinear", antialias=False)


@register_backbone("t2t_vit_t_14", "transformer")
def t2t_vit_t_14(img_size: Sequence[int] = (256, 128), num_cams: int = 0, sie_coe: float = 3.0,
                 drop_path_rate: float = 0.1, drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 t2t_attn_scale: str = "head_dim", t2t_pos_embed: str = "checkpoint") -> T2TViT:
    """T2T-ViT-t-14 (384-d, 14 blocks); ``t2t_*``: ``MODEL.TRANSFORMER.T2T_ATTN_SCALE`` / ``T2T_POS_EMBED``."""
    return T2TViT(img_size, num_cams=num_cams, sie_coe=sie_coe, drop_path_rate=drop_path_rate, drop_rate=drop_rate,
                  attn_drop_rate=attn_drop_rate, attn_scale=t2t_attn_scale, pos_embed=t2t_pos_embed,
                  name="t2t_vit_t_14")
