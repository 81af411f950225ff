"""FusionReID as the appearance encoder of a boxmot tracker (boxmot 25: ``boxmot.reid.protocols.AppearanceEncoder``).

    from tracking.boxmot_encoder import FusionReIDEncoder
    encoder = FusionReIDEncoder.from_config("configs/MSMT17/table2/method5_full.yml", "model_best.pth")
    encoder = FusionReIDEncoder.from_export("fusionreid.onnx")   # no config, no training code
    feats = encoder.encode(frames, detections)     # boxmot Frames + Detections -> [N, D] float32 per frame
    feats = encoder.embed(bgr_frame, boxes_xyxy)   # an OpenCV frame and [N, 4] boxes, without boxmot

``FusionReIDEncoder`` satisfies boxmot's protocol (``embedding_dim``, ``requirements``, ``encode``), so it goes
wherever boxmot takes an encoder, e.g. ``boxmot.pipelines.tracking.TrackingPipeline(detector=None,
tracker=StrongSort(), reid=encoder)`` (docs/TRACKING.md).

What it does with each detection is what the model was trained and evaluated with:

* frames: a boxmot ``Frame`` holds RGB uint8 [3, H, W] (boxmot converts the BGR arrays a tracker is given
  into it); a numpy frame given directly is uint8 [H, W, 3] in ``array_colour`` order (default BGR, as OpenCV
  reads images and video);
* crop: each ``xyxy`` box, rounded outwards to whole pixels (floor of x1, y1; ceil of x2, y2) and clipped to
  the frame; a box outside the frame keeps one row / column of pixels at the border it is beyond;
* the model's preprocessing and feature: from a config + weights, ``processor.feature_extractor.FeatureExtractor``
  (the test transform: bilinear resize to INPUT.SIZE_TEST, RGB / 255, normalised with INPUT.PIXEL_MEAN / STD;
  TEST.FEAT & co.); from an exported file, ``tracking.exported.ExportedExtractor`` (the same steps, as the
  file's metadata describes them);
* cameras: one ``camera_id`` for every detection (a training camera of the checkpoint), or None: the mean
  of the learned camera embeddings (an unknown camera).

The features are returned as the model gives them: L2-normalised when TEST.FEAT_NORM is True (the default)
or the export was made with ``--l2-normalize``. boxmot is imported only when its types are needed
(``requirements``, ``encode`` with boxmot structures); a missing boxmot is a UsageError saying how to install
it (``pip install --no-deps -r requirements-tracking.txt``).
"""
import logging
from typing import Any, Callable, List, Optional, Sequence

import numpy as np
import torch

from tracking.exported import COLOUR_ORDERS
from utils.errors import UsageError

logger = logging.getLogger(__name__)

# crops [RGB uint8 h x w x 3] -> features [N, D] float32 on the CPU
Embedder = Callable[[List[np.ndarray]], torch.Tensor]


def import_boxmot():
    """The ``boxmot`` package, or a UsageError that says how to install it."""
    try:
        import boxmot
        from boxmot.reid.protocols import AppearanceEncoder  # noqa: F401 - the protocol this module implements
    except ImportError as e:
        raise UsageError(f"boxmot is not installed ({e}): pip install --no-deps -r requirements-tracking.txt "
                         f"(see docs/TRACKING.md)") from None
    return boxmot


def box_pixels(box: Sequence[float], height: int, width: int) -> tuple:
    """Integer ``(x1, y1, x2, y2)`` of an ``xyxy`` box: rounded outwards, clipped to a ``height`` x ``width``
    frame, at least one pixel wide and high."""
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    if not all(np.isfinite([x1, y1, x2, y2])):
        raise UsageError(f"box {list(box[:4])} is not finite")
    x1 = min(max(int(np.floor(x1)), 0), width - 1)
    y1 = min(max(int(np.floor(y1)), 0), height - 1)
    x2 = min(max(int(np.ceil(x2)), x1 + 1), width)
    y2 = min(max(int(np.ceil(y2)), y1 + 1), height)
    return x1, y1, x2, y2


