#!/usr/bin/env python
"""Person crops and the CSV dataset (train.csv, query.csv, gallery.csv) from MOTChallenge tracking annotations.

    python tools/mot_to_reid.py SEQ_OR_FOLDER [...] --out DIR [options]
    # then train on it:
    python train_net.py --config_file F DATASETS.NAMES csv DATASETS.CSV_DIR DIR

Input: MOTChallenge sequences, ``<seq>/gt/gt.txt`` (``frame,id,x,y,w,h,conf,class,visibility``, 1-based frames,
boxes in pixels), ``<seq>/img1/000001.jpg ...`` and optionally ``<seq>/seqinfo.ini`` (``name``, ``imDir``,
``imExt``, ``imWidth``, ``imHeight`` are read from it). A folder holding sequences (``MOT17/train``) names them
all; a sequence whose gt.txt equals an earlier one's (MOT17 ships each video once per public detector) is skipped.

Boxes: lines with conf 0 are ignored (MOTChallenge marks boxes not to evaluate that way); then the class filter
(--classes, default 1: MOT17/MOT20 pedestrian), the visibility filter (--min-visibility), the frame stride, the
box clipped to the image and the size filter (--min-height/--min-width after clipping, --min-inside: the
fraction of the box inside the image), at most --max-crops per track (evenly spaced in time), and identities
with fewer than --min-crops crops are dropped.

Identities: a track id names one person in its sequence (with --global-ids: in every sequence). Identities are
split into train and test (--train-ratio, shuffled with --seed; disjoint). Cameras: one per sequence, numbered in
the order given, or --camera SEQ=ID (several sequences filmed by one camera).

Query / gallery (the evaluator drops gallery items of the query's identity *and* camera, see utils/metrics.py):
* an identity seen by several cameras: queries from one camera (chosen with --seed), gallery from the others;
* an identity seen by one camera: its longest track is cut at its middle, queries from the first segment,
  gallery from the second, the two at least --min-gap frames apart. For the evaluator to keep these matches,
  the CSV camids are then *pseudo-cameras by time segment*: camid = 2 x camera + segment (0: first half of the
  track, 1: second half), in every split, so the camera embedding is trained on every camid it sees at test time.
* a test identity that gets no query that way (one camera and a track shorter than the gap; or
  --query-rule camera and one camera) goes to the gallery as a distractor.
--query-rule auto (default) chooses per identity as above; camera / time force one rule. The rule applied,
with its counts, is logged and printed.

Output in DIR: train.csv, query.csv, gallery.csv (header path,pid,camid; pids 1..N over all identities),
identities.csv (pid,split,sequence,track,camera,crops: where every identity comes from) and the crops,
crops/<sequence>/<track>_<frame>.jpg.
"""
import argparse
import collections
import configparser
import csv
import logging
import os
import shutil
import sys
from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence, Set, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from datasets.base import SPLITS, ImageRecord  # noqa: E402
from datasets.csv_dataset import csv_file_name, write_csv_split  # noqa: E402
from datasets.errors import DatasetError  # noqa: E402
from datasets.image_io import read_image  # noqa: E402
from utils.errors import UsageError, cli_entry  # noqa: E402
from utils.protocol import sha256_file  # noqa: E402

logger = logging.getLogger(__name__)

GT_FIELDS = ("frame", "id", "x", "y", "w", "h", "conf", "class", "visibility")
QUERY_RULES = ("auto", "camera", "time")
IDENTITIES_FILE = "identities.csv"
CROPS_FOLDER = "crops"
# Pseudo-cameras by time segment: camid = SEGMENTS_PER_CAMERA * camera + segment.
SEGMENTS_PER_CAMERA = 2


class MOTSequence(NamedTuple):
    """One MOTChallenge sequence folder and what seqinfo.ini says about it."""

    name: str
    folder: str
    gt_file: str
    image_dir: str          # the folder of the frames (img1)
    image_ext: str          # '.jpg'
    size: Optional[Tuple[int, int]]  # (width, height) from seqinfo.ini, else None (read from the first frame)

    def image_path(self, frame: int) -> str:
        return os.path.join(self.image_dir, f"{frame:06d}{self.image_ext}")


