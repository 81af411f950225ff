"""The learned camera embedding of the token backbones (TransReID's side information embedding, SIE).

A table ``sie_embed`` of shape ``[num_cams, 1, dim]`` (truncated-normal init, std 0.02 within +-2 std,
``model.weight_init``); the backbone adds ``sie_coe * sie_embed[cam_ids]`` to every token after the
position embedding. Without cameras (``num_cams`` 0, ``MODEL.TRANSFORMER.SIE_CAMERA False``) the table
is None and nothing is added.

:class:`CameraEmbedding` is mixed into the backbone classes (ViT/DeiT and T2T-ViT) rather than being
a child module, so that the table stays the backbone's own parameter: its state-dict key remains
``transformer.sie_embed`` in every FusionReID checkpoint, and ``model.complexity`` keeps counting it
among the embeddings by that name.

For images of unknown cameras, :meth:`CameraEmbedding.add_mean_camera` appends the mean of the learned
rows as one more camera (``processor/feature_extractor.py``, ``tools/extract_features.py``): the embedding
enters linearly, so the mean is the expectation over the training cameras, each equally likely.
"""
from typing import Optional

import torch
import torch.nn as nn

from ..weight_init import trunc_normal_


class CameraEmbedding:
    """Mixin for an ``nn.Module`` backbone: the ``sie_embed`` table, its addition to the tokens, the mean camera."""

    sie_embed: Optional[nn.Parameter]
    sie_coe: float

    def init_camera_embedding(self, num_cams: int, dim: int, coe: float) -> None:
        """Create the ``[num_cams, 1, dim]`` table (none when ``num_cams`` is 0) scaled by ``coe``."""
        self.sie_coe = coe
        if num_cams > 0:
            self.sie_embed = nn.Parameter(torch.zeros(num_cams, 1, dim))
            trunc_normal_(self.sie_embed, std=0.02)
        else:
            self.sie_embed = None

    @property
    def has_camera_embedding(self) -> bool:
        return self.sie_embed is not None

    @property
    def num_cameras(self) -> int:
        """Rows of the table (0 without one)."""
        return 0 if self.sie_embed is None else self.sie_embed.shape[0]

    def add_camera_embedding(self, x: torch.Tensor, cam_ids: Optional[torch.Tensor]) -> torch.Tensor:
        """``x + sie_coe * sie_embed[cam_ids]`` for tokens ``x`` [B, N, dim]; ``x`` as it is without a table."""
        if self.sie_embed is None:
            return x
        if cam_ids is None:
            raise ValueError("the camera embedding (MODEL.TRANSFORMER.SIE_CAMERA) needs camera ids")
        return x + self.sie_coe * self.sie_embed[cam_ids]

    def add_mean_camera(self) -> Optional[int]:
        """Append the mean of the learned rows as an extra camera and return its id (None without a table).

        Only this instance changes; the appended table is frozen (``requires_grad`` False).
        """
        if self.sie_embed is None:
            return None
        table = self.sie_embed.detach()
        self.sie_embed = nn.Parameter(torch.cat([table, table.mean(dim=0, keepdim=True)]), requires_grad=False)
        return table.shape[0]
