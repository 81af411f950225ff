#!/usr/bin/env python
"""Export a trained FusionReID to ONNX or TorchScript, verified against PyTorch before it is written.

    python tools/export.py --config_file F --format onnx --out model.onnx TEST.WEIGHT W [KEY VALUE ...]
    python tools/export.py --config_file F --format torchscript --out model.pt TEST.WEIGHT W
    python tools/export.py --config_file F TEST.WEIGHT W     # ONNX, written to OUTPUT_DIR/model.onnx

The exported model is the eval-mode model of ``processor/feature_extractor.py`` (``FeatureExtractor``):

* input ``images``: float32 [B, 3, H, W], H, W = INPUT.SIZE_TEST, already preprocessed by the test
  transform (resized, scaled to [0, 1], normalised with INPUT.PIXEL_MEAN / INPUT.PIXEL_STD); B is dynamic;
* input ``camids``: int64 [B], only when the model has a camera embedding (a Transformer branch with
  MODEL.TRANSFORMER.SIE_CAMERA): a training camera in [0, num_cams), or -1 for an unknown camera (the
  mean of the learned camera embeddings, as FeatureExtractor does);
* output ``features``: float32 [B, d], the retrieval feature (TEST.FEAT, TEST.NECK_FEAT, TEST.FEAT_NORM,
  TEST.PART_NORM and TEST.FLIP are baked in: set them when exporting).

``--bake-preprocessing``: the graph takes ``images`` as uint8 [B, H, W, 3] (NHWC) in ``--input-colour`` order
(BGR by default, as OpenCV and cameras give them) and converts, reorders and normalises them itself; the
resize to H, W stays outside. ``--l2-normalize``: the output is L2-normalised in the graph.

Metadata: the file carries what a caller needs (input size, layout, dtype, colour order, mean/std, whether
the preprocessing is in the graph, output dimension, L2-normalised or not, TEST.FEAT & co., TEST.METRIC, the
config as YAML, provenance with the checkpoint's SHA-256 and the parity figures, ``--threshold`` as
``recommended_threshold``) as one JSON object: ONNX ``metadata_props['fusionreid']``, TorchScript extra file
``fusionreid.json``. ``tracking/exported.py`` reads it back (``ExportedExtractor``: an extractor needing no
config) and :func:`write_threshold` updates the threshold of an existing file.

Weights: TEST.WEIGHT, a checkpoint written by train_net.py or a bare state dict (read as FeatureExtractor
reads it: MODEL.PRETRAIN_CHOICE is ignored, the numbers of identities and cameras come from the file).
Without TEST.WEIGHT the model is exported as ``build_model`` builds it (MODEL.PRETRAIN_CHOICE applies)
with ``--num-cams`` cameras (random weights seeded by SOLVER.SEED), and a warning says it is untrained. The
export runs on the CPU.

Verification: PyTorch and the exported file (run by onnxruntime, or loaded back with ``torch.jit.load``)
describe the same deterministic random images (``--seed``) at two batch sizes, the trace batch
(``--trace-batch``) and another one (``--check-batch``, proving the dynamic batch). Reported: the largest
absolute feature difference, and whether the ranking of the check batch is the same (first half as
queries, second half as gallery, the evaluation's distance TEST.METRIC computed in float64), with its
margin (the smallest gap between two distances of a query). A difference above ``--atol`` or another
ranking is an error (exit code 1) and nothing is written to ``--out``.

ONNX: PyTorch's TorchScript-based exporter (``torch.onnx.export(dynamo=False)``, opsets 14-20, default
17); ``--dynamo`` uses the torch.export-based exporter instead (needs ``pip install onnxscript``, opset
18 or later, several times slower). TorchScript: ``torch.jit.trace`` (deprecated by PyTorch in favour
of torch.export, still working in 2.15).
"""
import argparse
import logging
import math
import os
import sys
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# write_threshold: for a calibration tool (tools.export.write_threshold updates an exported file's threshold)
from tracking.exported import (COLOUR_ORDERS, METADATA_VERSION, ExportedExtractor,  # noqa: E402, F401
                               write_metadata, write_threshold)
from utils.cli import ConfigArgumentParser  # noqa: E402
from utils.dotted import get_dotted  # noqa: E402
from utils.errors import FusionReIDError, UsageError, cli_entry  # noqa: E402

