"""Building FusionReID from the config (a ReID checkpoint for ``MODEL.PRETRAIN_CHOICE self`` is loaded through
``model.checkpointer``)."""
import logging
from typing import Union

import torch
from yacs.config import CfgNode

from .backbones.weights import WeightsError
from .checkpointer import (check_architecture, load_model_state, load_model_weights, model_sizes,
                           read_model_file)
from .fusion_reid import FusionReID

logger = logging.getLogger(__name__)


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
        load_model_weights(model, cfg, cfg.MODEL.PRETRAIN_PATH, "MODEL.PRETRAIN_PATH", fine_tune=True)
    if cfg.MODEL.GRAD_CHECKPOINT:
        model.set_grad_checkpointing(True)
    if cfg.MODEL.CHANNELS_LAST:
        model.set_channels_last(True)
    logger.info("FusionReID: features %s, retrieval feature %s (%d-d)%s",
                ", ".join(f"{n} ({d})" for n, d in model.feature_dims.items()), cfg.TEST.FEAT, model.test_dim,
                ", mean of the image and its mirror (TEST.FLIP)" if cfg.TEST.FLIP else "")
    return model


def build_trained_model(cfg, weight: str, key: str = "TEST.WEIGHT", device: Union[str, torch.device] = "cpu"
                        ) -> torch.nn.Module:
    """The model of ``cfg`` with the trained weights ``weight``, in eval mode on ``device``: the number of training
    identities and cameras are read from the checkpoint's tensors (no dataset needed), ImageNet files are not read
    (``MODEL.PRETRAIN_CHOICE`` is ignored), the architecture is checked as by
    ``model.checkpointer.load_model_weights``."""
    if not weight:
        raise WeightsError(f"{key} is empty: pass a trained model, e.g. {key} output/<run>/model_best.pth")
    state, config = read_model_file(weight, key)  # read once: sizes, architecture, then weights
    check_architecture(config, cfg, weight, key)
    num_classes, num_cams = model_sizes(state, weight, key)
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.PRETRAIN_CHOICE = "none"
    cfg.freeze()
    model = build_model(cfg, num_classes, num_cams or 1)
    load_model_state(model, state, weight, key)
    return model.to(device).eval()
