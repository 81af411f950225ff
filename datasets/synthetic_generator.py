"""A person re-identification dataset drawn from scratch (numpy + OpenCV), written in Market-1501 format.

Every identity has its own appearance: upper/lower clothing colours, a pattern on the upper body
(solid, horizontal or vertical stripes, checks), sleeve and leg-wear types, body height and width,
skin and hair colour, hair style or cap, shoes, and a bag. Every camera has its own photometry
(brightness, contrast, colour cast, blur, noise), background and viewpoint-like geometry (scale,
shift, shear, perspective). Every image varies the pose (leg spread, arm swing, mirrored view), the
crop and the noise, and may be partly hidden by an occluder. Identity cues are strong enough for a
small model trained from scratch for minutes, but cameras change them enough that retrieval is not
trivial.

Everything is drawn from random generators keyed by (seed, role, numbers), so the same parameters give
byte-identical JPEG files, and an identity looks the same whatever the dataset size.
"""
import dataclasses
import json
import logging
import os
import shutil
import tempfile
from typing import Any, Dict, List, Optional, Tuple

import cv2
import numpy as np

from .errors import DatasetError

logger = logging.getLogger(__name__)

GENERATOR_VERSION = 1
MANIFEST_NAME = "manifest.json"
SPLIT_FOLDERS = ("bounding_box_train", "query", "bounding_box_test")
JPEG_QUALITY = 90
# Keys of the random generators: np.random.default_rng([seed, ROLE, ...]).
_ROLE_IDENTITY, _ROLE_CAMERA, _ROLE_IMAGE = 1, 2, 3


@dataclasses.dataclass(frozen=True)
class SyntheticParams:
    """Everything the generated files depend on (the ``DATASETS.SYNTHETIC.*`` keys)."""

    num_train_ids: int = 64
    num_test_ids: int = 64
    num_cams: int = 4
    images_per_cam: int = 3
    image_size: tuple = (128, 64)  # height, width
    seed: int = 0

    @classmethod
    def from_cfg(cls, cfg) -> "SyntheticParams":
        s = cfg.DATASETS.SYNTHETIC
        return cls(int(s.NUM_TRAIN_IDS), int(s.NUM_TEST_IDS), int(s.NUM_CAMS), int(s.IMAGES_PER_CAM),
                   tuple(int(v) for v in s.IMAGE_SIZE), int(s.SEED))

    @property
    def num_distractors(self) -> int:
        """Gallery images of people that are in no query (pid 0, Market-style)."""
        return max(1, self.num_test_ids // 8)

    def check(self) -> None:
        """Raise ``DatasetError`` for sizes that cannot give a usable dataset."""
        problems = []
        for key, value, low in (("NUM_TRAIN_IDS", self.num_train_ids, 1), ("NUM_TEST_IDS", self.num_test_ids, 1),
                                ("NUM_CAMS", self.num_cams, 2), ("IMAGES_PER_CAM", self.images_per_cam, 2)):
            if value < low:
                problems.append(f"DATASETS.SYNTHETIC.{key} = {value} must be >= {low}")
        if self.seed < 0:
            problems.append(f"DATASETS.SYNTHETIC.SEED = {self.seed} must be >= 0")
        if min(self.image_size) < 16:
            problems.append(f"DATASETS.SYNTHETIC.IMAGE_SIZE = {list(self.image_size)} must be at least 16 x 16")
        if problems:
            raise DatasetError("synthetic dataset: " + "; ".join(problems)
                               + " (NUM_CAMS and IMAGES_PER_CAM >= 2 give every query a cross-camera match)")

    def to_json(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d["image_size"] = list(self.image_size)
        return d

    def expected_statistics(self) -> Dict[str, Dict[str, int]]:
        """``{split: {'ids', 'images', 'cameras'}}`` of the generated dataset."""
        c, k = self.num_cams, self.images_per_cam
        return {
            "train": {"ids": self.num_train_ids, "images": self.num_train_ids * c * k, "cameras": c},
            "query": {"ids": self.num_test_ids, "images": self.num_test_ids * c, "cameras": c},
            "gallery": {"ids": self.num_test_ids + 1,
                        "images": self.num_test_ids * c * (k - 1) + self.num_distractors, "cameras": c},
        }


# ---------------------------------------------------------------------------------------------- appearance
SKIN_TONES = np.array([[255, 224, 196], [241, 194, 160], [224, 172, 128], [198, 134, 90],
                       [141, 85, 54], [95, 60, 40]], dtype=np.float64)
HAIR_COLOURS = np.array([[20, 15, 10], [60, 40, 25], [110, 75, 40], [200, 170, 110], [150, 150, 150],
                         [130, 50, 25]], dtype=np.float64)
UPPER_PATTERNS = ("solid", "hstripes", "vstripes", "checks")


def _hsv_colour(rng, sat=(130, 255), val=(80, 255)):
    """A saturated RGB colour (float triple), or with probability 0.2 an achromatic one."""
    if rng.random() < 0.2:
        grey = rng.choice([25.0, 70.0, 125.0, 185.0, 235.0]) + rng.uniform(-10, 10)
        return np.full(3, grey)
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(*sat), rng.uniform(*val)]]], dtype=np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float64)