logger = logging.getLogger(__name__)

FORMATS = ("onnx", "torchscript")
DEFAULT_NAMES = {"onnx": "model.onnx", "torchscript": "model.pt"}  # in OUTPUT_DIR, without --out
DEFAULT_ATOL = 1e-4
# Opsets of the TorchScript-based ONNX exporter (14: scaled_dot_product_attention; 20: its newest).
LEGACY_OPSETS = range(14, 21)
DEFAULT_OPSET = 17            # LayerNormalization is one ONNX op from 17 on
DYNAMO_MIN_OPSET = 18

# A runner of an exported file: (images [B, 3, H, W], camids [B] or None) -> features [B, d].
Runner = Callable[[torch.Tensor, Optional[torch.Tensor]], torch.Tensor]


class ExportError(FusionReIDError, RuntimeError):
    """The exported model cannot be made or does not reproduce PyTorch's features; the message says how."""


# ----------------------------------------------------------------------------- the exported module
class ExportedReID(nn.Module):
    """A FusionReID in eval mode behind a fixed signature: ``(images, camids) -> features``.

    ``unknown_cam``: the id of the mean camera embedding that ``processor.feature_extractor.add_mean_camera``
    appended (None for a model without a camera embedding: then ``forward`` takes the images only).
    Camera ids of -1 are mapped to it, so the exported graph treats unknown cameras as FeatureExtractor does.

    ``bake_colour`` ('BGR' or 'RGB'; None: float input): ``images`` are uint8 [B, H, W, 3] in that colour
    order, converted as the test transform does after its resize (``ToTensor``: / 255, RGB, NCHW;
    ``Normalize``: ``(x - pixel_mean) / pixel_std``). ``l2_normalize``: the features are L2-normalised.
    """

    def __init__(self, model: nn.Module, unknown_cam: Optional[int], bake_colour: Optional[str] = None,
                 pixel_mean: Sequence[float] = (0.5, 0.5, 0.5), pixel_std: Sequence[float] = (0.5, 0.5, 0.5),
                 l2_normalize: bool = False):
        super().__init__()
        self.model = model
        self.unknown_cam = unknown_cam
        self.bake_colour = bake_colour
        self.l2_normalize = l2_normalize
        if bake_colour is not None:
            # channel c of the RGB image is channel rgb_index[c] of the input
            order = [0, 1, 2] if bake_colour == "RGB" else [2, 1, 0]
            self.register_buffer("rgb_index", torch.tensor(order), persistent=False)
            self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(1, 3, 1, 1),
                                 persistent=False)
            self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(1, 3, 1, 1),
                                 persistent=False)
        self.eval()  # the exporters put a module back into the mode they found it in

    @property
    def uses_cameras(self) -> bool:
        return self.unknown_cam is not None

    @property
    def input_names(self) -> List[str]:
        return ["images", "camids"] if self.uses_cameras else ["images"]

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B, H, W, 3] in ``bake_colour`` order -> the test transform's float32 [B, 3, H, W]."""
        rgb = images.permute(0, 3, 1, 2).index_select(1, self.rgb_index)
        return (rgb.float().div(255) - self.pixel_mean) / self.pixel_std

    def forward(self, images: torch.Tensor, camids: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.bake_colour is not None:
            images = self.preprocess(images)
        if self.unknown_cam is None:
            feats = self.model(images)
        else:
            camids = torch.where(camids < 0, torch.full_like(camids, self.unknown_cam), camids)
            feats = self.model(images, camids)
        return F.normalize(feats, dim=1) if self.l2_normalize else feats


def build_exported(cfg, num_cams: int, bake_colour: Optional[str] = None, l2_normalize: bool = False) -> ExportedReID:
    """The model to export: FeatureExtractor's (TEST.WEIGHT, mean camera appended), or an untrained one;
    ``bake_colour``, ``l2_normalize``: see :class:`ExportedReID`."""
    from model import build_model
    from model.build import build_trained_model
    from processor.feature_extractor import add_mean_camera
    from utils.misc import set_seed

    if cfg.TEST.WEIGHT:
        model = build_trained_model(cfg, cfg.TEST.WEIGHT)
    else:
        logger.warning("TEST.WEIGHT is empty: exporting the model as built (MODEL.PRETRAIN_CHOICE %r), not a "
                       "trained one, with %d camera(s) (--num-cams)", cfg.MODEL.PRETRAIN_CHOICE, num_cams)
        set_seed(cfg.SOLVER.SEED)  # the same random weights at every run
        model = build_model(cfg, 1, num_cams).eval()  # the ID classifiers are not part of the eval feature
    return ExportedReID(model, add_mean_camera(model), bake_colour, cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD,
                        l2_normalize)


def sample_inputs(cfg, batch: int, num_cams: Optional[int], seed: int,
                  bake_colour: Optional[str] = None) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Deterministic test inputs: images [B, 3, H, W] normalised as the test transform does (with
    ``bake_colour``: the same pixels as uint8 [B, H, W, 3] in that colour order), and camera ids cycling
    through -1 (unknown), 0, ..., num_cams - 1 (None for ``num_cams`` None).

    Each image is a mosaic of random colours (blocks of about 32 pixels) plus pixel noise: the noise drives
    every filter, the mosaic makes the images differ as wholes, so that even an untrained model (whose
    features of pure noise images are nearly identical) ranks them with clear margins.
    """
    h, w = cfg.INPUT.SIZE_TEST
    gen = torch.Generator().manual_seed(seed)
    mosaic = torch.rand(batch, 3, max(h // 32, 2), max(w // 32, 2), generator=gen)
    noise = torch.rand(batch, 3, h, w, generator=gen)
    pixels = 0.8 * F.interpolate(mosaic, size=(h, w), mode="nearest") + 0.2 * noise
    mean = torch.tensor(cfg.INPUT.PIXEL_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(cfg.INPUT.PIXEL_STD).view(1, 3, 1, 1)
    cams = None if num_cams is None else torch.arange(batch) % (num_cams + 1) - 1
    if bake_colour is not None:
        rgb = (pixels * 255).round().to(torch.uint8)
        return (rgb.flip(1) if bake_colour == "BGR" else rgb).permute(0, 2, 3, 1).contiguous(), cams
    return (pixels - mean) / std, cams


def model_args(images: torch.Tensor, cams: Optional[torch.Tensor]) -> Tuple[torch.Tensor, ...]:
    return (images,) if cams is None else (images, cams)


# ----------------------------------------------------------------------------- writing and reading back
def quiet_tracing():
    """A context that records (instead of printing) the warnings of tracing, for :func:`log_warnings` (DEBUG):
    the TracerWarnings are the model's input-size checks (constant for the exported H, W), the others
    PyTorch's deprecation notices of TorchScript and of the TorchScript-based ONNX exporter."""
    return warnings.catch_warnings(record=True)


def log_warnings(caught: List[warnings.WarningMessage]) -> None:
    for w in caught:
        logger.debug("%s: %s", w.category.__name__, str(w.message).splitlines()[0])


def export_onnx(module: ExportedReID, example: Tuple[torch.Tensor, ...], path: str, opset: int,
                dynamo: bool) -> None:
    """``module`` as an ONNX file at ``path``, batch axis dynamic."""
    names = module.input_names
    kwargs = dict(input_names=names, output_names=["features"], opset_version=opset, dynamo=dynamo)
    if dynamo:
        try:
            import onnxscript  # noqa: F401
        except ImportError:
            raise UsageError("--dynamo: the torch.export-based ONNX exporter needs onnxscript "
                             "(pip install onnxscript); leave --dynamo out to use the default exporter") from None
        batch = torch.export.Dim("batch")
        kwargs.update(dynamic_shapes={name: {0: batch} for name in names}, external_data=False)
    else:
        kwargs.update(dynamic_axes={name: {0: "batch"} for name in names + ["features"]})
    with quiet_tracing() as caught, torch.no_grad():
        warnings.simplefilter("always")
        try:
            torch.onnx.export(module, example, path, **kwargs)
        except torch.onnx.errors.OnnxExporterError as e:  # an operation without an ONNX form at this opset
            raise ExportError(f"torch.onnx.export (opset {opset}{', dynamo' if dynamo else ''}) cannot export "
                              f"this model: {str(e).splitlines()[0]} (try another --opset, or --format "
                              f"torchscript)") from e
    log_warnings(caught)
    check_onnx(path)


def check_onnx(path: str) -> None:
    """ONNX's own validation of the file at ``path`` (operators, types, shapes)."""
    import onnx

    try:
        onnx.checker.check_model(path, full_check=True)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"the exported ONNX file is invalid: {str(e).splitlines()[0]}") from None