class Box(NamedTuple):
    """One kept annotation: a person's box in one frame, clipped to the image."""

    seq: int      # index into the sequence list
    track: int    # the track id of gt.txt
    frame: int
    x0: int
    y0: int
    x1: int       # exclusive
    y1: int
    line: int     # line of gt.txt


class Filters(NamedTuple):
    classes: Optional[Set[int]]  # None: any class
    min_visibility: float
    min_height: int
    min_width: int
    min_inside: float
    frame_stride: int
    max_crops: int               # per track; 0 = no limit


# ----------------------------------------------------------------------------------------------- options
def parse_cameras(values: Sequence[str], names: Sequence[str], duplicates: Optional[Dict[str, str]] = None
                  ) -> List[int]:
    """The camera of each sequence of ``names``: --camera SEQ=ID where given, else new ids after the largest given
    one, in the order of ``names``. ``duplicates``: {skipped sequence: the kept one with the same gt.txt}."""
    duplicates = duplicates or {}
    given: Dict[str, int] = {}
    for value in values:
        name, sep, camera = value.partition("=")
        name = name.strip()
        if not sep or not name or not camera.strip().isdigit():
            raise UsageError(f"--camera {value!r}: expected SEQ=ID with ID an integer >= 0 (e.g. MOT17-02=0)")
        if name in duplicates:
            raise UsageError(f"--camera {value!r}: sequence {name!r} was skipped, its gt.txt is the same as "
                             f"{duplicates[name]!r}'s: give the camera to {duplicates[name]!r}")
        if name not in names:
            raise UsageError(f"--camera {value!r}: no sequence named {name!r} among {', '.join(names)}")
        if name in given:
            raise UsageError(f"--camera {value!r}: sequence {name!r} is given a camera twice")
        given[name] = int(camera)
    cameras, next_free = [], 1 + max(given.values(), default=-1)
    for name in names:
        if name in given:
            cameras.append(given[name])
        else:
            cameras.append(next_free)
            next_free += 1
    return cameras


def parse_classes(value: str) -> Optional[Set[int]]:
    """``--classes``: 'any', or comma-separated integers."""
    if value.strip().lower() == "any":
        return None
    try:
        classes = {int(v) for v in value.split(",") if v.strip()}
    except ValueError:
        classes = set()
    if not classes:
        raise UsageError(f"--classes {value!r}: expected comma-separated class numbers (e.g. 1 or 1,7) or 'any'")
    return classes


def check_options(args: argparse.Namespace) -> None:
    """UsageError naming the option for a value out of range."""
    checks = (("--min-visibility", args.min_visibility, 0.0 <= args.min_visibility <= 1.0, "between 0 and 1"),
              ("--min-height", args.min_height, args.min_height >= 1, ">= 1 (pixels)"),
              ("--min-width", args.min_width, args.min_width >= 1, ">= 1 (pixels)"),
              ("--min-inside", args.min_inside, 0.0 < args.min_inside <= 1.0, "in (0, 1]"),
              ("--frame-stride", args.frame_stride, args.frame_stride >= 1, ">= 1"),
              ("--max-crops", args.max_crops, args.max_crops >= 0, ">= 0 (0: no limit)"),
              ("--min-crops", args.min_crops, args.min_crops >= 1, ">= 1"),
              ("--train-ratio", args.train_ratio, 0.0 < args.train_ratio < 1.0, "strictly between 0 and 1"),
              ("--queries-per-id", args.queries_per_id, args.queries_per_id >= 1, ">= 1"),
              ("--min-gap", args.min_gap, args.min_gap >= 0, ">= 0 (frames)"),
              ("--seed", args.seed, args.seed >= 0, ">= 0"))
    for option, value, ok, expected in checks:
        if not ok:
            raise UsageError(f"{option} {value}: must be {expected}")


