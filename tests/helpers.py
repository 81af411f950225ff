"""Small shared pieces for the tests: tiny configs that build in well under a second on CPU, and what
the distributed tests share (the tiny config file, a free local port)."""
import os
import socket

from configs import load_cfg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The smoke-test config file (the whole architecture with tiny widths, a tiny generated dataset).
TINY_CONFIG = os.path.join(REPO, "configs", "Synthetic", "tiny.yml")

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


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (another process may still take it first)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
