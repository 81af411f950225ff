"""Building FusionReID from the config, and loading a trained checkpoint into it (checked against the config the
checkpoint was trained with)."""
import logging
from typing import Any, List, Mapping

import yaml
from yacs.config import CfgNode

from .backbones.weights import WeightsError, read_weight_file, strip_prefix, unwrap_state_dict
from .fusion_reid import FusionReID

logger = logging.getLogger(__name__)

# The config keys that decide what a checkpoint's tensors mean. Two configs that differ here can have the same
# tensor names and shapes (e.g. MODEL.FUSION.HTM_ORDER seu_mfu / mfu_seu) and still compute other functions.
ARCHITECTURE_KEYS = (
    "MODEL.CNN.NAME", "MODEL.CNN.LAST_STRIDE", "MODEL.CNN.POOLING",
    "MODEL.TRANSFORMER.NAME", "MODEL.TRANSFORMER.STRIDE_SIZE", "MODEL.TRANSFORMER.SIE_CAMERA",
    "MODEL.TRANSFORMER.SIE_COE", "MODEL.TRANSFORMER.T2T_ATTN_SCALE", "MODEL.TRANSFORMER.T2T_POS_EMBED",
    "MODEL.FUSION.DIM", "MODEL.FUSION.LRU", "MODEL.FUSION.HTM_LAYERS", "MODEL.FUSION.HTM_ORDER",
    "MODEL.FUSION.SHARE_SEU", "MODEL.FUSION.SHARE_MFU", "MODEL.FUSION.NUM_HEADS", "MODEL.FUSION.MLP_RATIO",
    "MODEL.FUSION.POOLING", "INPUT.SIZE_TRAIN",
)


def _plain(value: Any) -> Any:
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def architecture_differences(stored_config: str, cfg: Mapping[str, Any]) -> List[str]:
    """``'KEY: <checkpoint's value> in the checkpoint, <ours> here'`` for every :data:`ARCHITECTURE_KEYS` entry that
    differs between a checkpoint's stored config (the YAML text train_net.py saves) and ``cfg``. Keys the stored
    config does not have (older checkpoints) are not compared."""
    stored = yaml.safe_load(stored_config) or {}
    diffs = []
    for key in ARCHITECTURE_KEYS:
        theirs, ours, found = stored, cfg, True
        for part in key.split("."):
            if not isinstance(theirs, dict) or part not in theirs:
                found = False
                break
            theirs, ours = theirs[part], ours[part]
        if found and _plain(theirs) != _plain(ours):
            diffs.append(f"{key}: {_plain(theirs)!r} in the checkpoint, {_plain(ours)!r} here")
    return diffs


def load_trained_weights(model: FusionReID, cfg: CfgNode, path: str, key: str, fine_tune: bool = False) -> None:
    """A train_net.py checkpoint (or a bare state dict) at ``path`` into ``model``, read once.

    A checkpoint that stores its config must have been trained with ``cfg``'s architecture: otherwise a
    ``WeightsError`` names ``key`` and every differing key with both values. A bare state dict loads as before
    (its tensors' names and shapes are checked by ``FusionReID.load_trained_state``).
    """
    raw = read_weight_file(path, key)
    if isinstance(raw, dict) and isinstance(raw.get("config"), str):
        diffs = architecture_differences(raw["config"], cfg)
        if diffs:
            raise WeightsError(f"{key}: {path} was trained with another architecture ({'; '.join(diffs)}); set "
                               f"these keys as the checkpoint has them")
    state = strip_prefix(unwrap_state_dict(raw, path, key, containers=("model", "state_dict")))
    model.load_trained_state(state, path, key, fine_tune=fine_tune)


def build_model(cfg: CfgNode, num_classes: int, num_cams: int) -> FusionReID:
    """The model of ``cfg`` (``FusionReID.from_config``: its architecture and retrieval policy) with its
    pretrained weights (``MODEL.PRETRAIN_CHOICE``) and the runtime options ``MODEL.GRAD_CHECKPOINT`` and
    ``MODEL.CHANNELS_LAST``."""
    model = FusionReID.from_config(cfg, num_classes, num_cams)
    choice = cfg.MODEL.PRETRAIN_CHOICE
    if choice == "imagenet":
        for branch, path, key in ((model.cnn, cfg.MODEL.CNN.PRETRAIN_PATH, "MODEL.CNN.PRETRAIN_PATH"),
                                  (model.transformer, cfg.MODEL.TRANSFORMER.PRETRAIN_PATH,
                                   "MODEL.TRANSFORMER.PRETRAIN_PATH")):
            if branch is None:
                continue
            if path:
                branch.load_pretrained(path, key)
            else:
                logger.warning("%s is empty: the %s starts from random weights (PRETRAIN_CHOICE 'imagenet')",
                               key, branch.name)
    elif choice == "self":
        load_trained_weights(model, cfg, cfg.MODEL.PRETRAIN_PATH, "MODEL.PRETRAIN_PATH", fine_tune=True)
    if cfg.MODEL.GRAD_CHECKPOINT:
        model.set_grad_checkpointing(True)
    if cfg.MODEL.CHANNELS_LAST:
        model.set_channels_last(True)
    logger.info("FusionReID: features %s, retrieval feature %s (%d-d)%s",
                ", ".join(f"{n} ({d})" for n, d in model.feature_dims.items()), cfg.TEST.FEAT, model.test_dim,
                ", mean of the image and its mirror (TEST.FLIP)" if cfg.TEST.FLIP else "")
    return model
