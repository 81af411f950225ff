"""Building FusionReID from the config."""
import logging

from .fusion_reid import FusionReID

logger = logging.getLogger("fusionreid.model")


def build_model(cfg, num_classes, num_cams):
    """The model of ``cfg.MODEL`` with its pretrained weights (``MODEL.PRETRAIN_CHOICE``)."""
    m, t, f = cfg.MODEL, cfg.MODEL.TRANSFORMER, cfg.MODEL.FUSION
    model = FusionReID(
        num_classes=num_classes, num_cams=num_cams,
        cnn_name=m.CNN.NAME, last_stride=m.CNN.LAST_STRIDE, cnn_pooling=m.CNN.POOLING,
        transformer_name=t.NAME, img_size=tuple(cfg.INPUT.SIZE_TRAIN), stride_size=tuple(t.STRIDE_SIZE),
        sie_camera=t.SIE_CAMERA, sie_coe=t.SIE_COE, drop_path=t.DROP_PATH, drop_rate=t.DROP_RATE,
        attn_drop_rate=t.ATTN_DROP_RATE,
        fusion_dim=f.DIM, lru=f.LRU, htm_layers=f.HTM_LAYERS, htm_order=f.HTM_ORDER, share_seu=f.SHARE_SEU,
        share_mfu=f.SHARE_MFU, num_heads=f.NUM_HEADS, mlp_ratio=f.MLP_RATIO, pooling=m.POOLING, gem_p=m.GEM_P,
        test_feat=cfg.TEST.FEAT, neck_feat=cfg.TEST.NECK_FEAT, feat_norm=cfg.TEST.FEAT_NORM)
    if m.PRETRAIN_CHOICE == "imagenet":
        if model.cnn is not None and m.CNN.PRETRAIN_PATH:
            model.cnn.load_pretrained(m.CNN.PRETRAIN_PATH)
        elif model.cnn is not None:
            logger.warning("MODEL.CNN.PRETRAIN_PATH is empty: the CNN branch starts from random weights")
        if model.transformer is not None and t.PRETRAIN_PATH:
            model.transformer.load_pretrained(t.PRETRAIN_PATH)
        elif model.transformer is not None:
            logger.warning("MODEL.TRANSFORMER.PRETRAIN_PATH is empty: the Transformer branch starts from random weights")
    elif m.PRETRAIN_CHOICE == "self":
        model.load_param(m.PRETRAIN_PATH)
    logger.info("FusionReID: features %s, retrieval feature %s (%d-d)",
                ", ".join(f"{n} ({d})" for n, d in model.feature_dims.items()), cfg.TEST.FEAT, model.test_dim)
    return model