# ----------------------------------------------------------------------------------------------- reading
def find_sequences(paths: Sequence[str]) -> List[str]:
    """Sequence folders (holding gt/gt.txt): each path is one, or a folder whose subfolders are."""
    found = []
    for path in paths:
        if os.path.isfile(os.path.join(path, "gt", "gt.txt")):
            found.append(path)
            continue
        subfolders = sorted(os.path.join(path, d) for d in os.listdir(path)) if os.path.isdir(path) else []
        sequences = [d for d in subfolders if os.path.isfile(os.path.join(d, "gt", "gt.txt"))]
        if not sequences:
            what = "does not exist" if not os.path.exists(path) else "holds no gt/gt.txt, nor do its subfolders"
            raise UsageError(f"{path}: {what} (expected MOTChallenge sequences: <seq>/gt/gt.txt and "
                             f"<seq>/img1/000001.jpg ...)")
        found += sequences
    return found


def read_sequence(folder: str) -> MOTSequence:
    """The sequence in ``folder``, with seqinfo.ini's name, image folder, extension and size when it has one."""
    info_file = os.path.join(folder, "seqinfo.ini")
    name, im_dir, im_ext, size = os.path.basename(os.path.normpath(folder)), "img1", ".jpg", None
    if os.path.isfile(info_file):
        parser = configparser.ConfigParser()
        try:
            parser.read(info_file, encoding="utf-8")
        except configparser.Error as err:
            raise UsageError(f"{info_file}: not a readable seqinfo.ini ({err.message.splitlines()[0]})") from None
        if not parser.has_section("Sequence"):
            raise UsageError(f"{info_file}: no [Sequence] section")
        info = parser["Sequence"]
        name = info.get("name", name).strip() or name
        im_dir = info.get("imDir", im_dir).strip() or im_dir
        im_ext = info.get("imExt", im_ext).strip() or im_ext
        if "imWidth" in info or "imHeight" in info:
            try:
                size = (int(info["imWidth"]), int(info["imHeight"]))
            except (KeyError, ValueError):
                raise UsageError(f"{info_file}: imWidth and imHeight must both be positive integers, got "
                                 f"{info.get('imWidth')!r} and {info.get('imHeight')!r}") from None
            if min(size) < 1:
                raise UsageError(f"{info_file}: imWidth and imHeight must be positive, got {size[0]} x {size[1]}")
    image_dir = os.path.join(folder, im_dir)
    if not os.path.isdir(image_dir):
        raise UsageError(f"{folder}: image folder {im_dir!r} not found (frames are read as "
                         f"{im_dir}/000001{im_ext}, ...)")
    return MOTSequence(name, folder, os.path.join(folder, "gt", "gt.txt"), image_dir,
                       im_ext if im_ext.startswith(".") else "." + im_ext, size)


def image_size(sequence: MOTSequence, frame: int, where: str) -> Tuple[int, int]:
    """(width, height) of the frames: seqinfo.ini's, else the header of the frame ``frame``."""
    if sequence.size is not None:
        return sequence.size
    path = sequence.image_path(frame)
    if not os.path.isfile(path):
        raise UsageError(f"{where}: image of frame {frame} not found: {path}")
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, ValueError) as err:
        raise UsageError(f"{where}: cannot read image {path}: {err}") from None


def _number(text: str, field: str, where: str, integer: bool):
    try:
        return int(text) if integer else float(text)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise UsageError(f"{where}: {field} must be {kind}, got {text!r} (gt.txt lines are "
                         f"{','.join(GT_FIELDS)})") from None


def _integral(text: str, field: str, where: str) -> int:
    """An integer written as one ('3') or as a float with no fraction ('3.0', as some tools write ids)."""
    value = _number(text, field, where, integer=False)
    if not float(value).is_integer():
        raise UsageError(f"{where}: {field} must be an integer, got {text!r}")
    return int(value)


