"""Dual-attention Mutual Fusion (Sec. III-B): Local Refinement Units and Heterogenous Transmission Modules.

Token layout everywhere: ``[B, 1 + N, D]`` with the global token first and N local tokens after it.
"""
from typing import Dict, List, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import Mlp, use_fused_attn
from timm.models.vision_transformer import Block

from configs.config import FUSION_INITS, HTM_ORDERS

from .weight_init import trunc_normal_

Tensor = torch.Tensor


class LocalRefinementUnit(nn.Module):
    """Depth-wise conv + BN + PReLU (Eq. 1), then point-wise conv to D channels + BN + PReLU (Eq. 2).

    The depth-wise kernel is 1 with stride 1, as released (docs/PAPER.md, "LRU"): spatial sizes are kept (16x8 CNN tokens,
    21x10 ViT tokens are attended as they are).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1):
        super().__init__()
        self.depthwise = nn.Sequential(
            nn.Conv2d(in_channels, in_channels, kernel_size, stride, padding=kernel_size // 2, groups=in_channels,
                      bias=False),
            nn.BatchNorm2d(in_channels), nn.PReLU())  # Eq. 1
        self.pointwise = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, bias=True), nn.BatchNorm2d(out_channels), nn.PReLU())  # Eq. 2

    def gradient_free_parameters(self) -> List[nn.Parameter]:
        """The point-wise conv bias: the BatchNorm right after it subtracts it again (zero gradient)."""
        return [self.pointwise[0].bias]

    @property
    def shift_invariant(self) -> bool:
        """Whether adding a constant per channel to the input leaves the output unchanged (kernel 1: the
        depth-wise conv scales the constant and its BatchNorm subtracts it; larger kernels pad with zeros)."""
        return self.depthwise[0].kernel_size == (1, 1)

    def forward(self, x: Tensor) -> Tensor:  # B, C, H, W -> B, D, H', W'
        return self.pointwise(self.depthwise(x))


class SharedEncodingUnit(nn.Module):
    """Pre-norm self-attention block (Eqs. 3-4) over [global; local] tokens, then a final LayerNorm.

    The attention is timm's, fused (``scaled_dot_product_attention``) unless timm's switch is off
    (``TIMM_FUSED_ATTN=0``); the weights for visualisation are computed aside from the same q/k.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        # PyTorch's LayerNorm (eps 1e-5) as released (docs/PAPER.md, "LayerNorm epsilon"); timm's Block: 1e-6.
        self.block = Block(dim, num_heads, mlp_ratio, qkv_bias=False, norm_layer=nn.LayerNorm)
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: Tensor, return_attention: bool = False) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        """``tokens`` [B, 1 + N, D] -> [B, 1 + N, D] (Eq. 5 splits it into S^g and S^l).

        With ``return_attention`` also the global token's attention over all tokens, [B, heads, 1 + N],
        computed from the q/k this very forward produced (a hook on the qkv projection).
        """
        if not return_attention:
            return self.norm(self.block(tokens))
        captured = {}
        handle = self.block.attn.qkv.register_forward_hook(lambda m, i, o: captured.setdefault("qkv", o))
        try:
            out = self.norm(self.block(tokens))
        finally:
            handle.remove()
        attn = self.block.attn
        B, N, _ = tokens.shape
        q, k, _ = captured["qkv"].reshape(B, N, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
        weights = (q[:, :, :1] * attn.scale @ k.transpose(-2, -1)).softmax(dim=-1)
        return out, weights[:, :, 0]


class MutualFusionUnit(nn.Module):
    """Cross-attention of one branch's global token over the other branch's local tokens (Eqs. 6-7),
    then an FFN with residual (Eqs. 8-9).

    As released (docs/PAPER.md, "MFU"): LN on the query token, a second LN on the keys only (values are the un-normalised
    tokens), bias-free q/k/v projections, projection with bias, residual; LN, MLP (GELU), residual.

    Eqs. 6-7 run fused (``scaled_dot_product_attention``, as timm's attention: ``fused_attn`` follows
    ``timm.layers.use_fused_attn``), and explicitly, softmax(q k^T / sqrt(d)) v, when the weights are asked
    for (``return_attention``) or ``fused_attn`` is off.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.fused_attn = use_fused_attn()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_k = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.norm_ffn = nn.LayerNorm(dim)
        self.ffn = Mlp(dim, int(dim * mlp_ratio), dim)

    def gradient_free_parameters(self) -> List[nn.Parameter]:
        """The key LayerNorm's bias: it shifts every key by the same vector, which adds the same q.b to every
        score of a query, and the softmax over keys cancels it (zero gradient)."""
        return [self.norm_k.bias]

    def _heads(self, x: Tensor) -> Tensor:
        """[B, N, D] -> [B, heads, N, head_dim]."""
        B, N, _ = x.shape
        return x.reshape(B, N, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, query: Tensor, context: Tensor,
                return_attention: bool = False) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        """``query`` [B, D] global token of one branch, ``context`` [B, N, D] local tokens of the other -> [B, D]."""
        q = self._heads(self.q(self.norm_q(query)[:, None]))            # B, h, 1, d
        k = self._heads(self.k(self.norm_k(context)))                   # B, h, N, d
        v = self._heads(self.v(context))                                # B, h, N, d
        if return_attention or not self.fused_attn:
            weights = (q * self.scale @ k.transpose(-2, -1)).softmax(dim=-1)  # Eqs. 6-7, B, h, 1, N
            attended = weights @ v                                      # B, h, 1, d
        else:
            attended = F.scaled_dot_product_attention(q, k, v, scale=self.scale)  # Eqs. 6-7 fused
        fused = query + self.proj(attended.flatten(1))                  # heads concatenated: M^
        out = fused + self.ffn(self.norm_ffn(fused))                    # Eqs. 8-9
        return (out, weights[:, :, 0]) if return_attention else out


class HeterogenousTransmissionModule(nn.Module):
    """One HTM: SEU and two MFUs in the order of Table III, with the sharing of Table IV.

    Input of each branch = its global token from the previous layer and the *initial* LRU local tokens
    of that branch (Sec. III-B, "Stacking of HTM"); output = the two new global tokens.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, order: str = "seu_mfu",
                 share_seu: bool = True, share_mfu: bool = False):
        super().__init__()
        if order not in HTM_ORDERS:
            raise ValueError(f"MODEL.FUSION.HTM_ORDER must be one of {HTM_ORDERS}, got {order!r}")
        self.order = order
        branches = ("shared",) if share_seu else ("cnn", "transformer")
        self.seu = nn.ModuleDict({b: SharedEncodingUnit(dim, num_heads, mlp_ratio) for b in branches}) \
            if "seu" in order else None
        branches = ("shared",) if share_mfu else ("cnn", "transformer")
        self.mfu = nn.ModuleDict({b: MutualFusionUnit(dim, num_heads, mlp_ratio) for b in branches}) \
            if "mfu" in order else None

    def _unit(self, units, branch):
        return units["shared"] if "shared" in units else units[branch]

    def output_biases(self) -> List[nn.Parameter]:
        """The biases added last to the two output global tokens: the same vector for every image."""
        if self.order in ("seu_mfu", "mfu"):
            return [m.ffn.fc2.bias for m in self.mfu.values()]
        return [s.norm.bias for s in self.seu.values()]  # the SEU's final LayerNorm comes last

    def gradient_free_parameters(self, last: bool = False) -> List[nn.Parameter]:
        """The MFUs' key-LayerNorm biases and, for the ``last`` layer, its :meth:`output_biases` (the features
        f'_(c,L), f'_(t,L) go to the BNNeck and the triplet distances, which both ignore a common shift)."""
        mfus = self.mfu.values() if self.mfu is not None else ()
        params = [p for m in mfus for p in m.gradient_free_parameters()]
        return params + (self.output_biases() if last else [])

    def forward(self, global_cnn: Tensor, local_cnn: Tensor, global_trans: Tensor, local_trans: Tensor,
                attention: Optional[Dict[str, Tensor]] = None) -> Tuple[Tensor, Tensor]:
        """Globals [B, D], locals [B, N_branch, D] -> (new global_cnn, new global_trans).

        ``attention``: a dict to fill with the attention weights of this layer (for visualisation).
        """
        want = attention is not None
        g = {"cnn": global_cnn, "transformer": global_trans}
        local = {"cnn": local_cnn, "transformer": local_trans}
        other = {"cnn": "transformer", "transformer": "cnn"}

        def encode(branch, glob):
            tokens = torch.cat([glob[:, None], local[branch]], dim=1)
            out = self._unit(self.seu, branch)(tokens, return_attention=want)
            if want:
                out, attention[f"seu/{branch}"] = out
            return out

        def fuse(branch, query, context):
            out = self._unit(self.mfu, branch)(query, context, return_attention=want)
            if want:
                out, attention[f"mfu/{branch}"] = out
            return out

        if self.order == "seu":
            return tuple(encode(b, g[b])[:, 0] for b in ("cnn", "transformer"))
        if self.order == "mfu":
            return tuple(fuse(b, g[b], local[other[b]]) for b in ("cnn", "transformer"))
        if self.order == "seu_mfu":
            s = {b: encode(b, g[b]) for b in ("cnn", "transformer")}
            return tuple(fuse(b, s[b][:, 0], s[other[b]][:, 1:]) for b in ("cnn", "transformer"))
        # mfu_seu
        m = {b: fuse(b, g[b], local[other[b]]) for b in ("cnn", "transformer")}
        return tuple(encode(b, m[b])[:, 0] for b in ("cnn", "transformer"))


def init_fusion_weights(module: nn.Module, init: str = "pytorch") -> None:
    """Initialise the fusion modules (LRU, HTM) in ``module`` as ``MODEL.FUSION.INIT`` says.

    'pytorch' (as released): nothing to do, every layer keeps the default initialisation it was built with
    (Linear/Conv2d weights kaiming-uniform(a=sqrt(5)), i.e. U(+-1/sqrt(fan_in)), biases U(+-1/sqrt(fan_in)),
    LayerNorm/BatchNorm 1 and 0, PReLU 0.25). Call it on freshly built modules only.
    'trunc_normal' (transformer style): Linear weights truncated normal std 0.02 within +-2 std
    (``model.weight_init``) and zero biases, convolutions kaiming-normal fan-out with zero biases, norms 1 and 0.
    """
    if init not in FUSION_INITS:
        raise ValueError(f"MODEL.FUSION.INIT must be one of {FUSION_INITS}, got {init!r}")
    if init == "pytorch":
        return
    for m in module.modules():
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.LayerNorm, nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
