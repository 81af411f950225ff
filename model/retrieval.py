"""The retrieval policy: which feature a FusionReID returns in eval mode, and how (``TEST.FEAT``,
``TEST.NECK_FEAT``, ``TEST.FEAT_NORM``, ``TEST.PART_NORM``, ``TEST.FLIP``).

It changes no parameter: a checkpoint is evaluated under any policy. ``FusionReID.forward`` (eval mode)
and everything that extracts features through the model use it; read from the config by
``RetrievalPolicy.from_config`` (``model.spec``).
"""
import dataclasses
from collections import OrderedDict
from typing import Callable, List, Mapping, Optional

import torch
import torch.nn.functional as F

from utils.errors import ConfigError

from .pooling import at_least_float32
from .spec import ConfigSpec, config_field


def flip_average(feats: Mapping[str, torch.Tensor], mirrored: Mapping[str, torch.Tensor]
                 ) -> "OrderedDict[str, torch.Tensor]":
    """Test-time flip (``TEST.FLIP``): the mean of the features of the images (``feats``) and of their
    horizontal mirrors (``mirrored``, same cameras), feature by feature, before the BNNeck and before any
    normalisation (as ``0.5 a + 0.5 b``: no fp16 overflow of the sum under AMP)."""
    return OrderedDict((name, f * 0.5 + mirrored[name] * 0.5) for name, f in feats.items())


@dataclasses.dataclass(frozen=True)
class RetrievalPolicy(ConfigSpec):
    """Which features make the eval-mode feature and how they are combined.

    As released (docs/PAPER.md, "BNNeck and retrieval"): f_a, the six features concatenated as they are
    (before their BNNeck), L2-normalised as a whole.
    """

    feat: str = config_field("TEST.FEAT", "'all' (f_a, the concatenation) or one feature's name")
    neck_feat: str = config_field("TEST.NECK_FEAT", "'before' or 'after' the BNNeck")
    feat_norm: bool = config_field("TEST.FEAT_NORM", "L2-normalise the result")
    part_norm: bool = config_field("TEST.PART_NORM", "L2-normalise each part first (not in the release)")
    flip: bool = config_field("TEST.FLIP", "mean of the image's and its mirror's features")

    def names(self, feature_dims: Mapping[str, int]) -> List[str]:
        """The features concatenated, in order; ``TEST.FEAT`` naming a feature the model lacks is a
        ``ConfigError``."""
        if self.feat == "all":
            return list(feature_dims)
        if self.feat not in feature_dims:
            raise ConfigError(f"TEST.FEAT {self.feat!r} is not produced by this model; it has "
                              f"{', '.join(['all', *feature_dims])}")
        return [self.feat]

    def dim(self, feature_dims: Mapping[str, int]) -> int:
        """Length of the retrieval feature."""
        return sum(feature_dims[n] for n in self.names(feature_dims))

    def retrieve(self, extract: Callable[[torch.Tensor, Optional[torch.Tensor]], Mapping[str, torch.Tensor]],
                 images: torch.Tensor, cam_ids: Optional[torch.Tensor], heads: Mapping[str, Callable],
                 feature_dims: Mapping[str, int]) -> torch.Tensor:
        """The retrieval feature of ``images``: ``extract(images, cam_ids)`` gives the features before the
        BNNeck (``FusionReID.extract``), averaged with those of the mirrored images under ``flip``
        (:func:`flip_average`), then :meth:`combine`."""
        feats = extract(images, cam_ids)
        if self.flip:
            feats = flip_average(feats, extract(images.flip(-1), cam_ids))
        return self.combine(feats, heads, feature_dims)

    def combine(self, feats: Mapping[str, torch.Tensor], heads: Mapping[str, Callable],
                feature_dims: Mapping[str, int]) -> torch.Tensor:
        """The retrieval feature of the features before the BNNeck ``feats`` of a model with ``feature_dims``
        (``heads``: its BNNecks).

        ``part_norm`` normalises each part first, so that no part dominates by scale. Normalisation runs in
        float32 or wider (an fp16 sum of squares of 5888 values overflows).
        """
        names = self.names(feature_dims)
        parts = [heads[n](feats[n]).bn_feature if self.neck_feat == "after" else feats[n] for n in names]
        if self.part_norm:
            parts = [F.normalize(at_least_float32(p), dim=1) for p in parts]
        out = torch.cat(parts, dim=1)
        return F.normalize(at_least_float32(out), dim=1) if self.feat_norm else out