def read_gt(sequence: MOTSequence, seq_index: int, filters: Filters, dropped: collections.Counter) -> List[Box]:
    """The boxes of gt.txt that pass the filters (clipped to the image); ``dropped[reason]`` counts the others.

    Raises UsageError naming the file and line for a line that is not ``frame,id,x,y,w,h,conf,class,visibility``
    (more fields are allowed and ignored), a frame < 1, a non-positive width or height, or a track given twice in
    one frame, and for a kept box whose frame has no image (before anything is written)."""
    boxes, seen, size, frames = [], {}, None, set()
    with open(sequence.gt_file, "r", encoding="utf-8-sig") as f:
        for number, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            where = f"{sequence.gt_file}, line {number}"
            fields = [v.strip() for v in raw.split(",")]
            if len(fields) < len(GT_FIELDS):
                raise UsageError(f"{where}: expected {len(GT_FIELDS)} comma-separated fields "
                                 f"({','.join(GT_FIELDS)}), got {len(fields)}: {raw.strip()!r}")
            frame = _integral(fields[0], "frame", where)
            track = _integral(fields[1], "id", where)
            x, y, w, h, conf, visibility = (_number(fields[i], GT_FIELDS[i], where, integer=False)
                                            for i in (2, 3, 4, 5, 6, 8))
            cls = _integral(fields[7], "class", where)
            if frame < 1:
                raise UsageError(f"{where}: frame must be >= 1 (MOTChallenge frames are 1-based), got {frame}")
            if w <= 0 or h <= 0:
                raise UsageError(f"{where}: box width and height must be positive, got w={fields[4]} h={fields[5]}")
            if (frame, track) in seen:
                raise UsageError(f"{where}: track {track} already has a box in frame {frame} "
                                 f"(line {seen[frame, track]})")
            seen[frame, track] = number
            if conf == 0:
                dropped["conf 0 (not evaluated in MOTChallenge)"] += 1
                continue
            if filters.classes is not None and cls not in filters.classes:
                dropped[f"class not in {sorted(filters.classes)}"] += 1
                continue
            if 0 <= visibility < filters.min_visibility:
                dropped[f"visibility < {filters.min_visibility}"] += 1
                continue
            if (frame - 1) % filters.frame_stride:
                dropped[f"frame stride {filters.frame_stride}"] += 1
                continue
            if size is None:
                size = image_size(sequence, frame, where)
            x0, y0 = max(0, int(round(x))), max(0, int(round(y)))
            x1, y1 = min(size[0], int(round(x + w))), min(size[1], int(round(y + h)))
            inside = max(0, x1 - x0) * max(0, y1 - y0) / (w * h)
            if inside < filters.min_inside:
                dropped[f"less than {filters.min_inside:.0%} of the box inside the image"] += 1
                continue
            if y1 - y0 < filters.min_height or x1 - x0 < filters.min_width:
                dropped[f"smaller than {filters.min_width} x {filters.min_height} (w x h) after clipping"] += 1
                continue
            if frame not in frames:
                if not os.path.isfile(sequence.image_path(frame)):
                    raise UsageError(f"{where}: image of frame {frame} not found: {sequence.image_path(frame)}")
                frames.add(frame)
            boxes.append(Box(seq_index, track, frame, x0, y0, x1, y1, number))
    return boxes


def evenly_spaced(items: Sequence, count: int) -> List:
    """``count`` items spread evenly over ``items`` (first and last included), all of them if there are fewer."""
    if count <= 0 or len(items) <= count:
        return list(items)
    if count == 1:
        return [items[0]]
    return [items[int(round(i))] for i in np.linspace(0, len(items) - 1, count)]


# ----------------------------------------------------------------------------------------------- planning
class Crop(NamedTuple):
    box: Box
    pid: int
    camera: int    # the real camera
    segment: int   # 0: first half of its track in time, 1: second half (pseudo-cameras by time segment)


class Plan(NamedTuple):
    splits: Dict[str, List[Crop]]
    pseudo_cameras: bool
    identities: List[dict]     # rows of identities.csv
    counts: Dict[str, int]


def _segment_of(box: Box, track_boxes: Sequence[Box]) -> int:
    middle = (track_boxes[0].frame + track_boxes[-1].frame) / 2.0
    return 0 if box.frame <= middle else 1


