"""Re-identification features of your own images with a trained FusionReID, no dataset needed.

    from configs import load_cfg
    from processor.feature_extractor import FeatureExtractor

    cfg = load_cfg("configs/MSMT17/table2/method5_full.yml")
    extract = FeatureExtractor(cfg, "output/MSMT17/table2/method5_full/model_best.pth")
    feats = extract(["a.jpg", "b.jpg"])                # [2, d] float32 on the CPU
    feats = extract([pil_image, rgb_uint8_array], cam_ids=[0, 3])

Weights: a train_net.py checkpoint (``{'model': state_dict, ...}``) or a bare state dict, loaded with
``model.build.build_trained_model`` (everything must match the config's architecture). The number of training
identities and of cameras are read from the checkpoint's tensors (ID classifier weight rows,
``transformer.sie_embed`` rows), so no dataset is needed to build the model; ImageNet weights are not
read (``MODEL.PRETRAIN_CHOICE`` is ignored).

Preprocessing is the test transform ``datasets.build_transforms(cfg, is_train=False)`` (resize to
INPUT.SIZE_TEST, to tensor, normalise with INPUT.PIXEL_MEAN/STD), applied once per image. The feature is
the model's eval-mode output: TEST.FEAT / TEST.NECK_FEAT / TEST.FEAT_NORM / TEST.FLIP, as in evaluation.

Unknown cameras: the Transformer adds a learned camera embedding (SIE) to its tokens. For images without a
camera id (``cam_ids=None``, or -1/None entries) the extractor adds the *mean* of the learned camera
embeddings: the embedding enters linearly (``x + coe * e[cam]``), so the mean is the expectation over
the training cameras with each camera equally likely, favouring none of them. It is an extra row
appended to this extractor's own copy of ``sie_embed`` (index ``num_cams``); the checkpoint is unchanged.
"""
import logging
import os

import numpy as np
import torch
from PIL import Image

from datasets.base import IMAGE_EXTENSIONS
from utils.cameras import UNKNOWN_CAMERA, camera_id_list

logger = logging.getLogger(__name__)

WEIGHT_KEY = "TEST.WEIGHT"


# ----------------------------------------------------------------------------- model
def extractor_from_args(args):
    """The shared start of the image tools: console logging, ``--config_file`` + ``KEY VALUE`` overrides,
    and a :class:`FeatureExtractor` of ``TEST.WEIGHT``."""
    from configs import load_cfg

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return FeatureExtractor(load_cfg(args.config_file, args.opts))


def add_mean_camera(model):
    """Append the mean of the learned camera embeddings as an extra camera; returns its id (None when the
    model has no camera embedding). Only this model instance changes (``model.backbones.camera``)."""
    trans = model.transformer
    if trans is None or not trans.has_camera_embedding:
        return None
    return trans.add_mean_camera()


# ----------------------------------------------------------------------------- images
def find_images(folder):
    """Paths of the image files under ``folder`` and its subfolders, sorted; a clear error when there
    are none. (``datasets.base.list_images`` lists one folder's file names, for the dataset layouts.)"""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"image folder not found: {folder}")
    found = []
    for dirpath, dirnames, names in os.walk(folder):
        dirnames.sort()
        found += [os.path.join(dirpath, n) for n in sorted(names) if n.lower().endswith(IMAGE_EXTENSIONS)]
    if not found:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {folder}")
    return found


def folder_identities(paths, folder):
    """The identity of each image when images sit in per-identity subfolders (``folder/<id>/x.jpg``):
    the subfolder name; None when any image lies directly in ``folder``."""
    ids = []
    for path in paths:
        parts = os.path.relpath(path, folder).split(os.sep)
        if len(parts) < 2:
            return None
        ids.append(parts[0])
    return ids


def to_pil(image, index=0):
    """A path, ``PIL.Image`` or RGB uint8 array [H, W, 3] as an RGB ``PIL.Image``."""
    from datasets import read_image

    if isinstance(image, (str, os.PathLike)):
        return read_image(os.fspath(image))
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8:
        return Image.fromarray(image)
    raise TypeError(f"image {index}: expected a path, a PIL.Image or an RGB uint8 array [H, W, 3], got "
                    f"{type(image).__name__}{getattr(image, 'shape', '')}")


# ----------------------------------------------------------------------------- extractor
class FeatureExtractor:
    """Callable ``(images, cam_ids=None) -> features [N, d]`` (float32, CPU); see the module docstring."""

    def __init__(self, cfg, weight=None, device=None, batch_size=None):
        from datasets import build_transforms
        from utils.misc import resolve_device

        self.cfg = cfg
        self.device = torch.device(device) if device is not None else resolve_device(cfg.MODEL.DEVICE)
        from model.build import build_trained_model

        self.model = build_trained_model(cfg, weight or cfg.TEST.WEIGHT, WEIGHT_KEY, self.device)
        self.unknown_cam = add_mean_camera(self.model)
        self.transform = build_transforms(cfg, is_train=False)
        self.batch_size = batch_size or cfg.TEST.IMS_PER_BATCH

    def preprocess(self, images, start=0):
        """The test transform of every image: [N, 3, H, W] (``start``: index of the first, for errors)."""
        return torch.stack([self.transform(to_pil(image, i)) for i, image in enumerate(images, start)])

    def camera_ids(self, cam_ids, n):
        """Camera ids as a tensor; None / -1 entries (or ``cam_ids=None``) become the mean camera."""
        ids = camera_id_list(cam_ids, n, self.unknown_cam)
        if self.unknown_cam is None:
            return torch.zeros(n, dtype=torch.long)  # no camera embedding: the ids are not used
        return torch.tensor([self.unknown_cam if c == UNKNOWN_CAMERA else c for c in ids], dtype=torch.long)

    @torch.no_grad()
    def features(self, batch, cams):
        """Eval-mode features [N, d] (float32, CPU) of preprocessed images [N, 3, H, W] and camera ids [N]."""
        return self.model(batch.to(self.device), cams.to(self.device)).float().cpu()

    def __call__(self, images, cam_ids=None):
        """Features of ``images`` (paths, PIL images or RGB arrays), ``batch_size`` images at a time (only one
        batch of decoded images is held in memory)."""
        images = list(images)
        cams = self.camera_ids(cam_ids, len(images))
        out = [self.features(self.preprocess(images[i:i + self.batch_size], i), cams[i:i + self.batch_size])
               for i in range(0, len(images), self.batch_size)]
        return torch.cat(out) if out else torch.zeros(0, self.model.test_dim)
