"""Query-to-gallery feature distances, shared by evaluation (``utils.metrics``) and k-reciprocal
re-ranking (``utils.reranking``); both import from here and neither imports the other.

* ``metric='euclidean'``: the *squared* Euclidean distance (it ranks exactly like the Euclidean
  distance and saves a square root per entry);
* ``metric='cosine'``: ``1 - cos``;
* ``feat_norm=True``: both sides L2-normalised first (for unit vectors ``|a - b|^2 = 2 - 2 cos``).

Values are float32 and clamped at 0 (rounding can make them slightly negative).
"""
from typing import Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

ArrayLike = Union[np.ndarray, torch.Tensor, Sequence]

METRICS = ("euclidean", "cosine")


def to_tensor(x: ArrayLike, device, dtype=None) -> torch.Tensor:
    """A torch view of ``x`` (no copy when it already has the device and dtype)."""
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    return t.to(device=device, dtype=dtype or t.dtype)


def default_device(x: ArrayLike) -> torch.device:
    """The tensors' own device; for numpy inputs CUDA when available, else the CPU."""
    if isinstance(x, torch.Tensor):
        return x.device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class GalleryDistance:
    """Distances from query chunks to a fixed gallery, without copying the gallery features.

    ``dist(qf)`` gives the matrix ``[len(qf), len(gallery)]``; ``dist.pairs(f, cols)`` the distance
    of each row ``f[i]`` to the one gallery item ``cols[i]`` (a vector, same formulas). With
    normalisation the gallery is normalised implicitly, by scaling the columns of ``q @ g^T`` with
    ``1 / ||g||``, so no normalised copy of it is made.
    """

    def __init__(self, gf: torch.Tensor, metric: str = "euclidean", feat_norm: bool = False):
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        self.gf = gf
        self.metric = metric
        self._normalise = bool(feat_norm) or metric == "cosine"
        if self._normalise:
            # per-column factor of the dot products: -2/|g| (euclidean, 2 - 2 cos) or -1/|g| (cosine)
            factor = -2.0 if metric == "euclidean" else -1.0
            self._g_scale = factor / gf.norm(dim=1).clamp_min(1e-12)
            self._offset = torch.tensor(2.0 if metric == "euclidean" else 1.0, device=gf.device)
        else:
            self._g_sqnorm = (gf * gf).sum(dim=1)

    def __call__(self, qf: torch.Tensor) -> torch.Tensor:
        """Distances ``[len(qf), len(gallery)]`` in float32."""
        if self._normalise:
            # |a - b|^2 = 2 - 2 cos(a, b) for unit vectors; cosine distance 1 - cos(a, b)
            dist = torch.mm(F.normalize(qf, dim=1), self.gf.t())
            torch.addcmul(self._offset, dist, self._g_scale, out=dist)  # one fused pass
        else:
            dist = torch.addmm(self._g_sqnorm.unsqueeze(0), qf, self.gf.t(), alpha=-2.0)
            dist.add_((qf * qf).sum(dim=1, keepdim=True))  # |q|^2 + |g|^2 - 2 q.g
        return dist.clamp_min_(0.0)

    def pairs(self, f: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """Distance ``[len(f)]`` of each row ``f[i]`` to gallery item ``cols[i]`` (not a matrix)."""
        g = self.gf[cols]
        if self._normalise:
            f = F.normalize(f, dim=1)
            return torch.addcmul(self._offset, (f * g).sum(1), self._g_scale[cols]).clamp_min(0.0)
        return ((f * f).sum(1) + self._g_sqnorm[cols] - 2.0 * (f * g).sum(1)).clamp_min(0.0)


def pairwise_distance(qf: ArrayLike, gf: ArrayLike, metric: str = "euclidean",
                      feat_norm: bool = False) -> torch.Tensor:
    """The full query x gallery distance matrix (float32), as ``utils.metrics.evaluate`` computes it
    per chunk. Computed on the features' device (numpy inputs: CUDA when available, else the CPU)."""
    device = default_device(qf)
    q = to_tensor(qf, device, torch.float32)
    return GalleryDistance(to_tensor(gf, device, torch.float32), metric, feat_norm)(q)