def export_torchscript(module: ExportedReID, example: Tuple[torch.Tensor, ...], path: str) -> None:
    """``module`` traced with ``torch.jit.trace`` and saved with ``torch.jit.save``. (``torch.jit.script``
    rejects the model's Python, e.g. the generators of ``model/backbones/resnet.py``; tracing records the
    batch size symbolically, which the check batch verifies.)"""
    with quiet_tracing() as caught, torch.no_grad():
        warnings.simplefilter("always")
        traced = torch.jit.trace(module, example, check_trace=False)  # the verification compares outputs
        torch.jit.save(traced, path)
    log_warnings(caught)


def load_runner(fmt: str, path: str) -> Runner:
    """The exported file at ``path`` run as a caller runs it (``tracking.exported.ExportedExtractor``:
    onnxruntime on the CPU, or ``torch.jit.load``); ``fmt`` is the format written."""
    return ExportedExtractor(path).run


# ----------------------------------------------------------------------------- verification
def distances(feats: torch.Tensor, cfg) -> torch.Tensor:
    """Query x gallery distances, first half of ``feats`` as queries and second half as gallery, by the
    evaluation's formula (TEST.METRIC, TEST.FEAT_NORM) in float64: float32 rounding of ``2 - 2 cos`` would
    itself reorder the near-ties of similar images."""
    from utils.distance import GalleryDistance

    half = len(feats) // 2
    return GalleryDistance(feats[half:].double(), cfg.TEST.METRIC, cfg.TEST.FEAT_NORM)(feats[:half].double())


