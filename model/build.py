"""Building FusionReID from the config."""
import logging

from yacs.config import CfgNode

from utils.errors import ConfigError

from .fusion_reid import FusionReID

logger = logging.getLogger(__name__)


def build_model(cfg: CfgNode, num_classes: int, num_cams: int) -> FusionReID:
    """The model of ``cfg.MODEL`` with its pretrained weights (``MODEL.PRETRAIN_CHOICE``); the fusion modules
    initialised as ``MODEL.FUSION.INIT`` says, the gradient-free parameters frozen when
    ``SOLVER.FREEZE_GRADIENT_FREE`` is on (``FusionReID.gradient_free_parameter_names``)."""
    model = FusionReID(
        num_classes=num_classes, num_cams=num_cams,
        cnn_name=cfg.MODEL.CNN.NAME, last_stride=cfg.MODEL.CNN.LAST_STRIDE, cnn_pooling=cfg.MODEL.CNN.POOLING,
        transformer_name=cfg.MODEL.TRANSFORMER.NAME, img_size=tuple(cfg.INPUT.SIZE_TRAIN),
        stride_size=tuple(cfg.MODEL.TRANSFORMER.STRIDE_SIZE), sie_camera=cfg.MODEL.TRANSFORMER.SIE_CAMERA,
        sie_coe=cfg.MODEL.TRANSFORMER.SIE_COE, drop_path=cfg.MODEL.TRANSFORMER.DROP_PATH,
        drop_rate=cfg.MODEL.TRANSFORMER.DROP_RATE, attn_drop_rate=cfg.MODEL.TRANSFORMER.ATTN_DROP_RATE,
        fusion_dim=cfg.MODEL.FUSION.DIM, lru=cfg.MODEL.FUSION.LRU, htm_layers=cfg.MODEL.FUSION.HTM_LAYERS,
        htm_order=cfg.MODEL.FUSION.HTM_ORDER, share_seu=cfg.MODEL.FUSION.SHARE_SEU,
        share_mfu=cfg.MODEL.FUSION.SHARE_MFU, num_heads=cfg.MODEL.FUSION.NUM_HEADS,
        mlp_ratio=cfg.MODEL.FUSION.MLP_RATIO, pooling=cfg.MODEL.FUSION.POOLING, gem_p=cfg.MODEL.GEM_P,
        test_feat=cfg.TEST.FEAT, neck_feat=cfg.TEST.NECK_FEAT, feat_norm=cfg.TEST.FEAT_NORM,
        part_norm=cfg.TEST.PART_NORM, t2t_attn_scale=cfg.MODEL.TRANSFORMER.T2T_ATTN_SCALE,
        t2t_pos_embed=cfg.MODEL.TRANSFORMER.T2T_POS_EMBED, flip=cfg.TEST.FLIP, fusion_init=cfg.MODEL.FUSION.INIT,
        freeze_gradient_free=cfg.SOLVER.FREEZE_GRADIENT_FREE)
    if tuple(cfg.INPUT.SIZE_TEST) != tuple(cfg.INPUT.SIZE_TRAIN) and cfg.MODEL.TRANSFORMER.NAME:
        raise ConfigError(f"INPUT.SIZE_TEST {list(cfg.INPUT.SIZE_TEST)} differs from INPUT.SIZE_TRAIN "
                          f"{list(cfg.INPUT.SIZE_TRAIN)}: the Transformer's position embedding is built for one size")
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
        model.load_param(cfg.MODEL.PRETRAIN_PATH, fine_tune=True)
    if cfg.MODEL.GRAD_CHECKPOINT:
        model.set_grad_checkpointing(True)
    if cfg.MODEL.CHANNELS_LAST:
        model.set_channels_last(True)
    logger.info("FusionReID: features %s, retrieval feature %s (%d-d)%s",
                ", ".join(f"{n} ({d})" for n, d in model.feature_dims.items()), cfg.TEST.FEAT, model.test_dim,
                ", mean of the image and its mirror (TEST.FLIP)" if cfg.TEST.FLIP else "")
    return model
