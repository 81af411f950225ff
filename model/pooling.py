"""Global pooling of feature maps into vectors."""
import torch
import torch.nn as nn
import torch.nn.functional as F


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32, or in its own dtype when that is wider (float64): never below either."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


class GeneralizedMeanPooling(nn.Module):
    """GeM pooling (Radenović et al.) with a learnable exponent p: (mean x^p)^(1/p) over H x W."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.ones(1) * p)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # B, C, H, W -> B, C
        x_wide = at_least_float32(x)  # x^p of fp16/bf16 activations overflows; float64 stays float64
        p = self.p.to(x_wide.dtype)
        pooled = x_wide.clamp(min=self.eps).pow(p).mean(dim=(-2, -1)).pow(1.0 / p)
        return pooled.to(x.dtype)

    def extra_repr(self) -> str:
        return f"p={self.p.item():.4f}, eps={self.eps}"


class AveragePooling(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(-2, -1))


class MaxPooling(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_max_pool2d(x, 1).flatten(1)


def build_pooling(name: str, gem_p: float = 3.0) -> nn.Module:
    """'gem' | 'avg' | 'max' -> a module mapping B x C x H x W to B x C."""
    if name == "gem":
        return GeneralizedMeanPooling(gem_p)
    if name == "avg":
        return AveragePooling()
    if name == "max":
        return MaxPooling()
    raise ValueError(f"unknown pooling {name!r}; known: 'gem', 'avg', 'max'")
