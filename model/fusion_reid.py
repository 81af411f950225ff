"""FusionReID (Fig. 2): Dual-branch Feature Extraction + Dual-attention Mutual Fusion + six supervised features."""
import logging
from collections import OrderedDict
from typing import Dict, List, Mapping, Optional, Sequence, Set, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.errors import ConfigError

from .backbones import Backbone, BackboneOutput, build_cnn, build_transformer
from .backbones.weights import load_checked, read_state_dict, strip_prefix
from .checkpointing import checkpoint, checkpointing_active
from .fusion import HeterogenousTransmissionModule, LocalRefinementUnit, init_fusion_weights
from .heads import BNNeckHead, FeatureOutput
from .pooling import at_least_float32, build_pooling

logger = logging.getLogger(__name__)

# Every feature the model can supervise and return, in the order of the concatenation f_a.
FEATURE_NAMES = ("cnn", "transformer", "lru_cnn", "lru_transformer", "htm_cnn", "htm_transformer")


class FusionReID(nn.Module):
    """Two backbones on the same image, LRUs, L stacked HTMs, one BNNeck head per supervised feature.

    train mode: ``model(images, cam_ids)`` -> ``{name: FeatureOutput(logits, feature before BN)}``;
    eval mode: ``model(images, cam_ids)`` -> the retrieval feature picked by ``test_feat`` / ``neck_feat``;
    with ``flip`` (``TEST.FLIP``) of the image and its horizontal mirror (:meth:`flip_average`).
    """

    def __init__(self, num_classes: int, num_cams: int, cnn_name: str = "resnet50", last_stride: int = 1,
                 cnn_pooling: str = "gem", transformer_name: str = "vit_base_patch16_224",
                 img_size: Sequence[int] = (256, 128), stride_size: Sequence[int] = (12, 12),
                 sie_camera: bool = True, sie_coe: float = 3.0, drop_path: float = 0.1, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, fusion_dim: int = 768, lru: bool = True, htm_layers: int = 2,
                 htm_order: str = "seu_mfu", share_seu: bool = True, share_mfu: bool = False, num_heads: int = 12,
                 mlp_ratio: float = 4.0, pooling: str = "gem", gem_p: float = 3.0, test_feat: str = "all",
                 neck_feat: str = "before", feat_norm: bool = True, part_norm: bool = False,
                 t2t_attn_scale: str = "head_dim", t2t_pos_embed: str = "checkpoint", flip: bool = False,
                 fusion_init: str = "pytorch", freeze_gradient_free: bool = False):
        super().__init__()
        if htm_layers and not (cnn_name and transformer_name):
            raise ConfigError("MODEL.FUSION.HTM_LAYERS > 0 fuses two branches: set both MODEL.CNN.NAME and "
                              "MODEL.TRANSFORMER.NAME, or HTM_LAYERS 0")
        if htm_layers and not lru:
            raise ConfigError("MODEL.FUSION.HTM_LAYERS > 0 needs MODEL.FUSION.LRU True: the LRUs bring both "
                              "branches to the fused dimension D")
        self.cnn: Optional[Backbone] = None
        self.transformer: Optional[Backbone] = None
        if cnn_name:
            self.cnn = build_cnn(cnn_name, last_stride, img_size)
            self.pool_cnn = build_pooling(cnn_pooling, gem_p)  # f^_c = GeMP(X_c): the CNN has no class token
        if transformer_name:
            self.transformer = build_transformer(
                transformer_name, img_size, stride_size, num_cams=num_cams if sie_camera else 0, sie_coe=sie_coe,
                drop_path_rate=drop_path, drop_rate=drop_rate, attn_drop_rate=attn_drop_rate,
                t2t_attn_scale=t2t_attn_scale, t2t_pos_embed=t2t_pos_embed)
        dims = OrderedDict((branch, backbone.out_dim) for branch, backbone in self.backbones().items())
        self.lru = nn.ModuleDict()
        self.pool_lru = nn.ModuleDict()
        if lru:
            for branch, channels in list(dims.items()):
                self.lru[branch] = LocalRefinementUnit(channels, fusion_dim)
                self.pool_lru[branch] = build_pooling(pooling, gem_p)
                dims[f"lru_{branch}"] = fusion_dim
        self.htm = nn.ModuleList(
            HeterogenousTransmissionModule(fusion_dim, num_heads, mlp_ratio, htm_order, share_seu, share_mfu)
            for _ in range(htm_layers))
        if htm_layers:
            dims["htm_cnn"] = dims["htm_transformer"] = fusion_dim
        self.fusion_init = fusion_init
        init_fusion_weights(self.lru, fusion_init)  # MODEL.FUSION.INIT
        init_fusion_weights(self.htm, fusion_init)

        self.feature_dims = OrderedDict((n, dims[n]) for n in FEATURE_NAMES if n in dims)
        self.heads = nn.ModuleDict({n: BNNeckHead(d, num_classes) for n, d in self.feature_dims.items()})
        if test_feat != "all" and test_feat not in self.feature_dims:
            raise ConfigError(f"TEST.FEAT {test_feat!r} is not produced by this model; it has "
                              f"{', '.join(['all', *self.feature_dims])}")
        self.test_feat, self.neck_feat = test_feat, neck_feat
        self.feat_norm, self.part_norm = feat_norm, part_norm
        self.flip = flip
        self.num_classes = num_classes
        self.grad_checkpointing = False
        if freeze_gradient_free:
            self.freeze_gradient_free()

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
        if self.test_feat == "all":
            return sum(self.feature_dims.values())
        return self.feature_dims[self.test_feat]

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
        feats = self.extract(images, cam_ids)
        if self.training:
            return OrderedDict((name, FeatureOutput(self.heads[name](f).logits, f)) for name, f in feats.items())
        if self.flip:
            feats = self.flip_average(feats, self.extract(images.flip(-1), cam_ids))
        return self.retrieval_feature(feats)

    @staticmethod
    def flip_average(feats: Mapping[str, torch.Tensor], mirrored: Mapping[str, torch.Tensor]
                     ) -> "OrderedDict[str, torch.Tensor]":
        """Test-time flip (``TEST.FLIP``): the mean of the features of the images (``feats``) and of their
        horizontal mirrors (``mirrored``, same cameras), feature by feature, before the BNNeck and before any
        normalisation (as ``0.5 a + 0.5 b``: no fp16 overflow of the sum under AMP)."""
        return OrderedDict((name, f * 0.5 + mirrored[name] * 0.5) for name, f in feats.items())

    def retrieval_feature(self, feats: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The eval-mode feature: one of the six, or f_a = their concatenation (Sec. III-C).

        As released (docs/PAPER.md, "BNNeck and retrieval"): the parts are concatenated as they are and
        the result is L2-normalised as a whole (``feat_norm``). ``part_norm`` (not in the release) first normalises each part, so that
        no part dominates by scale. Normalisation runs in float32 or wider (an fp16 sum of squares
        of 5888 values overflows).
        """
        names = list(self.feature_dims) if self.test_feat == "all" else [self.test_feat]
        parts = [self.heads[n](feats[n]).bn_feature if self.neck_feat == "after" else feats[n] for n in names]
        if self.part_norm:
            parts = [F.normalize(at_least_float32(p), dim=1) for p in parts]
        out = torch.cat(parts, dim=1)
        return F.normalize(at_least_float32(out), dim=1) if self.feat_norm else out

    # ------------------------------------------------------------------------------------- weights
    @torch.jit.ignore
    def no_weight_decay(self) -> Set[str]:
        """Full names of the backbones' parameters without weight decay (timm convention): the position,
        class and camera embeddings of the Transformer; none of the CNN."""
        return {f"{branch}.{n}" for branch, backbone in self.backbones().items() for n in backbone.no_weight_decay()
                if getattr(backbone, n, None) is not None}

    def load_param(self, path: str, key: str = "MODEL.PRETRAIN_PATH", fine_tune: bool = False) -> None:
        """A whole FusionReID checkpoint file (train_net's, or a bare state dict; ``module.`` stripped)."""
        self.load_trained_state(read_checkpoint_state(path, key), path, key, fine_tune=fine_tune)

    def load_trained_state(self, state: Mapping[str, torch.Tensor], path: str,
                           key: str = "MODEL.PRETRAIN_PATH", fine_tune: bool = False) -> None:
        """Load a FusionReID state dict read from ``path``.

        ID classifiers of another shape (another dataset) keep this model's fresh initialisation. With
        ``fine_tune`` (``MODEL.PRETRAIN_CHOICE self``: a ReID checkpoint trained on another dataset) so does a
        camera embedding of another number of cameras; without it (evaluating ``TEST.WEIGHT``) that is an error,
        as the features would depend on untrained camera rows. One log line says what was loaded and what was
        re-made; everything else must match exactly (a ``WeightsError`` naming ``key`` otherwise).
        """
        own = self.state_dict()
        state = dict(state)
        dataset_layers = [k for k in state if k in own and state[k].shape != own[k].shape and (
            (k.startswith("heads.") and k.endswith("classifier.weight")) or (fine_tune and k.endswith("sie_embed")))]
        remade = {}
        for k in dataset_layers:
            old, new = state.pop(k).shape[0], own[k].shape[0]
            what = "camera embedding" if k.endswith("sie_embed") else "ID classifiers"
            unit = "cameras" if k.endswith("sie_embed") else "identities"
            remade[what] = f"{what} ({old} -> {new} {unit})"
        load_checked(self, state, key, path, "a checkpoint of this architecture", ignore_missing=dataset_layers)
        if remade:  # expected when fine-tuning; worth a warning when evaluating a checkpoint of another dataset
            logger.log(logging.INFO if fine_tune else logging.WARNING, "%s: loaded %d tensors of %s; re-made for "
                       "this dataset: %s", key, len(state), path, ", ".join(remade.values()))
        else:
            logger.info("loaded FusionReID weights from %s", path)


def read_checkpoint_state(path: str, key: str) -> Dict[str, torch.Tensor]:
    """The model state dict of a FusionReID checkpoint file (``module.`` prefixes stripped)."""
    return strip_prefix(read_state_dict(path, key, containers=("model", "state_dict")))
