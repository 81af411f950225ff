"""Exported FusionReID files (``tools/export.py``) used without the training code and without a config.

Every exported file carries, in its format's own metadata, what a caller needs to use it: the input size,
layout, dtype and colour order, the normalisation, whether the preprocessing is inside the graph, the output
dimension, whether the output is L2-normalised, the feature settings (TEST.FEAT, ...), the config as YAML
and where the file came from (checkpoint SHA-256, code version, the export's parity figures). It is one
JSON object (see docs/EXPORT.md, "Metadata"):

* ONNX: the ``metadata_props`` entry with key :data:`METADATA_KEY`;
* TorchScript: the extra file ``METADATA_KEY + '.json'`` (``torch.jit.save(..., _extra_files=...)``).

:func:`read_metadata` reads it (from a TorchScript file without loading the model), :func:`write_metadata`
replaces it, :func:`write_threshold` sets ``recommended_threshold`` (for a calibration tool).
:class:`ExportedExtractor` runs a file (onnxruntime, or ``torch.jit.load``) on RGB crops, preprocessed as
the metadata says: resized to ``input_size`` by torchvision's ``Resize`` on a PIL image (bilinear, as the
test transform), then either fed as uint8 NHWC in ``colour_order`` (preprocessing in the graph) or scaled to
[0, 1], normalised with ``pixel_mean`` / ``pixel_std`` and fed as float32 NCHW.

Only numpy, PIL, torch/torchvision and onnx/onnxruntime are imported (no model, config or dataset code).
"""
import json
import logging
import math
import os
import warnings
import zipfile
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch

from utils.cameras import camera_id_list
from utils.checkpoint import atomic_write
from utils.errors import UsageError

logger = logging.getLogger(__name__)

METADATA_KEY = "fusionreid"       # ONNX metadata_props key; TorchScript extra file "fusionreid.json"
METADATA_VERSION = 1
COLOUR_ORDERS = ("BGR", "RGB")


def _extra_file_name() -> str:
    return f"{METADATA_KEY}.json"


