"""tracking/boxmot_encoder.py: FusionReID as a boxmot 25 appearance encoder. boxmot's own protocol check, the
features of FeatureExtractor on the same crops (from config + weights, and from ONNX / TorchScript exports
read back through their metadata), and StrongSORT (boxmot's TrackingPipeline) tracking synthetic persons
drawn by datasets/synthetic_generator.py with a tiny model trained here by train_net.py."""
import sys

import numpy as np
import pytest
import torch

import train_net
from configs import load_cfg
from datasets.synthetic_generator import camera_style, identity_appearance, render_image
from processor.feature_extractor import FeatureExtractor
from tests.helpers import TINY_CONFIG
from tools import export
from tracking.boxmot_encoder import FusionReIDEncoder, import_boxmot

boxmot = import_boxmot()
from boxmot import StrongSort  # noqa: E402
from boxmot.pipelines.tracking import TrackingPipeline  # noqa: E402
from boxmot.reid.protocols import AppearanceEncoder, EncoderRequirements  # noqa: E402
from boxmot.structures import Boxes, Detections, Frame, OrientedBoxes  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.[a-z_]*` is deprecated:FutureWarning")

W, H = 320, 200           # frame size
BOX_H, BOX_W = 96, 40     # person box
SEED = 3


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(config, checkpoint) of configs/Synthetic/tiny.yml trained by train_net.py (8 epochs, ~30 s on a CPU)."""
    root = tmp_path_factory.mktemp("tiny")
    opts = ["DATASETS.ROOT_DIR", str(root / "data"), "OUTPUT_DIR", str(root / "out"), "SOLVER.EVAL_PERIOD", "8"]
    train_net.main(["--config_file", TINY_CONFIG, *opts])
    return load_cfg(TINY_CONFIG, opts + ["MODEL.DEVICE", "cpu"]), str(root / "out" / "model_best.pth")


@pytest.fixture(scope="module")
def encoder(trained):
    cfg, weight = trained
    return FusionReIDEncoder.from_config(cfg, weight, device="cpu")


def scene(people, positions, frames, hidden=(), wall=None):
    """BGR uint8 frames of ``people`` (synthetic persons of seed SEED) at ``positions(person, frame)`` (top-left
    corners) over one camera's background, drawn in list order, and the ground-truth boxes [(person, xyxy)]
    per frame (none for a person in ``hidden`` frames, behind the ``wall`` (x1, x2), drawn in front)."""
    cam = camera_style(np.random.default_rng([SEED, 2, 0]))
    looks = {p: identity_appearance(np.random.default_rng([SEED, 1, p])) for p in people}
    video, truth = [], []
    for f in range(frames):
        image = np.empty((H, W, 3), np.float64)
        image[:] = cam["background"]
        image[int(cam["horizon"] * H):] = cam["ground"]
        boxes = []
        for p in people:
            x, y = positions(p, f)
            image[y:y + BOX_H, x:x + BOX_W] = render_image(looks[p], cam, np.random.default_rng([SEED, 3, p, f]),
                                                           (BOX_H, BOX_W))
            if (p, f) not in hidden:
                boxes.append((p, [x, y, x + BOX_W, y + BOX_H]))
        if wall is not None and any(q == f for _, q in hidden):
            image[:, wall[0]:wall[1]] = (90, 90, 90)
        video.append(np.clip(np.round(image), 0, 255).astype(np.uint8)[..., ::-1].copy())  # RGB -> BGR
        truth.append(boxes)
    return video, truth


def boxmot_frame(bgr, index):
    """A boxmot Frame (RGB [3, H, W]) of an OpenCV-style BGR frame."""
    rgb = np.ascontiguousarray(bgr[..., ::-1].transpose(2, 0, 1))
    return Frame(image=torch.from_numpy(rgb), sample_id=f"frame{index}", sequence_id="synthetic", frame_index=index)


def detections(boxes, index):
    values = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    return Detections(geometry=Boxes(values), scores=torch.full((len(values),), 0.9),
                      class_ids=torch.zeros(len(values), dtype=torch.int64), sample_id=f"frame{index}")


def track(encoder, video, truth, **tracker_options):
    """Ground-truth boxes as detections through boxmot's TrackingPipeline with StrongSORT and ``encoder``:
    {person: [track id per frame in which the tracker reported the person's detection]}."""
    pipeline = TrackingPipeline(detector=None, tracker=StrongSort(**tracker_options), reid=encoder)
    ids = {}
    for f, (bgr, gt) in enumerate(zip(video, truth)):
        result = pipeline.step_detections(boxmot_frame(bgr, f), detections([b for _, b in gt], f))
        for track_id, det in zip(result.tracks.track_ids.tolist(), result.tracks.detection_indices.tolist()):
            if det >= 0:
                ids.setdefault(gt[det][0], []).append(track_id)
    return ids


# ----------------------------------------------------------------------------- the protocol
def test_boxmot_protocol(encoder, trained):
    assert isinstance(encoder, AppearanceEncoder)  # boxmot's runtime_checkable protocol
    assert not isinstance(object(), AppearanceEncoder)
    assert encoder.requirements == EncoderRequirements(masks=False)
    assert encoder.embedding_dim == FeatureExtractor(trained[0], trained[1], device="cpu").model.test_dim == 896
    TrackingPipeline(detector=None, tracker=StrongSort(), reid=encoder)  # boxmot's own checks of an encoder
    video, truth = scene([0], lambda p, f: (100, 50), 1)
    out = encoder.encode([boxmot_frame(video[0], 0), boxmot_frame(video[0], 1)],
                         [detections([b for _, b in truth[0]], 0), detections([], 1)])
    assert [tuple(t.shape) for t in out] == [(1, 896), (0, 896)]
    assert all(t.dtype == torch.float32 and t.device.type == "cpu" and t.is_contiguous() for t in out)


def test_missing_boxmot_is_a_clear_error(monkeypatch, encoder):
    monkeypatch.setitem(sys.modules, "boxmot", None)
    with pytest.raises(ValueError, match=r"boxmot is not installed .*pip install --no-deps -r requirements-tracking"):
        encoder.requirements


def test_bad_inputs_are_clear_errors(encoder):
    frame = np.zeros((H, W, 3), np.uint8)
    with pytest.raises(ValueError, match=r"oriented boxes \(OBB\) are not supported"):
        encoder.encode([boxmot_frame(frame, 0)], [Detections(
            geometry=OrientedBoxes(torch.tensor([[50.0, 50.0, 20.0, 40.0, 0.1]])), scores=torch.ones(1),
            class_ids=torch.zeros(1, dtype=torch.int64), sample_id="frame0")])
    with pytest.raises(ValueError, match=r"frame 0: expected a uint8 image \[H, W, 3\], got ndarray float32"):
        encoder.embed(frame.astype(np.float32), np.array([[0, 0, 10, 10]]))
    with pytest.raises(ValueError, match="2 frames but 1 detection batches"):
        encoder.encode([frame, frame], [np.zeros((0, 4))])


# ----------------------------------------------------------------------------- the features
# Boxes in a 200 x 320 frame and the pixels they crop: rounded outwards, clipped to the frame.
BOXES = np.array([[100.4, 40.6, 140.2, 136.0],     # inside: x 100..141, y 40..136
                  [-12.0, 150.0, 30.0, 230.0],     # beyond the left and bottom edges: x 0..30, y 150..200
                  [300.5, -8.0, 341.0, 60.0]])     # beyond the right and top edges: x 300..320, y 0..60
PIXELS = [(slice(40, 136), slice(100, 141)), (slice(150, 200), slice(0, 30)), (slice(0, 60), slice(300, 320))]


def frame_and_crops():
    video, _ = scene([0, 1, 2], lambda p, f: (100 + 100 * (p - 1), 40 + 30 * p), 1)
    bgr = video[0]
    rgb = bgr[..., ::-1]
    return bgr, [np.ascontiguousarray(rgb[rows, cols]) for rows, cols in PIXELS]


def test_features_equal_the_extractor_on_the_same_crops(encoder, trained):
    bgr, crops = frame_and_crops()
    expected = FeatureExtractor(trained[0], trained[1], device="cpu")(crops)
    from_boxmot = encoder.encode([boxmot_frame(bgr, 0)], [detections(BOXES.tolist(), 0)])[0]
    from_array = encoder.embed(bgr, BOXES)  # an OpenCV frame: BGR
    assert (from_boxmot - expected).abs().max().item() <= 1e-5
    assert (from_array - expected).abs().max().item() <= 1e-5
    # the colour order is honoured: the same array read as RGB gives other features
    as_rgb = FusionReIDEncoder(encoder.embedder, encoder.embedding_dim, array_colour="RGB").embed(bgr, BOXES)
    assert (as_rgb - expected).abs().max().item() > 1e-3


@pytest.mark.parametrize("fmt, options", [("onnx", []), ("onnx", ["--bake-preprocessing"]),
                                          ("torchscript", []), ("torchscript", ["--bake-preprocessing"])])
def test_exported_file_as_encoder_equals_the_extractor(trained, tmp_path, fmt, options):
    """export -> FusionReIDEncoder.from_export (no config: the file's metadata) -> the extractor's features."""
    cfg, weight = trained
    out = tmp_path / ("model.onnx" if fmt == "onnx" else "model.pt")
    export.main(["--config_file", TINY_CONFIG, "--format", fmt, "--out", str(out), *options, "MODEL.DEVICE", "cpu",
                 "TEST.WEIGHT", weight])
    loaded = FusionReIDEncoder.from_export(str(out))
    assert isinstance(loaded, AppearanceEncoder) and loaded.embedding_dim == 896
    bgr, crops = frame_and_crops()
    expected = FeatureExtractor(cfg, weight, device="cpu")(crops)
    got = loaded.encode([boxmot_frame(bgr, 0)], [detections(BOXES.tolist(), 0)])[0]
    assert (got - expected).abs().max().item() <= 1e-5


# ----------------------------------------------------------------------------- tracking
def test_strongsort_keeps_crossing_persons_apart(encoder):
    """Three persons over 24 frames: 0 and 1 walk towards each other and cross (0 behind 1, undetected while
    covered), 2 walks down on its own. Each person keeps one track id, and the ids differ."""
    def positions(p, f):
        return [(10 + 11 * f, 40), (270 - 11 * f, 44), (140, 60 + f)][p]

    video, truth = scene([0, 2, 1], positions, 24,
                         hidden={(0, f) for f in range(24) if abs(positions(0, f)[0] - positions(1, f)[0]) < 20})
    ids = track(encoder, video, truth)
    assert {p: sorted(set(v)) for p, v in ids.items()} == {0: [ids[0][0]], 1: [ids[1][0]], 2: [ids[2][0]]}, ids
    assert len({ids[0][0], ids[1][0], ids[2][0]}) == 3
    assert min(len(v) for v in ids.values()) >= 18  # tracked in most frames, not only confirmed at the end


class AppearanceBlind(FusionReIDEncoder):
    """The same encoder with one feature for every crop: motion alone."""

    def embed_rgb(self, image_rgb, boxes):
        feats = torch.zeros(len(boxes), self.embedding_dim)
        feats[:, 0] = 1
        return feats


def test_appearance_decides_when_persons_swap_places_behind_a_wall(encoder):
    """Persons 0 and 1 walk down side by side; a wall hides both for 6 frames, after which they walk on in
    each other's place. The motion model expects each where it was: only appearance can tell who is who.
    With FusionReID each keeps its track; with an appearance-blind encoder StrongSORT swaps them."""
    swap = range(8, 14)

    def positions(p, f):
        side = p if f < swap.start else 1 - p
        return 110 + 44 * side, 20 + 3 * f

    video, truth = scene([0, 1], positions, 24, hidden={(p, f) for p in (0, 1) for f in swap}, wall=(90, 250))
    # the premise: this model tells the two apart (the nearest other crop of each crop shows the same person)
    frames = (0, 7, 14, 23)
    feats = torch.cat([encoder.embed(video[f], np.array([b for _, b in truth[f]])) for f in frames])
    person = torch.tensor([p for f in frames for p, _ in truth[f]])
    dist = 1 - feats @ feats.T
    dist.fill_diagonal_(float("inf"))
    assert torch.equal(person[dist.argmin(dim=1)], person), dist

    ids = track(encoder, video, truth)
    assert set(ids[0]) == {ids[0][0]} and set(ids[1]) == {ids[1][0]} and ids[0][0] != ids[1][0], ids
    blind = track(AppearanceBlind(encoder.embedder, encoder.embedding_dim), video, truth)
    assert len(set(blind[0])) > 1 and len(set(blind[1])) > 1, blind  # the motion model swapped them