def plan_dataset(tracks: Dict[Tuple[int, int], List[Box]], cameras: Sequence[int], args: argparse.Namespace) -> Plan:
    """Which crops go to train, query and gallery (no image is read here).

    ``tracks``: (sequence index, track id) -> its boxes sorted by frame (filters applied)."""
    counts = collections.Counter()
    by_identity: Dict[object, List[Tuple[int, int]]] = collections.defaultdict(list)
    for key in sorted(tracks):
        by_identity[key[1] if args.global_ids else key].append(key)
    identity_keys = sorted(by_identity, key=lambda k: min(by_identity[k]))
    kept = []
    for ident in identity_keys:
        crops = sum(len(tracks[t]) for t in by_identity[ident])
        if crops < args.min_crops:
            counts["identities with too few crops"] += 1
            counts["boxes of identities with too few crops"] += crops
        else:
            kept.append(ident)
    if len(kept) < 2:
        raise UsageError(f"{len(kept)} identit{'y' if len(kept) == 1 else 'ies'} left after the filters "
                         f"(at least --min-crops {args.min_crops} crops each); train and test need one each: "
                         f"relax the filters")
    pid_of = {ident: pid for pid, ident in enumerate(kept, 1)}
    rng = np.random.default_rng(args.seed)
    order = [kept[i] for i in rng.permutation(len(kept))]
    num_train = min(max(int(round(args.train_ratio * len(kept))), 1), len(kept) - 1)
    train_ids = set(order[:num_train])

    splits: Dict[str, List[Crop]] = {split: [] for split in SPLITS}
    identities = []
    rule_counts = collections.Counter()

    def crop(box: Box, ident, segment: int) -> Crop:
        return Crop(box, pid_of[ident], cameras[box.seq], segment)

    for ident in kept:
        keys = by_identity[ident]
        segments = {k: [_segment_of(b, tracks[k]) for b in tracks[k]] for k in keys}
        if ident in train_ids:
            role = "train"
            for k in keys:
                splits["train"] += [crop(b, ident, s) for b, s in zip(tracks[k], segments[k])]
        else:
            role, query, gallery = _split_test_identity(ident, keys, tracks, segments, cameras, args, rng, counts, crop)
            if query:
                rule_counts[role] += 1
                splits["query"] += query
            else:
                counts["test identities without a query (gallery distractors)"] += 1
            splits["gallery"] += gallery
        for k in keys:
            identities.append({"pid": pid_of[ident], "split": "train" if role == "train" else "test",
                               "query": "" if role == "train" else role.replace("distractor", "none"),
                               "sequence": k[0], "track": k[1],
                               "camera": cameras[k[0]], "crops": len(tracks[k])})
    used_time = rule_counts["time"]
    counts["test identities with queries from other cameras"] = rule_counts["camera"]
    counts["test identities with queries from time segments"] = used_time
    counts["train identities"] = len(train_ids)
    counts["test identities"] = len(kept) - len(train_ids)
    if not splits["query"]:
        raise UsageError("no test identity can have a query: " + (
            "with --query-rule camera an identity needs crops from two cameras (--global-ids, the same person in "
            "several sequences); use --query-rule auto or time" if args.query_rule == "camera" else
            f"every test track is too short for a query and a gallery segment --min-gap {args.min_gap} frames "
            f"apart; lower --min-gap or --frame-stride, or add sequences"))
    return Plan(splits, used_time > 0, identities, dict(counts))