def _contrasting(rng, colour):
    """A second colour clearly different from ``colour`` (for patterns)."""
    for _ in range(10):
        other = _hsv_colour(rng)
        if np.abs(other - colour).sum() > 180:
            return other
    return 255.0 - colour


def identity_appearance(rng: np.random.Generator) -> Dict[str, Any]:
    """The clothing, body and accessories of one person."""
    upper = _hsv_colour(rng)
    return {
        "height": rng.uniform(0.78, 0.92),          # fraction of the image height
        "width": rng.uniform(0.85, 1.2),            # body width factor
        "torso": rng.uniform(0.30, 0.36),           # torso length, fraction of the body height
        "skin": SKIN_TONES[rng.integers(len(SKIN_TONES))] + rng.uniform(-8, 8, 3),
        "hair": HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))],
        "hair_style": rng.choice(["short", "long", "cap"], p=[0.5, 0.3, 0.2]),
        "cap": _hsv_colour(rng),
        "upper": upper,
        "upper_pattern": UPPER_PATTERNS[rng.integers(len(UPPER_PATTERNS))],
        "upper_second": _contrasting(rng, upper),
        "pattern_period": rng.uniform(0.06, 0.12),  # fraction of the body height
        "long_sleeves": bool(rng.random() < 0.6),
        "lower": _hsv_colour(rng, sat=(90, 230), val=(50, 220)),
        "lower_type": rng.choice(["trousers", "shorts", "skirt"], p=[0.6, 0.25, 0.15]),
        "shoes": _hsv_colour(rng, val=(20, 160)),
        "bag": rng.choice(["none", "backpack", "handbag"], p=[0.45, 0.35, 0.2]),
        "bag_colour": _hsv_colour(rng),
    }


def camera_style(rng: np.random.Generator) -> Dict[str, Any]:
    """The photometry, background and geometry one camera applies to every image it takes."""
    return {
        "brightness": rng.uniform(-35, 30),
        "contrast": rng.uniform(0.7, 1.15),
        "cast": rng.uniform(0.82, 1.18, 3),
        "blur": rng.uniform(0.0, 1.1),
        "noise": rng.uniform(2.0, 7.0),
        "background": rng.uniform(60, 190, 3) * 0.5 + rng.uniform(60, 190) * 0.5,
        "ground": rng.uniform(50, 170, 3) * 0.4 + rng.uniform(50, 170) * 0.6,
        "horizon": rng.uniform(0.6, 0.85),
        "scale": rng.uniform(0.85, 1.08),
        "shift": rng.uniform(-0.06, 0.06, 2),
        "shear": rng.uniform(-0.12, 0.12),
        "tilt": rng.uniform(-0.08, 0.08),           # perspective: top edge narrower / wider
    }


# ---------------------------------------------------------------------------------------------- drawing
_SHIFT = 4  # sub-pixel bits of the OpenCV drawing calls


def _pts(points):
    return [np.round(np.asarray(points, dtype=np.float64) * (1 << _SHIFT)).astype(np.int32)]


def _poly(img, points, colour):
    cv2.fillPoly(img, _pts(points), tuple(float(c) for c in colour), cv2.LINE_AA, _SHIFT)


def _ellipse(img, centre, axes, colour, start=0, end=360):
    c = tuple(int(round(v * (1 << _SHIFT))) for v in centre)
    a = tuple(max(1, int(round(v * (1 << _SHIFT)))) for v in axes)
    cv2.ellipse(img, c, a, 0, start, end, tuple(float(v) for v in colour), -1, cv2.LINE_AA, _SHIFT)