def export_format(path: str) -> str:
    """``'torchscript'`` (a zip archive) or ``'onnx'`` (anything else) for the file at ``path``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"exported model not found: {path}")
    return "torchscript" if zipfile.is_zipfile(path) else "onnx"


def _load_onnx(path: str):
    import onnx

    try:
        return onnx.load(path)
    except Exception as e:  # noqa: BLE001 - protobuf's DecodeError and friends: not an ONNX file
        raise UsageError(f"{path} is neither a TorchScript archive nor an ONNX model "
                         f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None


def read_metadata(path: str) -> Dict[str, Any]:
    """The metadata tools/export.py wrote into the file at ``path``; a UsageError naming the file when
    there is none (a file from elsewhere, or from an export before the metadata existed)."""
    fmt = export_format(path)
    text = None
    if fmt == "torchscript":
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.split("/", 1)[-1] == f"extra/{_extra_file_name()}"]
            if names:
                text = archive.read(names[0]).decode("utf-8")
    else:
        text = next((p.value for p in _load_onnx(path).metadata_props if p.key == METADATA_KEY), None)
    if text is None:
        raise UsageError(f"{path} has no '{METADATA_KEY}' metadata: it was not written by tools/export.py (or by "
                         f"an older version of it); export the model again")
    try:
        metadata = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"{path}: the '{METADATA_KEY}' metadata is not valid JSON ({e})") from None
    version = metadata.get("format_version")
    if version != METADATA_VERSION:
        raise UsageError(f"{path}: metadata format_version {version!r}, this code reads version {METADATA_VERSION}")
    return metadata


def write_metadata(path: str, metadata: Dict[str, Any]) -> None:
    """Replace the metadata of the exported file at ``path`` (atomically: ``utils.checkpoint.atomic_write``)."""
    fmt = export_format(path)
    text = json.dumps(metadata, indent=1)
    if fmt == "onnx":
        import onnx

        model = _load_onnx(path)
        props = {p.key: p.value for p in model.metadata_props if p.key != METADATA_KEY}
        onnx.helper.set_model_props(model, dict(props, **{METADATA_KEY: text}))
        atomic_write(path, lambda f: f.write(model.SerializeToString()))
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notices
            loaded = torch.jit.load(path, map_location="cpu")
            atomic_write(path, lambda f: torch.jit.save(loaded, f, _extra_files={_extra_file_name(): text}))


def write_threshold(path: str, value: float, calibration: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Store ``value`` as ``recommended_threshold`` in the metadata of the exported file at ``path`` (the
    similarity threshold a calibration recommends) and ``calibration`` (how it was chosen: the FAR, the decision
    rule, the pairs; ``tools/calibrate.py --write-to``) as ``threshold_calibration`` (None: a threshold given by
    hand, any earlier calibration record removed); returns the updated metadata."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"recommended threshold must be a number, got {value!r}") from None
    if not math.isfinite(value):
        raise UsageError(f"recommended threshold must be a finite number, got {value}")
    metadata = read_metadata(path)
    metadata["recommended_threshold"] = value
    metadata["threshold_calibration"] = dict(calibration) if calibration else None
    write_metadata(path, metadata)
    logger.info("%s: recommended_threshold set to %g", path, value)
    return metadata


# ----------------------------------------------------------------------------- running an exported file
class ExportedExtractor:
    """Callable ``(crops, cam_ids=None) -> features [N, D]`` (float32, CPU) of an exported FusionReID.

    ``crops``: RGB uint8 arrays [h, w, 3] of any size (person crops); ``cam_ids``: training camera ids in
    [0, num_cams), or None / -1 for an unknown camera (ignored by a model without a camera input).
    ``providers``: onnxruntime execution providers (default CPU); ``device``: TorchScript's device.
    """

    def __init__(self, path: str, batch_size: int = 32, device: str = "cpu",
                 providers: Optional[Sequence[str]] = None):
        from torchvision import transforms as T

        self.path = path
        self.metadata = read_metadata(path)
        self.format = export_format(path)
        meta = self.metadata
        self.input_size = tuple(meta["input_size"])
        self.colour_order = meta["colour_order"]
        self.in_graph = bool(meta["preprocessing_in_graph"])
        self.input_names = [i["name"] for i in meta["inputs"]]
        self.num_cams = meta.get("num_cams")
        self.batch_size = batch_size
        self.device = torch.device(device)
        resize = T.Resize(list(self.input_size), interpolation=T.InterpolationMode.BILINEAR)
        if self.in_graph:
            self.transform = resize
        else:
            if self.colour_order != "RGB":
                raise UsageError(f"{path}: float input in {self.colour_order} order; this reader feeds RGB")
            self.transform = T.Compose([resize, T.ToTensor(), T.Normalize(meta["pixel_mean"], meta["pixel_std"])])
        if self.format == "onnx":
            import onnxruntime

            self.session = onnxruntime.InferenceSession(path, providers=list(providers or ["CPUExecutionProvider"]))
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                self.module = torch.jit.load(path, map_location=self.device)

    @property
    def embedding_dim(self) -> int:
        return int(self.metadata["output_dim"])

    @property
    def uses_cameras(self) -> bool:
        return "camids" in self.input_names

    def run(self, images: torch.Tensor, cams: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The file's ``features`` output for model inputs as the graph takes them (``images`` float32 NCHW
        or uint8 NHWC, ``cams`` int64 [B] when the model has a camera input)."""
        args = [images] + ([cams] if self.uses_cameras else [])
        if self.uses_cameras and cams is None:
            raise UsageError(f"{self.path}: the model takes camera ids (camids); pass -1 for unknown cameras")
        if self.format == "onnx":
            feeds = {name: t.cpu().numpy() for name, t in zip(self.input_names, args)}
            return torch.from_numpy(self.session.run(["features"], feeds)[0])
        with torch.no_grad():
            return self.module(*[t.to(self.device) for t in args]).float().cpu()

    def preprocess(self, crops: Sequence[np.ndarray]) -> torch.Tensor:
        """Model input of RGB uint8 crops: resized; in the graph's layout, dtype and colour order."""
        from PIL import Image

        if self.in_graph:
            batch = np.stack([np.asarray(self.transform(Image.fromarray(np.ascontiguousarray(c)))) for c in crops])
            if self.colour_order == "BGR":
                batch = batch[..., ::-1]
            return torch.from_numpy(np.ascontiguousarray(batch))
        return torch.stack([self.transform(Image.fromarray(np.ascontiguousarray(c))) for c in crops])

    def camera_ids(self, cam_ids: Optional[Sequence[Optional[int]]], n: int) -> torch.Tensor:
        """Camera ids as the graph's ``camids`` takes them (-1: unknown); checked when it has that input."""
        return torch.tensor(camera_id_list(cam_ids, n, self.num_cams, "crops"), dtype=torch.long)

    def __call__(self, crops: Sequence[np.ndarray], cam_ids: Optional[Sequence[Optional[int]]] = None) -> torch.Tensor:
        crops = list(crops)
        cams = self.camera_ids(cam_ids, len(crops))
        out: List[torch.Tensor] = [
            self.run(self.preprocess(crops[i:i + self.batch_size]), cams[i:i + self.batch_size])
            for i in range(0, len(crops), self.batch_size)]
        return torch.cat(out).float().contiguous() if out else torch.zeros(0, self.embedding_dim)