def _split_test_identity(ident, keys, tracks, segments, cameras, args, rng, counts, crop):
    """(rule used, query crops, gallery crops) of one test identity; the rule is 'camera', 'time' or 'distractor'."""
    seen_by = sorted({cameras[k[0]] for k in keys})
    all_boxes = [(b, k, s) for k in keys for b, s in zip(tracks[k], segments[k])]
    if len(seen_by) > 1 and args.query_rule in ("auto", "camera"):
        query_camera = seen_by[int(rng.integers(len(seen_by)))]
        mine = sorted((x for x in all_boxes if cameras[x[1][0]] == query_camera), key=lambda x: (x[1], x[0].frame))
        query = [crop(b, ident, s) for b, _, s in evenly_spaced(mine, args.queries_per_id)]
        counts["not written: same camera as the query"] += len(mine) - len(query)
        # the gallery segment is that of each other track's own time half (its pseudo-camera, if any)
        gallery = [crop(b, ident, s) for b, k, s in all_boxes if cameras[k[0]] != query_camera]
        return "camera", query, gallery
    if args.query_rule != "camera":
        longest = max(keys, key=lambda k: (tracks[k][-1].frame - tracks[k][0].frame, -keys.index(k)))
        boxes = tracks[longest]
        middle = (boxes[0].frame + boxes[-1].frame) / 2.0
        first = [b for b in boxes if b.frame <= middle - args.min_gap / 2.0]  # segment 0 of the track
        second = [b for b in boxes if b.frame >= middle + args.min_gap / 2.0 and b.frame > middle]
        if first and second:
            query = [crop(b, ident, 0) for b in evenly_spaced(first, args.queries_per_id)]
            counts["not written: query segment beyond the queries"] += len(first) - len(query)
            in_gap = len(boxes) - len(first) - len(second)
            counts["not written: in the gap between query and gallery segments"] += in_gap
            # other tracks of the query's camera are other times as well: gallery segment (camid 2c + 1)
            gallery = [crop(b, ident, 1) for b in second]
            gallery += [crop(b, ident, 1 if cameras[k[0]] == cameras[longest[0]] else s)
                        for b, k, s in all_boxes if k != longest]
            return "time", query, gallery
    return "distractor", [], [crop(b, ident, s) for b, _, s in all_boxes]


# ----------------------------------------------------------------------------------------------- writing
def crop_path(out: str, sequence: MOTSequence, box: Box) -> str:
    return os.path.join(out, CROPS_FOLDER, sequence.name, f"{box.track:06d}_{box.frame:06d}.jpg")


def boxes_by_frame(crops: Iterable[Crop]) -> Dict[Tuple[int, int], List[Box]]:
    """(sequence index, frame) -> the boxes to cut from that frame, in order."""
    by_frame = collections.defaultdict(list)
    for c in crops:
        by_frame[c.box.seq, c.box.frame].append(c.box)
    return dict(sorted(by_frame.items()))


def write_crops(out: str, sequences: Sequence[MOTSequence], by_frame: Dict[Tuple[int, int], List[Box]]) -> int:
    """Cut and write every crop, reading each frame once; returns the number written."""
    written = 0
    for (seq, frame), boxes in by_frame.items():
        sequence = sequences[seq]
        where = f"{sequence.gt_file}, line {boxes[0].line}"
        path = sequence.image_path(frame)
        try:
            image = read_image(path)
        except DatasetError as err:
            raise UsageError(f"{where}: {err}") from None
        if sequence.size is not None and image.size != tuple(sequence.size):
            raise UsageError(f"{path}: image is {image.size[0]} x {image.size[1]}, "
                             f"{os.path.join(sequence.folder, 'seqinfo.ini')} says {sequence.size[0]} x "
                             f"{sequence.size[1]} (imWidth x imHeight)")
        if max(b.x1 for b in boxes) > image.size[0] or max(b.y1 for b in boxes) > image.size[1]:
            raise UsageError(f"{path}: image is {image.size[0]} x {image.size[1]}, smaller than the frames read "
                             f"before (boxes were clipped to those)")
        folder = os.path.join(out, CROPS_FOLDER, sequence.name)
        os.makedirs(folder, exist_ok=True)
        for box in boxes:
            image.crop((box.x0, box.y0, box.x1, box.y1)).save(crop_path(out, sequence, box), quality=95)
            written += 1
    return written


def prepare_out(out: str, overwrite: bool) -> None:
    """Refuse to mix with an earlier conversion unless --overwrite, which removes only what this tool writes."""
    ours = [os.path.join(out, n) for n in [csv_file_name(s) for s in SPLITS] + [IDENTITIES_FILE, CROPS_FOLDER]]
    existing = [p for p in ours if os.path.exists(p)]
    if existing and not overwrite:
        raise UsageError(f"--out {out}: already holds {', '.join(os.path.basename(p) for p in existing)} "
                         f"(an earlier conversion): pass --overwrite to replace them, or choose another folder")
    for path in existing:
        if os.path.isdir(path):
            shutil.rmtree(path)
        else:
            os.remove(path)
    os.makedirs(out, exist_ok=True)


