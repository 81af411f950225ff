"""FusionReID (Fig. 2): Dual-branch Feature Extraction + Dual-attention Mutual Fusion + six supervised features."""
import dataclasses
import logging
from collections import OrderedDict
from typing import Dict, List, Mapping, Optional, Set, Union

import torch
import torch.nn as nn
from yacs.config import CfgNode

from utils.errors import ConfigError

from .backbones import Backbone, BackboneOutput, build_backbone
from .checkpointing import checkpoint, checkpointing_active
from .fusion import HeterogenousTransmissionModule, LocalRefinementUnit, init_fusion_weights
from .heads import BNNeckHead, FeatureOutput
from .pooling import build_pooling
from .retrieval import RetrievalPolicy
from .spec import ModelSpec

logger = logging.getLogger(__name__)

# Every feature the model can supervise and return, in the order of the concatenation f_a.
FEATURE_NAMES = ("cnn", "transformer", "lru_cnn", "lru_transformer", "htm_cnn", "htm_transformer")


class FusionReID(nn.Module):
    """Two backbones on the same image, LRUs, L stacked HTMs, one BNNeck head per supervised feature.

    Built from a :class:`~model.spec.ModelSpec` (the architecture: what the state dict holds) and a
    :class:`~model.retrieval.RetrievalPolicy` (the eval-mode feature); :meth:`from_config` reads both from
    the config.

    train mode: ``model(images, cam_ids)`` -> ``{name: FeatureOutput(logits, feature before BN)}``;
    eval mode: ``model(images, cam_ids)`` -> the retrieval feature of ``retrieval``
    (:meth:`RetrievalPolicy.retrieve`: ``TEST.FEAT`` / ``NECK_FEAT`` / ``FEAT_NORM`` / ``PART_NORM`` / ``FLIP``).
    """

    def __init__(self, spec: ModelSpec, retrieval: RetrievalPolicy):
        super().__init__()
        fusion = spec.fusion
        if fusion.htm_layers and not (spec.cnn and spec.transformer):
            raise ConfigError("MODEL.FUSION.HTM_LAYERS > 0 fuses two branches: set both MODEL.CNN.NAME and "
                              "MODEL.TRANSFORMER.NAME, or HTM_LAYERS 0")
        if fusion.htm_layers and not fusion.lru:
            raise ConfigError("MODEL.FUSION.HTM_LAYERS > 0 needs MODEL.FUSION.LRU True: the LRUs bring both "
                              "branches to the fused dimension D")
        self.spec = spec
        self.cnn: Optional[Backbone] = None
        self.transformer: Optional[Backbone] = None
        if spec.cnn:
            self.cnn = build_backbone(spec.cnn.kind, spec.cnn.name, **spec.cnn.options.as_dict())
            self.pool_cnn = build_pooling(spec.cnn_pooling, spec.gem_p)  # f^_c = GeMP(X_c): no class token
        if spec.transformer:
            self.transformer = build_backbone(spec.transformer.kind, spec.transformer.name,
                                              **spec.transformer.options.as_dict())
        dims = OrderedDict((branch, backbone.out_dim) for branch, backbone in self.backbones().items())
        self.lru = nn.ModuleDict()
        self.pool_lru = nn.ModuleDict()
        if fusion.lru:
            for branch, channels in list(dims.items()):
                self.lru[branch] = LocalRefinementUnit(channels, fusion.dim)
                self.pool_lru[branch] = build_pooling(fusion.pooling, spec.gem_p)
                dims[f"lru_{branch}"] = fusion.dim
        self.htm = nn.ModuleList(
            HeterogenousTransmissionModule(fusion.dim, fusion.num_heads, fusion.mlp_ratio, fusion.htm_order,
                                           fusion.share_seu, fusion.share_mfu)
            for _ in range(fusion.htm_layers))
        if fusion.htm_layers:
            dims["htm_cnn"] = dims["htm_transformer"] = fusion.dim
        init_fusion_weights(self.lru, fusion.init)  # MODEL.FUSION.INIT
        init_fusion_weights(self.htm, fusion.init)

        self.feature_dims = OrderedDict((n, dims[n]) for n in FEATURE_NAMES if n in dims)
        self.heads = nn.ModuleDict({n: BNNeckHead(d, spec.num_classes) for n, d in self.feature_dims.items()})
        retrieval.names(self.feature_dims)  # TEST.FEAT must name a feature of this model
        self.retrieval = retrieval
        self.grad_checkpointing = False
        if spec.freeze_gradient_free:
            self.freeze_gradient_free()

    @classmethod
    def from_config(cls, cfg: CfgNode, num_classes: int, num_cams: int) -> "FusionReID":
        """The model of ``cfg`` (random weights) for ``num_classes`` identities seen by ``num_cams`` cameras:
        the architecture ``ModelSpec.from_config``, the retrieval policy ``RetrievalPolicy.from_config``."""
        if tuple(cfg.INPUT.SIZE_TEST) != tuple(cfg.INPUT.SIZE_TRAIN) and cfg.MODEL.TRANSFORMER.NAME:
            raise ConfigError(f"INPUT.SIZE_TEST {list(cfg.INPUT.SIZE_TEST)} differs from INPUT.SIZE_TRAIN "
                              f"{list(cfg.INPUT.SIZE_TRAIN)}: the Transformer's position embedding is built for "
                              f"one size")
        return cls(ModelSpec.from_config(cfg, num_classes, num_cams), RetrievalPolicy.from_config(cfg))

    @property
    def fusion_init(self) -> str:
        """MODEL.FUSION.INIT: how the LRU and HTM weights were initialised."""
        return self.spec.fusion.init

    @property
    def flip(self) -> bool:
        """Test-time flip (``TEST.FLIP``) of the retrieval policy; settable."""
        return self.retrieval.flip

    @flip.setter
    def flip(self, enable: bool) -> None:
        self.retrieval = dataclasses.replace(self.retrieval, flip=bool(enable))

    # ------------------------------------------------------------------------------------- gradient-free
    def gradient_free_parameter_names(self) -> List[str]:
        """Full names of the parameters whose gradient is zero by construction, in ``named_parameters`` order:

        - the LRU point-wise conv biases (the BatchNorm right after each subtracts it again);
        - the MFU key-LayerNorm biases (the softmax over keys cancels a shift common to all keys);
        - the biases added last to the final HTM's two global tokens, and the Transformer's final LayerNorm
          bias when its tokens reach nothing that sees a common shift (the class token goes to a BNNeck and
          the triplet distances, which both ignore it; the patch tokens to the LRU, whose per-channel 1x1
          depth-wise conv and BatchNorm cancel it): biases that add one constant vector to a supervised
          feature and to nothing else.

        Nine with the default architecture (2 + 4 + 2 + 1). The BNNeck biases are not listed (always frozen).
        The release trains them all (under weight decay they shrink); ``SOLVER.FREEZE_GRADIENT_FREE`` freezes
        them (:meth:`freeze_gradient_free`).
        """
        params = [p for unit in self.lru.values() for p in unit.gradient_free_parameters()]
        for k, layer in enumerate(self.htm):
            params += layer.gradient_free_parameters(last=k == len(self.htm) - 1)
        if self.transformer is not None and ("transformer" not in self.lru or self.lru["transformer"].shift_invariant):
            params.append(self.transformer.norm.bias)
        ids = {id(p) for p in params}
        return [n for n, p in self.named_parameters() if id(p) in ids]

    def freeze_gradient_free(self, freeze: bool = True) -> None:
        """Stop (or, with ``freeze`` False, resume) training the :meth:`gradient_free_parameter_names`
        (``SOLVER.FREEZE_GRADIENT_FREE``).

        SGD moves such a parameter by the weight decay alone (as released); Adam/AdamW divide its float
        rounding noise (1e-11 to 1e-7) by the noise's own running RMS and move it by about one learning rate
        per step in a random direction. Frozen, it keeps its initial (or pretrained) value. Same reasoning as
        the frozen BNNeck bias.
        """
        params = dict(self.named_parameters())
        for name in self.gradient_free_parameter_names():
            params[name].requires_grad_(not freeze)

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing (``MODEL.GRAD_CHECKPOINT``) of the backbones' blocks (each backbone's
        own ``set_grad_checkpointing``) and of each HTM layer: activations are recomputed in the backward
        instead of stored. Gradients and BatchNorm statistics are those of the plain step
        (``model.checkpointing``)."""
        self.grad_checkpointing = enable
        for backbone in self.backbones().values():
            backbone.set_grad_checkpointing(enable)

    def set_channels_last(self, enable: bool = True) -> None:
        """Run the CNN branch in channels-last memory format (``MODEL.CHANNELS_LAST``; faster convolutions
        on GPUs with tensor cores); the Transformer branch works on tokens and is left as it is."""
        if self.cnn is not None:
            self.cnn.set_channels_last(enable)

    # ------------------------------------------------------------------------------------- forward
    def backbones(self) -> "OrderedDict[str, Backbone]":
        """The branches that are present, CNN first: ``OrderedDict(branch -> Backbone)``."""
        pairs = (("cnn", self.cnn), ("transformer", self.transformer))
        return OrderedDict((branch, backbone) for branch, backbone in pairs if backbone is not None)

    @property
    def test_dim(self) -> int:
        """Length of the eval-mode feature."""
        return self.retrieval.dim(self.feature_dims)

    def global_feature(self, branch: str, out: BackboneOutput) -> torch.Tensor:
        """f^ of a branch: the backbone's class token (f^_t), or for a backbone without one its map pooled
        by the branch's pooling (f^_c = GeMP(X_c), ``MODEL.CNN.POOLING``)."""
        if out.cls_token is not None:
            return out.cls_token
        pool = getattr(self, f"pool_{branch}", None)
        if pool is None:
            raise ValueError(f"the {branch} backbone gives no class token and this model has no pooling for it")
        return pool(out.feature_map)

    def extract(self, images: torch.Tensor, cam_ids: Optional[torch.Tensor] = None,
                attention: Optional[Dict[str, torch.Tensor]] = None) -> "OrderedDict[str, torch.Tensor]":
        """All features before the BNNeck, computed once: ``OrderedDict(name -> [B, d])``.

        ``attention``: a dict to fill with the HTM attention weights, keys ``htm{k}/seu/cnn`` etc.
        """
        feats, local = OrderedDict(), {}
        for branch, backbone in self.backbones().items():
            out = backbone(images, cam_ids)                               # BackboneOutput
            feats[branch] = self.global_feature(branch, out)              # f^_c / f^_t
            local[branch] = out.feature_map                               # X_c / X_t -> F^_t: B, C, H, W
        for branch, unit in self.lru.items():
            refined = unit(local[branch])                                 # F_c / F_t: B, D, H, W
            feats[f"lru_{branch}"] = self.pool_lru[branch](refined)       # f'_(c,0) / f'_(t,0)
            local[branch] = refined.flatten(2).transpose(1, 2)            # B, HW, D
        if len(self.htm):
            g_cnn, g_trans = feats["lru_cnn"], feats["lru_transformer"]
            ckpt = attention is None and checkpointing_active(self)
            for k, layer in enumerate(self.htm):
                if ckpt:  # the layer runs again in the backward
                    g_cnn, g_trans = checkpoint(layer, g_cnn, local["cnn"], g_trans, local["transformer"])
                else:
                    maps = {} if attention is not None else None
                    g_cnn, g_trans = layer(g_cnn, local["cnn"], g_trans, local["transformer"], maps)
                    if maps is not None:
                        attention.update({f"htm{k + 1}/{name}": a for name, a in maps.items()})
            feats["htm_cnn"], feats["htm_transformer"] = g_cnn, g_trans  # f'_(c,L), f'_(t,L)
        return feats

    def forward(self, images: torch.Tensor, cam_ids: Optional[torch.Tensor] = None
                ) -> Union["OrderedDict[str, FeatureOutput]", torch.Tensor]:
        if self.training:
            feats = self.extract(images, cam_ids)
            return OrderedDict((name, FeatureOutput(self.heads[name](f).logits, f)) for name, f in feats.items())
        return self.retrieval.retrieve(self.extract, images, cam_ids, self.heads, self.feature_dims)

    def retrieval_feature(self, feats: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The eval-mode feature of the features before the BNNeck ``feats`` (:meth:`extract`'s), without the
        flip: one of the six, or f_a = their concatenation (Sec. III-C; :meth:`RetrievalPolicy.combine`)."""
        return self.retrieval.combine(feats, self.heads, self.feature_dims)

    # ------------------------------------------------------------------------------------- weights
    @torch.jit.ignore
    def no_weight_decay(self) -> Set[str]:
        """Full names of the backbones' parameters without weight decay (timm convention): the position,
        class and camera embeddings of the Transformer; none of the CNN."""
        return {f"{branch}.{n}" for branch, backbone in self.backbones().items() for n in backbone.no_weight_decay()
                if getattr(backbone, n, None) is not None}