def ranking(dist: torch.Tensor) -> torch.Tensor:
    """Gallery order per query, nearest first (ties keep the gallery order)."""
    return torch.argsort(dist, dim=1, stable=True)


def verify(module: ExportedReID, run: Runner, cfg, batches: List[int], num_cams: Optional[int],
           seed: int) -> Dict[str, object]:
    """PyTorch's and the exported model's features of the same inputs at each batch size of ``batches``:
    ``{'max_abs_diff', 'per_batch': {B: diff}, 'ranking_same', 'ranking_margin', 'feature_dim'}`` (the
    ranking of the last batch)."""
    per_batch = {}
    for i, batch in enumerate(batches):
        images, cams = sample_inputs(cfg, batch, num_cams, seed + i, module.bake_colour)
        with torch.no_grad():
            expected = module(*model_args(images, cams)).float()
        got = run(images, cams).float()
        if got.shape != expected.shape:
            raise ExportError(f"the exported model gives features of shape {tuple(got.shape)} for a batch of "
                              f"{batch}, PyTorch {tuple(expected.shape)}")
        per_batch[batch] = (got - expected).abs().max().item()
    # ranking of the last batch; its margin: the smallest gap between two of PyTorch's distances of a query
    dist = distances(expected, cfg)
    same = torch.equal(ranking(dist), ranking(distances(got, cfg)))
    margin = torch.sort(dist, dim=1).values.diff(dim=1).min().item() if dist.shape[1] > 1 else float("inf")
    return {"max_abs_diff": max(per_batch.values()), "per_batch": per_batch, "ranking_same": same,
            "ranking_margin": margin, "feature_dim": expected.shape[1]}


# ----------------------------------------------------------------------------- metadata
def provenance_record(cfg, argv) -> Dict[str, Any]:
    """Where the export came from: utils.provenance's record of this command, plus the checkpoint's path,
    SHA-256 and the provenance and epoch its training wrote into it (None when absent)."""
    from model.backbones.weights import read_weight_file
    from utils.protocol import sha256_file
    from utils.provenance import collect_provenance, command_line

    record = collect_provenance("cpu", "off", 1, command_line(argv, "tools/export.py"))
    weight = cfg.TEST.WEIGHT
    checkpoint = {"path": weight or None, "sha256": None, "epoch": None, "training": None}
    if weight:
        checkpoint["sha256"] = sha256_file(weight)
        stored = read_weight_file(weight, "TEST.WEIGHT")
        if isinstance(stored, dict):
            checkpoint["epoch"] = stored.get("epoch") if isinstance(stored.get("epoch"), int) else None
            checkpoint["training"] = stored.get("provenance") if isinstance(stored.get("provenance"), dict) else None
    record["checkpoint"] = checkpoint
    return record