def rule_message(plan: Plan, args: argparse.Namespace) -> str:
    c = plan.counts
    parts = [f"--query-rule {args.query_rule}"]
    if c["test identities with queries from other cameras"]:
        parts.append(f"{c['test identities with queries from other cameras']} test identities seen by several "
                     f"cameras: queries from one camera, gallery from the others")
    if c["test identities with queries from time segments"]:
        parts.append(f"{c['test identities with queries from time segments']} test identities seen by one camera: "
                     f"the evaluator drops same-identity same-camera gallery items, so each is cut at the middle of "
                     f"its longest track, queries from the first segment, gallery from the second, at least "
                     f"--min-gap {args.min_gap} frames later")
    if plan.pseudo_cameras:
        parts.append(f"camids are pseudo-cameras by time segment: camid = {SEGMENTS_PER_CAMERA} x camera + "
                     f"segment (0: first half of a track, 1: second half), in every split")
    else:
        parts.append("camids are the cameras")
    return "; ".join(parts)


# ----------------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("sequences", nargs="+", metavar="SEQ_OR_FOLDER",
                        help="MOTChallenge sequence folders (with gt/gt.txt), or folders holding them")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder of the CSV files and the crops")
    parser.add_argument("--camera", action="append", default=[], metavar="SEQ=ID",
                        help="camera id of a sequence (repeat; sequences not given get their own cameras)")
    parser.add_argument("--global-ids", action="store_true",
                        help="a track id names the same person in every sequence (default: per sequence)")
    parser.add_argument("--classes", default="1", help="classes kept, comma-separated, or 'any' (default: 1)")
    parser.add_argument("--min-visibility", type=float, default=0.5,
                        help="default: 0.5 (a negative visibility: not annotated, kept)")
    parser.add_argument("--min-height", type=int, default=50, help="pixels after clipping (default: 50)")
    parser.add_argument("--min-width", type=int, default=20, help="pixels after clipping (default: 20)")
    parser.add_argument("--min-inside", type=float, default=0.75,
                        help="least fraction of the box inside the image (default: 0.75)")
    parser.add_argument("--frame-stride", type=int, default=1, help="keep frames 1, 1+N, 1+2N, ... (default: 1)")
    parser.add_argument("--max-crops", type=int, default=0,
                        help="at most N crops per track, evenly spaced in time (default: 0 = no limit)")
    parser.add_argument("--min-crops", type=int, default=2, help="drop identities with fewer crops (default: 2)")
    parser.add_argument("--train-ratio", type=float, default=0.5,
                        help="share of identities for training (default: 0.5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the identity split and query cameras (default: 0)")
    parser.add_argument("--query-rule", choices=QUERY_RULES, default="auto",
                        help="camera: queries need another camera; time: time segments; auto: per identity (default)")
    parser.add_argument("--queries-per-id", type=int, default=1, help="queries per test identity (default: 1)")
    parser.add_argument("--min-gap", type=int, default=30,
                        help="frames between the query and gallery segments of a track (default: 30)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier conversion in --out")
    return parser


