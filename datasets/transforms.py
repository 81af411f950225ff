"""Image augmentation of the paper (Sec. IV-B), as torchvision transforms on RGB ``PIL.Image``s.

Train: resize, random horizontal flip, zero padding + random crop back to the size, to tensor,
normalise, random erasing with per-pixel Gaussian noise (area 0.02-1/3, aspect 0.3-1/0.3).
Test: resize, to tensor, normalise. Randomness comes from torch's RNG only (seeded per loader/worker,
see ``datasets.loader``).
"""
import torchvision.transforms as T
from yacs.config import CfgNode
from torchvision.transforms import InterpolationMode

# Random erasing as the authors' released configuration sets it (docs/PAPER.md, "Augmentation").
ERASE_SCALE = (0.02, 1.0 / 3.0)
ERASE_RATIO = (0.3, 1.0 / 0.3)


def build_transforms(cfg: CfgNode, is_train: bool = True) -> T.Compose:
    """The train (``is_train``) or test transform: ``PIL.Image`` -> float tensor [3, H, W], normalised."""
    normalize = T.Normalize(mean=list(cfg.INPUT.PIXEL_MEAN), std=list(cfg.INPUT.PIXEL_STD))
    if not is_train:
        return T.Compose([
            T.Resize(list(cfg.INPUT.SIZE_TEST), interpolation=InterpolationMode.BILINEAR),
            T.ToTensor(),
            normalize,
        ])
    size = list(cfg.INPUT.SIZE_TRAIN)
    return T.Compose([
        T.Resize(size, interpolation=InterpolationMode.BICUBIC),
        T.RandomHorizontalFlip(p=cfg.INPUT.FLIP_PROB),
        T.Pad(cfg.INPUT.PADDING, fill=0),
        T.RandomCrop(size),
        T.ToTensor(),
        normalize,
        T.RandomErasing(p=cfg.INPUT.RE_PROB, scale=ERASE_SCALE, ratio=ERASE_RATIO, value="random"),
    ])