def build_metadata(args: argparse.Namespace, cfg, module: ExportedReID, argv) -> Dict[str, Any]:
    """What a caller of the exported file needs (docs/EXPORT.md, "Metadata"); ``provenance.parity`` is
    added once the file is verified."""
    from model.retrieval import RetrievalPolicy

    h, w = (int(v) for v in cfg.INPUT.SIZE_TEST)
    baked = module.bake_colour is not None
    images = {"name": "images", "dtype": "uint8" if baked else "float32", "layout": "NHWC" if baked else "NCHW",
              "shape": ["batch", h, w, 3] if baked else ["batch", 3, h, w]}
    inputs = [images]
    if module.uses_cameras:
        inputs.append({"name": "camids", "dtype": "int64", "layout": "N", "shape": ["batch"]})
    return {
        "format_version": METADATA_VERSION,
        "producer": "FusionReID tools/export.py",
        "format": args.format,
        "inputs": inputs,
        "input_size": [h, w],
        "layout": images["layout"],
        "input_dtype": images["dtype"],
        "colour_order": module.bake_colour or "RGB",
        "resize": "bilinear, torchvision Resize of a PIL image (the test transform); outside the graph",
        "pixel_scale": 1 / 255,
        "pixel_mean": [float(v) for v in cfg.INPUT.PIXEL_MEAN],
        "pixel_std": [float(v) for v in cfg.INPUT.PIXEL_STD],
        "preprocessing_in_graph": baked,
        "output": "features",
        "output_dim": int(module.model.test_dim),
        "l2_normalised": bool(args.l2_normalize or cfg.TEST.FEAT_NORM),
        "l2_normalize_in_graph": bool(args.l2_normalize),
        "feature": {key: get_dotted(cfg, key) for key in RetrievalPolicy.config_keys().values()},
        "metric": cfg.TEST.METRIC,
        "num_cams": module.unknown_cam,
        "unknown_camera": -1 if module.uses_cameras else None,
        "recommended_threshold": args.threshold,
        "threshold_calibration": None,  # tools/calibrate.py --write-to: how the threshold was chosen
        "config": cfg.dump(),
        "provenance": provenance_record(cfg, argv),
    }


def parity_record(args: argparse.Namespace, report: Dict[str, object]) -> Dict[str, Any]:
    return {"max_abs_diff": report["max_abs_diff"],
            "per_batch": {str(b): d for b, d in report["per_batch"].items()},
            "ranking_same": report["ranking_same"], "ranking_margin": report["ranking_margin"], "atol": args.atol,
            "seed": args.seed, "opset": args.opset if args.format == "onnx" else None,
            "exporter": ("torch.onnx.export dynamo" if args.dynamo else "torch.onnx.export legacy")
            if args.format == "onnx" else "torch.jit.trace"}


def check_output_path(out: str, label: str, file_name: str) -> None:
    """The file to write must be creatable: ``out`` is not an existing folder, and no existing path above it
    is a regular file. Checked before exporting (``label``: how the user named it)."""
    path = os.path.abspath(out)
    if os.path.isdir(path):
        raise UsageError(f"{label} {out} is a folder: name the file to write, e.g. {os.path.join(out, file_name)}")
    parent = os.path.dirname(path)
    while not os.path.exists(parent) and os.path.dirname(parent) != parent:
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise UsageError(f"{label} {out}: {parent} is a file, not a folder, so nothing can be written below it")


