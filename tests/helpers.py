"""Small shared pieces for the tests: tiny configs that build in well under a second on CPU."""
from configs import load_cfg

TINY = [
    "MODEL.PRETRAIN_CHOICE", "none",
    "MODEL.CNN.NAME", "resnet18",
    "MODEL.TRANSFORMER.NAME", "vit_tiny_patch16_224",
    "MODEL.TRANSFORMER.DROP_PATH", "0.0",
    "MODEL.FUSION.DIM", "64",
    "MODEL.FUSION.NUM_HEADS", "4",
    "INPUT.SIZE_TRAIN", "[64, 32]",
    "INPUT.SIZE_TEST", "[64, 32]",
]


def tiny_cfg(*overrides, freeze=True):
    """The FusionReID architecture with ResNet18 + ViT-Tiny, D=64, 64x32 inputs, plus ``overrides``."""
    return load_cfg("", TINY + list(overrides), freeze=freeze)