def _pattern_layer(shape, app, origin, body_h):
    """Full-canvas image of the upper-body pattern, phase-locked to the torso's top-left ``origin``."""
    h, w = shape
    period = max(2.0, app["pattern_period"] * body_h)
    yy, xx = np.mgrid[0:h, 0:w]
    ry = ((yy - origin[1]) // (period / 2)).astype(int)
    rx = ((xx - origin[0]) // (period / 2)).astype(int)
    kind = app["upper_pattern"]
    if kind == "hstripes":
        second = ry % 2 == 1
    elif kind == "vstripes":
        second = rx % 2 == 1
    elif kind == "checks":
        second = (rx + ry) % 2 == 1
    else:
        second = np.zeros((h, w), bool)
    layer = np.empty((h, w, 3), np.float64)
    layer[:] = app["upper"]
    layer[second] = app["upper_second"]
    return layer


def draw_person(canvas: np.ndarray, app: Dict[str, Any], pose: Dict[str, Any]) -> None:
    """Draw one person in place on a float RGB canvas; ``pose`` = leg spread, arm swing, mirrored."""
    H, W = canvas.shape[:2]
    body_h = app["height"] * H
    cx = W / 2.0
    top = (H - body_h) / 2.0
    head_r = 0.062 * body_h
    neck_y = top + 2 * head_r
    shoulder_y = neck_y + 0.015 * body_h
    hip_y = shoulder_y + app["torso"] * body_h
    feet_y = top + body_h
    half_shoulder = 0.19 * W * app["width"]
    half_hip = 0.84 * half_shoulder
    arm_w = 0.085 * W * app["width"]
    leg_w = 0.92 * half_hip
    spread, swing = pose["spread"] * W, pose["swing"] * body_h
    side = -1 if pose["mirrored"] else 1      # which side the bag is on
    skin, upper, lower = app["skin"], app["upper"], app["lower"]

    # long hair falls behind the shoulders
    if app["hair_style"] == "long":
        hair_end = shoulder_y + 0.06 * body_h
        _poly(canvas, [(cx - 1.15 * head_r, top + head_r), (cx + 1.15 * head_r, top + head_r),
                       (cx + 1.25 * head_r, hair_end), (cx - 1.25 * head_r, hair_end)], app["hair"])
    # legs: hip -> ankle, feet apart by `spread`
    knee_y = hip_y + 0.5 * (feet_y - hip_y)
    ankle_y = feet_y - 0.03 * body_h
    for s in (-1, 1):
        hip_x = cx + s * half_hip * 0.5
        foot_x = cx + s * (half_hip * 0.5 + spread / 2)
        leg = [(hip_x - leg_w / 2, hip_y), (hip_x + leg_w / 2, hip_y),
               (foot_x + leg_w * 0.38, ankle_y), (foot_x - leg_w * 0.38, ankle_y)]
        _poly(canvas, leg, lower if app["lower_type"] == "trousers" else skin)
        if app["lower_type"] == "shorts":
            t = 0.45
            mid = [(x0 + t * (x1 - x0), hip_y + t * (ankle_y - hip_y)) for x0, x1 in
                   ((leg[0][0], leg[3][0]), (leg[1][0], leg[2][0]))]
            _poly(canvas, [leg[0], leg[1], mid[1], mid[0]], lower)
        _ellipse(canvas, (foot_x + s * 0.1 * leg_w, feet_y - 0.02 * body_h), (0.55 * leg_w, 0.03 * body_h),
                 app["shoes"])
    if app["lower_type"] == "skirt":
        _poly(canvas, [(cx - half_hip, hip_y - 0.02 * body_h), (cx + half_hip, hip_y - 0.02 * body_h),
                       (cx + 1.35 * half_hip, knee_y), (cx - 1.35 * half_hip, knee_y)], lower)
    # backpack peeks out beside the torso, under the arm
    if app["bag"] == "backpack":
        _poly(canvas, [(cx + side * 0.6 * half_shoulder, shoulder_y + 0.02 * body_h),
                       (cx + side * 1.3 * half_shoulder, shoulder_y + 0.04 * body_h),
                       (cx + side * 1.3 * half_shoulder, hip_y - 0.02 * body_h),
                       (cx + side * 0.6 * half_shoulder, hip_y)], app["bag_colour"])
    # torso with its pattern
    torso = [(cx - half_shoulder, shoulder_y), (cx + half_shoulder, shoulder_y),
             (cx + half_hip, hip_y + 0.02 * body_h), (cx - half_hip, hip_y + 0.02 * body_h)]
    mask = np.zeros(canvas.shape[:2], np.float64)
    cv2.fillPoly(mask, _pts(torso), 1.0, cv2.LINE_AA, _SHIFT)
    layer = _pattern_layer(canvas.shape[:2], app, (cx - half_shoulder, shoulder_y), body_h)
    canvas[:] = canvas * (1 - mask[..., None]) + layer * mask[..., None]
    # arms: shoulder -> wrist, swinging in opposite directions
    elbow_t = 1.0 if app["long_sleeves"] else 0.45
    for s in (-1, 1):
        x0 = cx + s * (half_shoulder - arm_w * 0.3)
        wrist = (cx + s * (half_shoulder + arm_w * 0.35) + s * swing * 0.15, hip_y + 0.04 * body_h + s * swing)
        arm = lambda t: (x0 + t * (wrist[0] - x0), shoulder_y + t * (wrist[1] - shoulder_y))
        a0, a1, a2 = arm(0.0), arm(elbow_t), arm(1.0)
        _poly(canvas, [(a0[0] - arm_w / 2, a0[1]), (a0[0] + arm_w / 2, a0[1]),
                       (a1[0] + arm_w * 0.45, a1[1]), (a1[0] - arm_w * 0.45, a1[1])], upper)
        if elbow_t < 1.0:
            _poly(canvas, [(a1[0] - arm_w * 0.42, a1[1]), (a1[0] + arm_w * 0.42, a1[1]),
                           (a2[0] + arm_w * 0.38, a2[1]), (a2[0] - arm_w * 0.38, a2[1])], skin)
        _ellipse(canvas, (a2[0], a2[1] + 0.015 * body_h), (0.45 * arm_w, 0.45 * arm_w), skin)
    # handbag hanging by the hand on the bag side, strap from the opposite shoulder
    if app["bag"] == "handbag":
        bx = cx + side * (half_shoulder + arm_w * 0.6)
        cv2.line(canvas, tuple(int(v) for v in (cx - side * half_shoulder * 0.6, shoulder_y)),
                 tuple(int(v) for v in (bx, hip_y)), tuple(float(v) for v in app["bag_colour"] * 0.7), 1, cv2.LINE_AA)
        _poly(canvas, [(bx - 0.09 * W, hip_y - 0.01 * body_h), (bx + 0.09 * W, hip_y - 0.01 * body_h),
                       (bx + 0.1 * W, hip_y + 0.1 * body_h), (bx - 0.1 * W, hip_y + 0.1 * body_h)], app["bag_colour"])
    # neck, head, hair / cap
    _poly(canvas, [(cx - 0.4 * head_r, neck_y - 0.3 * head_r), (cx + 0.4 * head_r, neck_y - 0.3 * head_r),
                   (cx + 0.45 * head_r, shoulder_y + 1), (cx - 0.45 * head_r, shoulder_y + 1)], skin)
    head = (cx, top + head_r)
    _ellipse(canvas, head, (0.85 * head_r, head_r), skin)
    if app["hair_style"] == "cap":
        _ellipse(canvas, (head[0], head[1] - 0.15 * head_r), (0.95 * head_r, 0.8 * head_r), app["cap"], 180, 360)
        back, front = head[0] - side * 0.2 * head_r, head[0] + side * 1.5 * head_r     # the brim
        upper_y, lower_y = head[1] - 0.2 * head_r, head[1] - 0.05 * head_r
        _poly(canvas, [(back, upper_y), (front, upper_y), (front, lower_y), (back, lower_y)], app["cap"])
    else:
        _ellipse(canvas, (head[0], head[1] - 0.1 * head_r), (0.92 * head_r, 0.95 * head_r), app["hair"], 180, 360)


def _background(rng, cam, H, W):
    """A camera's scene: wall colour with a gradient, ground below the horizon and random clutter."""
    img = np.empty((H, W, 3), np.float64)
    horizon = int(cam["horizon"] * H)
    ramp = np.linspace(-15, 15, H)[:, None, None]
    img[:] = cam["background"]
    img[horizon:] = cam["ground"]
    img += ramp
    for _ in range(rng.integers(2, 6)):
        x0, y0 = rng.uniform(-0.2, 1.0) * W, rng.uniform(-0.1, 0.8) * H
        w, h = rng.uniform(0.1, 0.5) * W, rng.uniform(0.05, 0.4) * H
        colour = cam["background"] * rng.uniform(0.6, 1.3) + rng.uniform(-20, 20, 3)
        _poly(img, [(x0, y0), (x0 + w, y0), (x0 + w, y0 + h), (x0, y0 + h)], colour)
    return img


def _occlude(img, rng):
    """Hide part of the person behind a pole, a side object or something in the foreground."""
    H, W = img.shape[:2]
    colour = rng.uniform(30, 220, 3)
    kind = rng.integers(3)
    if kind == 0:    # vertical pole
        x, w = rng.uniform(0.1, 0.8) * W, rng.uniform(0.06, 0.15) * W
        _poly(img, [(x, 0), (x + w, 0), (x + w, H), (x, H)], colour)
    elif kind == 1:  # object at the bottom (bench, car, bike)
        y = rng.uniform(0.65, 0.85) * H
        _poly(img, [(0, y), (W, y + rng.uniform(-3, 3)), (W, H), (0, H)], colour)
    else:            # object at one side
        w = rng.uniform(0.2, 0.35) * W
        x0 = 0 if rng.random() < 0.5 else W - w
        _poly(img, [(x0, rng.uniform(0.2, 0.6) * H), (x0 + w, rng.uniform(0.2, 0.6) * H), (x0 + w, H), (x0, H)], colour)


def _view_transform(rng, cam, H, W):
    """3x3 perspective matrix: the camera's scale/shift/shear/tilt plus a small per-image jitter."""
    scale = cam["scale"] * rng.uniform(0.94, 1.06)
    shear = cam["shear"] + rng.uniform(-0.03, 0.03)
    shift = (cam["shift"] + rng.uniform(-0.04, 0.04, 2)) * (W, H)
    tilt = cam["tilt"] + rng.uniform(-0.02, 0.02)
    src = np.float32([[0, 0], [W, 0], [W, H], [0, H]])
    centre = np.array([W / 2, H / 2])
    dst = []
    for x, y in src:
        dx, dy = (x - centre[0]) * scale, (y - centre[1]) * scale
        dx += shear * dy                                # lean
        dx *= 1 + tilt * (dy / (H / 2))                 # top/bottom narrower: looking down/up
        dst.append(centre + (dx, dy) + shift)
    return cv2.getPerspectiveTransform(src, np.float32(dst))


def render_image(app: Dict[str, Any], cam: Dict[str, Any], rng: np.random.Generator,
                 size: Tuple[int, int]) -> np.ndarray:
    """One uint8 RGB image of the person ``app`` seen by camera ``cam``."""
    H, W = size
    img = _background(rng, cam, H, W)
    pose = {"spread": rng.uniform(-0.05, 0.2), "swing": rng.uniform(-0.06, 0.06), "mirrored": bool(rng.random() < 0.5)}
    draw_person(img, app, pose)
    if pose["mirrored"]:   # seen from the other side: bag and cap switch sides (the scene is random anyway)
        img = np.ascontiguousarray(img[:, ::-1])
    img = cv2.warpPerspective(img, _view_transform(rng, cam, H, W), (W, H), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REFLECT_101)
    if rng.random() < 0.3:
        _occlude(img, rng)
    img = (img - 128.0) * cam["contrast"] + 128.0 + cam["brightness"]
    img = img * cam["cast"] * rng.uniform(0.93, 1.07)
    sigma = cam["blur"] + rng.uniform(0, 0.4)
    if sigma > 0.3:
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    img = img + rng.normal(0, cam["noise"] + rng.uniform(0, 3), img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------- files
def _rng(seed, *keys):
    return np.random.default_rng([seed, *keys])


def _write_jpeg(path, rgb):
    ok, buffer = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise DatasetError(f"could not encode {path}")
    buffer.tofile(path)


def image_plan(params: SyntheticParams) -> List[Tuple[str, int, int, int]]:
    """``[(split folder, pid, camera (0-based), shot)]`` of every file, in writing order.

    Train pids are 1..NUM_TRAIN_IDS, test pids follow; for each test person and camera the first shot
    is a query and the others go to the gallery; distractors (pid 0) are gallery-only.
    """
    plan = []
    c, k = params.num_cams, params.images_per_cam
    for pid in range(1, params.num_train_ids + 1):
        plan += [(SPLIT_FOLDERS[0], pid, cam, shot) for cam in range(c) for shot in range(k)]
    for pid in range(params.num_train_ids + 1, params.num_train_ids + params.num_test_ids + 1):
        plan += [(SPLIT_FOLDERS[1] if shot == 0 else SPLIT_FOLDERS[2], pid, cam, shot)
                 for cam in range(c) for shot in range(k)]
    plan += [(SPLIT_FOLDERS[2], 0, j % c, j) for j in range(params.num_distractors)]
    return plan


def file_name(pid: int, cam: int, shot: int) -> str:
    """Market-1501 style name: ``0002_c1s1_000204_01.jpg``."""
    return f"{pid:04d}_c{cam + 1}s1_{pid * 100 + shot:06d}_{shot:02d}.jpg"


def generate(params: SyntheticParams, out_dir: str) -> None:
    """Write the dataset described by ``params`` into ``out_dir`` (Market-1501 layout + manifest)."""
    params.check()
    for folder in SPLIT_FOLDERS:
        os.makedirs(os.path.join(out_dir, folder), exist_ok=True)
    cameras = [camera_style(_rng(params.seed, _ROLE_CAMERA, cam)) for cam in range(params.num_cams)]
    appearances = {}
    for folder, pid, cam, shot in image_plan(params):
        if pid == 0:   # every distractor is a different person
            app = identity_appearance(_rng(params.seed, _ROLE_IDENTITY, 0, shot))
        else:
            if pid not in appearances:  # keep only the current person
                appearances = {pid: identity_appearance(_rng(params.seed, _ROLE_IDENTITY, pid))}
            app = appearances[pid]
        image = render_image(app, cameras[cam], _rng(params.seed, _ROLE_IMAGE, pid, cam, shot), params.image_size)
        _write_jpeg(os.path.join(out_dir, folder, file_name(pid, cam, shot)), image)
    manifest = {"generator": "fusionreid-synthetic", "version": GENERATOR_VERSION, "params": params.to_json(),
                "statistics": params.expected_statistics()}
    with open(os.path.join(out_dir, MANIFEST_NAME), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
        f.write("\n")


def read_manifest(path: str) -> Optional[Dict[str, Any]]:
    """The manifest of a generated dataset folder, or None if there is none (or it is unreadable)."""
    try:
        with open(os.path.join(path, MANIFEST_NAME), "r", encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def is_up_to_date(path: str, params: SyntheticParams) -> bool:
    """Whether ``path`` holds the dataset generated by this generator version from ``params``."""
    manifest = read_manifest(path)
    return (manifest is not None and manifest.get("version") == GENERATOR_VERSION
            and manifest.get("params") == params.to_json()
            and all(os.path.isdir(os.path.join(path, f)) for f in SPLIT_FOLDERS))


def ensure_generated(target: str, params: SyntheticParams, force: bool = False) -> bool:
    """Generate the dataset into ``target`` unless it is already there with the same parameters.

    Returns True if files were written. Generation goes to a temporary sibling folder that is renamed
    into place, so concurrent processes (DDP ranks) never read a half-written dataset.
    """
    params.check()
    if not force and is_up_to_date(target, params):
        return False
    if os.path.exists(target) and read_manifest(target) is None and os.listdir(target):
        raise DatasetError(f"{target} exists and is not a generated synthetic dataset (no {MANIFEST_NAME}); "
                           f"move it away or choose another DATASETS.ROOT_DIR")
    parent = os.path.dirname(os.path.abspath(target))
    os.makedirs(parent, exist_ok=True)
    logger.info("generating the synthetic dataset in %s (%s)", target, params.to_json())
    tmp = tempfile.mkdtemp(prefix=".synthetic-tmp-", dir=parent)
    try:
        generate(params, tmp)
        if os.path.exists(target):
            if not force and is_up_to_date(target, params):   # another process was faster
                return False
            shutil.rmtree(target)
        try:
            os.rename(tmp, target)
        except OSError:
            if not is_up_to_date(target, params):
                raise
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return True