# ----------------------------------------------------------------------------- command line
def parse_args(argv=None) -> argparse.Namespace:
    parser = ConfigArgumentParser(__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                  config_help="YAML config of the trained model",
                                  opts_help="KEY VALUE overrides, e.g. TEST.WEIGHT path TEST.FLIP True")
    parser.add_argument("--format", choices=FORMATS, default="onnx", help="onnx (default) or torchscript")
    parser.add_argument("--out", help="file to write, only once verified (default: OUTPUT_DIR/model.onnx or "
                                      "OUTPUT_DIR/model.pt)")
    parser.add_argument("--atol", type=float, default=DEFAULT_ATOL,
                        help=f"largest absolute feature difference accepted (default {DEFAULT_ATOL:g})")
    parser.add_argument("--opset", type=int,
                        help=f"ONNX opset (default {DEFAULT_OPSET}; {LEGACY_OPSETS.start}-{LEGACY_OPSETS.stop - 1}, "
                             f"with --dynamo {DYNAMO_MIN_OPSET} or later)")
    parser.add_argument("--dynamo", action="store_true",
                        help="ONNX: PyTorch's torch.export-based exporter (needs onnxscript)")
    parser.add_argument("--trace-batch", type=int, default=2, help="batch size of the example traced (default 2)")
    parser.add_argument("--check-batch", type=int, default=8,
                        help="a second batch size verified, not the trace batch (default 8)")
    parser.add_argument("--num-cams", type=int, default=1,
                        help="cameras of the untrained model exported without TEST.WEIGHT (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random verification images")
    parser.add_argument("--bake-preprocessing", action="store_true",
                        help="the graph takes uint8 images [B, H, W, 3] (--input-colour order) and converts and "
                             "normalises them itself (the resize to INPUT.SIZE_TEST stays outside)")
    parser.add_argument("--input-colour", choices=COLOUR_ORDERS,
                        help="with --bake-preprocessing: channel order of the uint8 input (default BGR, as OpenCV "
                             "and cameras give images)")
    parser.add_argument("--l2-normalize", action="store_true", help="L2-normalise the output in the graph")
    parser.add_argument("--threshold", type=float,
                        help="recommended similarity threshold, stored in the metadata as recommended_threshold "
                             "(e.g. from tools/calibrate.py)")
    args = parser.parse_args(argv)
    check_args(args)
    return args


def check_args(args: argparse.Namespace) -> None:
    """Argument values argparse cannot check, as UsageErrors naming the option."""
    if args.atol < 0:
        raise UsageError(f"--atol must be >= 0, got {args.atol}")
    if args.trace_batch < 1 or args.check_batch < 2 or args.check_batch == args.trace_batch:
        raise UsageError(f"--trace-batch ({args.trace_batch}) must be >= 1 and --check-batch ({args.check_batch}) "
                         f">= 2 and different from it (it proves the dynamic batch)")
    if args.num_cams < 1:
        raise UsageError(f"--num-cams must be >= 1, got {args.num_cams}")
    if args.input_colour is not None and not args.bake_preprocessing:
        raise UsageError(f"--input-colour {args.input_colour} applies with --bake-preprocessing only")
    if args.bake_preprocessing and args.input_colour is None:
        args.input_colour = "BGR"
    if args.threshold is not None and not math.isfinite(args.threshold):
        raise UsageError(f"--threshold must be a finite number, got {args.threshold}")
    if args.format != "onnx" and (args.opset is not None or args.dynamo):
        raise UsageError("--opset and --dynamo apply to --format onnx only")
    if args.opset is None:
        args.opset = DYNAMO_MIN_OPSET if args.dynamo else DEFAULT_OPSET
    if args.dynamo and args.opset < DYNAMO_MIN_OPSET:
        raise UsageError(f"--opset {args.opset}: the --dynamo exporter writes opset {DYNAMO_MIN_OPSET} or later")
    if not args.dynamo and args.opset not in LEGACY_OPSETS:
        raise UsageError(f"--opset {args.opset}: the default ONNX exporter writes opsets "
                         f"{LEGACY_OPSETS.start}-{LEGACY_OPSETS.stop - 1} (use --dynamo for newer ones)")


def require_onnxruntime() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as e:
        raise UsageError(f"--format onnx needs onnx and onnxruntime ({e}): pip install -r requirements.txt") from None