def crop_boxes(image_rgb: np.ndarray, boxes: np.ndarray) -> List[np.ndarray]:
    """RGB uint8 crops of ``boxes`` ([N, >= 4] ``xyxy`` in pixels) from an RGB uint8 [H, W, 3] image."""
    height, width = image_rgb.shape[:2]
    crops = []
    for box in np.asarray(boxes, dtype=np.float64):
        x1, y1, x2, y2 = box_pixels(box, height, width)
        crops.append(np.ascontiguousarray(image_rgb[y1:y2, x1:x2]))
    return crops


def _check_image(image: np.ndarray, what: str) -> None:
    if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
            and image.shape[0] > 0 and image.shape[1] > 0):
        raise UsageError(f"{what}: expected a uint8 image [H, W, 3], got {type(image).__name__} "
                         f"{getattr(image, 'dtype', '')}{tuple(getattr(image, 'shape', ()))}")


class FusionReIDEncoder:
    """boxmot appearance encoder of a FusionReID model (see the module docstring).

    ``embedder``: RGB crops -> features [N, D]; ``embedding_dim``: D; ``array_colour``: channel order of numpy
    frames ('BGR' or 'RGB'). Build one with :meth:`from_config` or :meth:`from_export`.
    """

    def __init__(self, embedder: Embedder, embedding_dim: int, array_colour: str = "BGR", source: str = ""):
        if array_colour not in COLOUR_ORDERS:
            raise UsageError(f"array_colour must be one of {', '.join(COLOUR_ORDERS)}, got {array_colour!r}")
        self.embedder = embedder
        self._embedding_dim = int(embedding_dim)
        self.array_colour = array_colour
        self.source = source

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, config: Any, weight: Optional[str] = None, opts: Sequence[str] = (),
                    device: Optional[str] = None, batch_size: Optional[int] = None,
                    camera_id: Optional[int] = None, array_colour: str = "BGR") -> "FusionReIDEncoder":
        """From a config (a YAML path with ``opts`` KEY VALUE overrides, or a CfgNode) and trained weights
        (``weight``, default TEST.WEIGHT), through ``processor.feature_extractor.FeatureExtractor``."""
        from configs import load_cfg
        from processor.feature_extractor import FeatureExtractor

        cfg = load_cfg(config, list(opts)) if isinstance(config, str) else config
        extract = FeatureExtractor(cfg, weight, device=device, batch_size=batch_size)
        return cls._of_extractor(extract, extract.model.test_dim, camera_id, array_colour, weight or cfg.TEST.WEIGHT)

    @classmethod
    def from_export(cls, path: str, batch_size: int = 32, camera_id: Optional[int] = None,
                    array_colour: str = "BGR", **runtime: Any) -> "FusionReIDEncoder":
        """From a file written by tools/export.py (ONNX or TorchScript), preprocessed as its metadata says
        (``tracking.exported.ExportedExtractor``; ``runtime``: its ``device`` / ``providers``)."""
        from tracking.exported import ExportedExtractor

        extract = ExportedExtractor(path, batch_size=batch_size, **runtime)
        return cls._of_extractor(extract, extract.embedding_dim, camera_id, array_colour, path)

    @classmethod
    def _of_extractor(cls, extract: Any, embedding_dim: int, camera_id: Optional[int], array_colour: str,
                      source: str) -> "FusionReIDEncoder":
        """The encoder of an extractor ``(crops, cam_ids) -> features``, every crop from ``camera_id``."""
        extract.camera_ids([camera_id], 1)  # a bad camera id fails here, not at the first frame

        def embed(crops: List[np.ndarray]) -> torch.Tensor:
            return extract(crops, [camera_id] * len(crops))

        return cls(embed, embedding_dim, array_colour, source=source)

    # ------------------------------------------------------------------ boxmot's protocol
    @property
    def embedding_dim(self) -> int:
        """Width of every descriptor :meth:`encode` returns."""
        return self._embedding_dim

    @property
    def requirements(self):
        """boxmot ``EncoderRequirements``: crops from boxes, no masks."""
        import_boxmot()
        from boxmot.reid.protocols import EncoderRequirements

        return EncoderRequirements(masks=False)

    def encode(self, frames: Sequence[Any], detections: Sequence[Any]) -> List[torch.Tensor]:
        """One float32 [N, D] CPU tensor per frame: the features of that frame's detections.

        ``frames``: boxmot ``Frame`` objects (RGB [3, H, W]) or uint8 [H, W, 3] arrays (``array_colour``);
        ``detections``: boxmot ``Detections`` with axis-aligned boxes, or [N, >= 4] ``xyxy`` arrays."""
        frames, detections = list(frames), list(detections)
        if len(frames) != len(detections):
            raise UsageError(f"{len(frames)} frames but {len(detections)} detection batches")
        return [self.embed_rgb(self.frame_rgb(frame, i), self.boxes_of(dets, i))
                for i, (frame, dets) in enumerate(zip(frames, detections))]

    # ------------------------------------------------------------------ pieces
    def frame_rgb(self, frame: Any, index: int = 0) -> np.ndarray:
        """An RGB uint8 [H, W, 3] view of a boxmot ``Frame`` or of a numpy frame in ``array_colour`` order."""
        if isinstance(frame, np.ndarray):
            _check_image(frame, f"frame {index}")
            return frame[..., ::-1] if self.array_colour == "BGR" else frame
        image = getattr(frame, "image", None)
        if isinstance(image, torch.Tensor) and image.dtype == torch.uint8 and image.ndim == 3 and image.shape[0] == 3:
            return image.cpu().numpy().transpose(1, 2, 0)  # boxmot's Frame: RGB [3, H, W]
        raise UsageError(f"frame {index}: expected a boxmot Frame or a uint8 array [H, W, 3], got "
                         f"{type(frame).__name__}")

    @staticmethod
    def boxes_of(detections: Any, index: int = 0) -> np.ndarray:
        """[N, 4] ``xyxy`` boxes of boxmot ``Detections`` (axis-aligned) or of an [N, >= 4] array."""
        if isinstance(detections, (np.ndarray, torch.Tensor)):
            boxes = np.asarray(detections, dtype=np.float64)
            if boxes.size == 0:
                return np.zeros((0, 4))
            if boxes.ndim != 2 or (len(boxes) and boxes.shape[1] < 4):
                raise UsageError(f"detections {index}: expected [N, >= 4] xyxy rows, got shape {boxes.shape}")
            return boxes[:, :4]
        geometry = getattr(detections, "geometry", None)
        if geometry is None:
            raise UsageError(f"detections {index}: expected boxmot Detections or an [N, >= 4] array, got "
                             f"{type(detections).__name__}")
        if getattr(geometry, "is_obb", False):
            raise UsageError(f"detections {index}: oriented boxes (OBB) are not supported; FusionReID crops "
                             f"axis-aligned person boxes")
        return geometry.values.detach().cpu().numpy().astype(np.float64)

    def embed_rgb(self, image_rgb: np.ndarray, boxes: np.ndarray) -> torch.Tensor:
        """Features [N, D] (float32, CPU, contiguous) of ``boxes`` in an RGB uint8 [H, W, 3] image."""
        if len(boxes) == 0:
            return torch.zeros(0, self.embedding_dim)
        feats = self.embedder(crop_boxes(image_rgb, boxes)).float().cpu().contiguous()
        if feats.shape != (len(boxes), self.embedding_dim):
            raise RuntimeError(f"{self.source}: features of shape {tuple(feats.shape)} for {len(boxes)} boxes, "
                               f"expected ({len(boxes)}, {self.embedding_dim})")
        return feats

    def embed(self, frame: np.ndarray, boxes: np.ndarray) -> torch.Tensor:
        """Features [N, D] of ``boxes`` ([N, >= 4] ``xyxy``) in a numpy frame in ``array_colour`` order (BGR
        by default: a frame as OpenCV reads it); no boxmot needed."""
        return self.embed_rgb(self.frame_rgb(frame), self.boxes_of(boxes))
