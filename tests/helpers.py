"""Small shared pieces for the tests: tiny configs that build in well under a second on CPU, and what
the distributed tests share (the tiny config file, a free local port)."""
import math
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


# ----------------------------------------------------------------------------- the LR schedules in closed form
def release_lr(epoch, peak, warmup_init=5e-5, lr_min=1e-5, warmup=10, max_epochs=180):
    """The LR the released schedule trains 1-based ``epoch`` at, for a group whose peak is ``peak``: timm's cosine
    over all ``max_epochs`` counted from t = 0, the warm-up from ``warmup_init`` laid over its start, epoch E at
    t = E (written out here, not through timm)."""
    t = epoch
    if t < warmup:
        return warmup_init + t * (peak - warmup_init) / warmup
    if t >= max_epochs:
        return lr_min
    return lr_min + 0.5 * (peak - lr_min) * (1 + math.cos(math.pi * t / max_epochs))


def paper_text_lr(epoch, base=5e-3, warmup_init=5e-5, lr_min=1e-5, warmup=10, max_epochs=180):
    """The LR of 1-based ``epoch`` under SOLVER.SCHEDULE paper_text (no bias factor): the warm-up as a prefix,
    then cosine over the remaining epochs, epoch E at t = E - 1."""
    t = epoch - 1
    if t < warmup:
        return warmup_init + t * (base - warmup_init) / warmup
    return lr_min + 0.5 * (base - lr_min) * (1 + math.cos(math.pi * (t - warmup) / (max_epochs - warmup)))