@cli_entry
def main(argv=None) -> dict:
    """Convert; returns the summary (counts per split and per filter) that is printed."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    check_options(args)
    filters = Filters(parse_classes(args.classes), args.min_visibility, args.min_height, args.min_width,
                      args.min_inside, args.frame_stride, args.max_crops)
    sequences, hashes, duplicates = [], {}, {}
    for folder in find_sequences(args.sequences):
        sequence = read_sequence(folder)
        digest = sha256_file(sequence.gt_file)
        if digest in hashes:
            logger.warning("%s: same gt.txt as %s, skipped (MOT17 ships each video once per public detector)",
                           sequence.name, hashes[digest])
            duplicates[sequence.name] = hashes[digest]
            continue
        if any(s.name == sequence.name for s in sequences):
            raise UsageError(f"{folder}: a second sequence named {sequence.name!r}; sequence names must be unique")
        hashes[digest] = sequence.name
        sequences.append(sequence)
    cameras = parse_cameras(args.camera, [s.name for s in sequences], duplicates)
    for s, camera in zip(sequences, cameras):
        logger.info("sequence %s (%s): camera %d", s.name, s.folder, camera)

    dropped = collections.Counter()
    tracks: Dict[Tuple[int, int], List[Box]] = collections.defaultdict(list)
    kept = 0
    for index, sequence in enumerate(sequences):
        boxes = read_gt(sequence, index, filters, dropped)
        kept += len(boxes)
        for box in boxes:
            tracks[index, box.track].append(box)
    for key, boxes in tracks.items():
        boxes.sort(key=lambda b: b.frame)
        if filters.max_crops and len(boxes) > filters.max_crops:
            dropped[f"over --max-crops {filters.max_crops} per track"] += len(boxes) - filters.max_crops
            tracks[key] = evenly_spaced(boxes, filters.max_crops)
    try:
        plan = plan_dataset(tracks, cameras, args)
    except UsageError as err:
        if not dropped:
            raise
        raise UsageError(f"{err} (boxes filtered: {', '.join(f'{n} {why}' for why, n in dropped.items())})") from None
    rule = rule_message(plan, args)
    logger.info("query/gallery rule: %s", rule)

    by_frame = boxes_by_frame(c for split in SPLITS for c in plan.splits[split])
    prepare_out(args.out, args.overwrite)
    written = write_crops(args.out, sequences, by_frame)
    for split in SPLITS:
        records = [ImageRecord(crop_path(args.out, sequences[c.box.seq], c.box), c.pid,
                               SEGMENTS_PER_CAMERA * c.camera + c.segment if plan.pseudo_cameras else c.camera)
                   for c in plan.splits[split]]
        write_csv_split(records, os.path.join(args.out, csv_file_name(split)))
    with open(os.path.join(args.out, IDENTITIES_FILE), "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, ("pid", "split", "query", "sequence", "track", "camera", "crops"))
        writer.writeheader()
        writer.writerows(dict(row, sequence=sequences[row["sequence"]].name) for row in plan.identities)

    counts = plan.counts
    filtered = dict(dropped)
    if counts.get("identities with too few crops"):
        filtered[f"identities with fewer than {args.min_crops} crops"] = \
            counts["boxes of identities with too few crops"]
    summary = {
        "crops": written,
        "splits": {split: {"images": len(plan.splits[split]), "ids": len({c.pid for c in plan.splits[split]})}
                   for split in SPLITS},
        "train_ids": counts["train identities"], "test_ids": counts["test identities"],
        "query_ids": {"camera": counts["test identities with queries from other cameras"],
                      "time": counts["test identities with queries from time segments"]},
        "distractor_ids": counts.get("test identities without a query (gallery distractors)", 0),
        "dropped_ids": counts.get("identities with too few crops", 0),
        "boxes_read": kept + sum(dropped.values()), "filtered": filtered,
        "not_written": {k[len("not written: "):]: v for k, v in counts.items() if k.startswith("not written: ") and v},
        "pseudo_cameras": plan.pseudo_cameras, "rule": rule, "out": os.path.abspath(args.out),
    }
    print_summary(summary, sequences, cameras)
    return summary


def print_summary(summary: dict, sequences: Sequence[MOTSequence], cameras: Sequence[int]) -> None:
    print("sequences: " + ", ".join(f"{s.name} (camera {c})" for s, c in zip(sequences, cameras)))
    print(f"crops written: {summary['crops']} to {os.path.join(summary['out'], CROPS_FOLDER)}")
    for split in SPLITS:
        s = summary["splits"][split]
        print(f"  {csv_file_name(split):<12} {s['images']:>6} images {s['ids']:>5} ids")
    print(f"identities: {summary['train_ids']} train, {summary['test_ids']} test ({summary['query_ids']['camera']} "
          f"with queries from other cameras, {summary['query_ids']['time']} from time segments, "
          f"{summary['distractor_ids']} gallery distractors)")
    print(f"boxes in gt.txt: {summary['boxes_read']}")
    for reason, count in summary["filtered"].items():
        print(f"  filtered: {count:>6} {reason}")
    for reason, count in summary["not_written"].items():
        print(f"  not written: {count:>6} {reason}")
    print(f"query/gallery rule: {summary['rule']}")
    print(f"train on it with: DATASETS.NAMES csv DATASETS.CSV_DIR {summary['out']}")


if __name__ == "__main__":
    main()