def write_verified(args: argparse.Namespace, module: ExportedReID, cfg, num_cams: Optional[int],
                   metadata: Dict[str, Any]) -> Dict[str, object]:
    """Export to a temporary file beside ``--out`` with ``metadata``, verify it as a caller loads it, add the
    parity figures to the metadata, then move it to ``--out`` (removed if anything fails)."""
    out = os.path.abspath(args.out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    partial = f"{out}.partial-{os.getpid()}"
    example = model_args(*sample_inputs(cfg, args.trace_batch, num_cams, args.seed, module.bake_colour))
    try:
        if args.format == "onnx":
            export_onnx(module, example, partial, args.opset, args.dynamo)
        else:
            export_torchscript(module, example, partial)
        write_metadata(partial, metadata)
        report = verify(module, load_runner(args.format, partial), cfg, [args.trace_batch, args.check_batch],
                        num_cams, args.seed)
        log_report(args, report)
        if report["max_abs_diff"] > args.atol or not report["ranking_same"]:
            problems = []
            if report["max_abs_diff"] > args.atol:
                problems.append(f"max abs feature difference {report['max_abs_diff']:.3g} > --atol {args.atol:g}")
            if not report["ranking_same"]:
                problems.append(f"the ranking of {args.check_batch // 2} queries differs from PyTorch's")
            raise ExportError(f"{args.format} export failed verification: {'; '.join(problems)} "
                              f"({args.out} not written)")
        metadata["provenance"]["parity"] = parity_record(args, report)
        write_metadata(partial, metadata)
        os.replace(partial, out)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return report


def variant_name(args: argparse.Namespace) -> str:
    """'plain', 'uint8 BGR input', 'L2-normalised output' or both."""
    parts = ([f"uint8 {args.input_colour} input"] if args.bake_preprocessing else []) + \
        (["L2-normalised output"] if args.l2_normalize else [])
    return ", ".join(parts) or "plain"


def log_report(args: argparse.Namespace, report: Dict[str, object]) -> None:
    per_batch = ", ".join(f"batch {b}: {d:.3g}" for b, d in report["per_batch"].items())
    q = args.check_batch // 2
    logger.info("parity %s (%s) vs PyTorch: max abs feature difference %.3g (%s; --atol %g), ranking of %d queries "
                "x %d gallery %s (closest distances of a query %.2g apart)", args.format, variant_name(args),
                report["max_abs_diff"],
                per_batch, args.atol, q, args.check_batch - q, "identical" if report["ranking_same"] else "DIFFERENT",
                report["ranking_margin"])


@cli_entry
def main(argv=None) -> Dict[str, object]:
    """Export, verify, write; returns the verification report (see :func:`verify`) plus ``out``."""
    from configs import load_cfg
    from utils.logger import setup_logger

    args = parse_args(argv)
    setup_logger()
    if args.format == "onnx":
        require_onnxruntime()
    cfg = load_cfg(args.config_file, args.opts)
    label = "--out" if args.out else "OUTPUT_DIR/" + DEFAULT_NAMES[args.format]
    args.out = args.out or os.path.join(cfg.OUTPUT_DIR, DEFAULT_NAMES[args.format])
    check_output_path(args.out, label, DEFAULT_NAMES[args.format])  # before the export, which can take minutes
    module = build_exported(cfg, args.num_cams, args.input_colour, args.l2_normalize)
    num_cams = module.unknown_cam  # the training cameras; the unknown one (-1) is their mean
    h, w = cfg.INPUT.SIZE_TEST
    images = f"uint8 [B, {h}, {w}, 3] {args.input_colour}" if args.bake_preprocessing else f"[B, 3, {h}, {w}]"
    logger.info("exporting %s: images %s%s -> features [B, %d]%s (TEST.FEAT %s, NECK_FEAT %s, FEAT_NORM %s, "
                "FLIP %s)", args.format, images,
                f", camids [B] in [0, {num_cams}) or -1" if module.uses_cameras else "", module.model.test_dim,
                ", L2-normalised" if args.l2_normalize else "", cfg.TEST.FEAT, cfg.TEST.NECK_FEAT,
                cfg.TEST.FEAT_NORM, cfg.TEST.FLIP)
    metadata = build_metadata(args, cfg, module, argv)
    report = write_verified(args, module, cfg, num_cams, metadata)
    logger.info("written %s (%.1f MB)", args.out, os.path.getsize(args.out) / 1e6)
    return dict(report, out=args.out, inputs=module.input_names, metadata=metadata)


if __name__ == "__main__":
    main()
