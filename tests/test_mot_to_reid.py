"""tools/mot_to_reid.py on MOTChallenge sequences drawn here with the synthetic person renderer: crop counts and
sizes, the filters, disjoint train/test identities, query/gallery pairs the evaluator keeps (the CSVs read by the
csv dataset, ranked by utils.metrics), --camera and --global-ids, errors naming file and line, and a short
fine-tuning run (MODEL.PRETRAIN_CHOICE self) on the converted dataset through train_net.py."""
import csv
import logging
import os
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import train_net
from configs import load_cfg
from datasets import build_dataset
from datasets.csv_dataset import read_csv_split
from datasets.synthetic_generator import camera_style, identity_appearance, render_image
from model import build_model
from tests.helpers import REPO, TINY_CONFIG
from tools import mot_to_reid
from utils.metrics import eval_rank

W, H = 320, 240            # frame size
BOX_H, BOX_W = 96, 40      # person box
FRAMES = 40
SEED = 5
# extra annotations of sequence SEQ-A that the default filters drop: track -> (what, gt line fields after the box)
FILTERED_TRACKS = {90: "conf 0", 91: "class 7", 92: "too small", 93: "mostly outside"}
FILTERED_FRAMES = range(1, 6)  # each filtered track has these 5 frames
LOW_VISIBILITY_FRAMES = range(1, 5)  # track 1 of SEQ-A: visibility 0.2 in these frames


def track_span(track):
    start = 1 + 2 * (track - 1)
    return start, min(FRAMES, start + 29)


def track_xy(track, frame):
    start, _ = track_span(track)
    x0 = -6 if track == 2 else 10 + 45 * ((track - 1) // 2)  # track 2 starts 6 px outside the left border
    return x0 + 2 * (frame - start), 20 if track % 2 else 130


def make_sequence(folder, name, persons, camera, seqinfo=True, extra_lines=(), low_visibility=False):
    """A MOTChallenge sequence: ``persons`` {track id: person number} walking over a camera's background.

    The same person number looks the same in every sequence (its appearance is drawn from it); the camera
    number sets the background and photometry. Returns the path of the sequence folder."""
    seq = os.path.join(folder, name)
    os.makedirs(os.path.join(seq, "img1"))
    os.makedirs(os.path.join(seq, "gt"))
    cam = camera_style(np.random.default_rng([SEED, 2, camera]))
    apps = {t: identity_appearance(np.random.default_rng([SEED, 1, p])) for t, p in persons.items()}
    lines = []
    for frame in range(1, FRAMES + 1):
        image = np.empty((H, W, 3), np.float64)
        image[:] = cam["background"]
        image[int(cam["horizon"] * H):] = cam["ground"]
        for track in persons:
            start, end = track_span(track)
            if not start <= frame <= end:
                continue
            x, y = track_xy(track, frame)
            patch = render_image(apps[track], cam, np.random.default_rng([SEED, 3, persons[track], camera, frame]),
                                 (BOX_H, BOX_W))
            left = max(0, -x)
            image[y:y + BOX_H, x + left:x + BOX_W] = patch[:, left:]
            visibility = 0.2 if low_visibility and track == 1 and frame in LOW_VISIBILITY_FRAMES else 1.0
            lines.append(f"{frame},{track},{x},{y},{BOX_W},{BOX_H},1,1,{visibility}")
        cv2.imwrite(os.path.join(seq, "img1", f"{frame:06d}.jpg"), np.clip(image, 0, 255).astype(np.uint8)[..., ::-1])
    lines += extra_lines
    with open(os.path.join(seq, "gt", "gt.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    if seqinfo:
        with open(os.path.join(seq, "seqinfo.ini"), "w", encoding="utf-8") as f:
            f.write(f"[Sequence]\nname={name}\nimDir=img1\nframeRate=10\nseqLength={FRAMES}\n"
                    f"imWidth={W}\nimHeight={H}\nimExt=.jpg\n")
    return seq


def filtered_lines():
    """gt.txt lines the default filters drop, FILTERED_TRACKS order."""
    lines = []
    for frame in FILTERED_FRAMES:
        lines += [f"{frame},90,200,100,40,96,0,1,1",      # conf 0
                  f"{frame},91,200,100,40,96,1,7,1",      # class 7 (static person)
                  f"{frame},92,200,100,40,30,1,1,1",      # 30 px high
                  f"{frame},93,{W - 15},100,40,96,1,1,1"]  # 15 of 40 px inside
    return lines


@pytest.fixture(scope="module")
def sequences(tmp_path_factory):
    """SEQ-A (camera 0, seqinfo.ini, extra annotations to filter) and SEQ-B (camera 1, no seqinfo.ini):
    six tracks each, twelve different persons; MC-1 / MC-2: the same persons 1-6 seen by two cameras, and
    person 7 by MC-2 only."""
    root = tmp_path_factory.mktemp("mot")
    a = make_sequence(root / "single", "SEQ-A", {t: t for t in range(1, 7)}, 0, extra_lines=filtered_lines(),
                      low_visibility=True)
    b = make_sequence(root / "single", "SEQ-B", {t: 10 + t for t in range(1, 7)}, 1, seqinfo=False)
    c = make_sequence(root / "multi", "MC-1", {t: t for t in range(1, 7)}, 2)
    d = make_sequence(root / "multi", "MC-2", {t: t for t in range(1, 8)}, 3)
    return {"A": a, "B": b, "C": c, "D": d, "single": str(root / "single"), "multi": str(root / "multi")}


def convert(tmp_path, *args, name="out"):
    out = str(tmp_path / name)
    return out, mot_to_reid.main([*map(str, args), "--out", out])


def rows(out, split):
    return [(os.path.join(out, r.path) if not os.path.isabs(r.path) else r.path, r.pid, r.camid)
            for r in read_csv_split(os.path.join(out, f"{split}.csv"))]


def frame_of(path):
    return int(re.search(r"_(\d{6})\.jpg$", path).group(1))


def oracle_evaluation(dataset, caplog):
    """eval_rank on the loaded query/gallery with distance 0 between same-identity items: every query the evaluator
    keeps ranks a match first; the number of skipped queries is read from its log."""
    q_pids = np.array([r.pid for r in dataset.query])
    g_pids = np.array([r.pid for r in dataset.gallery])
    dist = (q_pids[:, None] != g_pids[None, :]).astype(np.float32)
    with caplog.at_level(logging.INFO, logger="utils.metrics"):
        result = eval_rank(dist, q_pids, g_pids, [r.camid for r in dataset.query], [r.camid for r in dataset.gallery])
    skipped = [r.getMessage() for r in caplog.records if "have no valid match" in r.getMessage()]
    return result, skipped


def load_csv_dataset(out):
    return build_dataset("csv", "/unused", load_cfg(TINY_CONFIG, ["DATASETS.NAMES", "csv", "DATASETS.CSV_DIR", out]))


# ------------------------------------------------------------------------------------------ one camera per identity
def test_single_camera_sequences_time_segments(sequences, tmp_path, caplog, capsys):
    out, summary = convert(tmp_path, sequences["single"], "--min-gap", "10")
    printed = capsys.readouterr().out
    # 12 persons (6 per sequence, track ids per sequence), split 6 / 6
    assert summary["train_ids"] == 6 and summary["test_ids"] == 6 and summary["dropped_ids"] == 0
    assert summary["query_ids"] == {"camera": 0, "time": 6} and summary["pseudo_cameras"]
    # the filters, each counted once per line of FILTERED_TRACKS / LOW_VISIBILITY_FRAMES
    n = len(FILTERED_FRAMES)
    assert summary["filtered"] == {"conf 0 (not evaluated in MOTChallenge)": n, "class not in [1]": n,
                                   "smaller than 20 x 50 (w x h) after clipping": n,
                                   "less than 75% of the box inside the image": n,
                                   "visibility < 0.5": len(LOW_VISIBILITY_FRAMES)}
    person_boxes = 2 * sum(e - s + 1 for s, e in map(track_span, range(1, 7)))
    assert summary["boxes_read"] == person_boxes + 4 * n
    train, query, gallery = (rows(out, s) for s in ("train", "query", "gallery"))
    # every kept box of a train identity is a train crop; a test track is query + gap + gallery + unused
    kept = person_boxes - len(LOW_VISIBILITY_FRAMES)
    assert len(train) + len(query) + len(gallery) + sum(summary["not_written"].values()) == kept
    written = [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(out, "crops")) for f in fs]
    assert summary["crops"] == len(written) == len(train) + len(query) + len(gallery)
    assert sorted(written) == sorted(p for p, _, _ in train + query + gallery)
    assert len(query) == 6 and len({p for _, p, _ in query}) == 6  # --queries-per-id 1
    # train and test identities are disjoint; pids 1..12
    train_ids, test_ids = {p for _, p, _ in train}, {p for _, p, _ in query + gallery}
    assert not train_ids & test_ids and train_ids | test_ids == set(range(1, 13))
    # pseudo-cameras: 2 x camera + segment; every query's gallery is its own track's second segment, >= 10 frames on
    for path, pid, camid in query:
        matches = [(p, c) for p, q, c in gallery if q == pid]
        assert matches and all(c == camid + 1 for _, c in matches) and camid % 2 == 0
        assert min(frame_of(p) for p, _ in matches) - frame_of(path) >= 10
    assert {c for _, _, c in train} == {0, 1, 2, 3}
    # crops are the boxes clipped to the image: track 2 starts 6 px outside the left border (its first frame is a
    # train crop, or the query: the first of the first segment)
    for path, _, _ in train + query + gallery:
        track, frame = map(int, re.search(r"(\d{6})_(\d{6})\.jpg$", path).groups())
        assert Image.open(path).size == (BOX_W - max(0, -track_xy(track, frame)[0]), BOX_H), path
    assert os.path.join(out, "crops", "SEQ-A", f"000002_{track_span(2)[0]:06d}.jpg") in [p for p, _, _ in train + query]
    # the csv dataset reads it, and the evaluator keeps every query
    dataset = load_csv_dataset(out)
    assert dataset.num_train_pids == 6 and dataset.num_cams == 4
    result, skipped = oracle_evaluation(dataset, caplog)
    assert skipped == [] and result["cmc"][0] == 1.0 and result["mAP"] == 1.0
    assert "pseudo-cameras by time segment" in printed and "queries from the first segment" in printed
    with open(os.path.join(out, "identities.csv"), encoding="utf-8") as f:
        identities = list(csv.DictReader(f))
    assert len(identities) == 12 and {r["query"] for r in identities if r["split"] == "test"} == {"time"}


def test_the_split_is_deterministic_and_follows_seed_and_ratio(sequences, tmp_path):
    def split(name, *args):
        out, summary = convert(tmp_path, sequences["single"], "--min-gap", "10", *args, name=name)
        with open(os.path.join(out, "identities.csv"), encoding="utf-8") as f:
            return [(r["sequence"], r["track"], r["split"]) for r in csv.DictReader(f)], summary

    first, _ = split("a")
    assert split("b")[0] == first
    assert split("c", "--seed", "1")[0] != first
    ratio, summary = split("d", "--train-ratio", "0.75")
    assert sum(s == "train" for _, _, s in ratio) == 9 and summary["test_ids"] == 3


def test_the_evaluator_would_drop_a_same_camera_split(sequences, tmp_path, caplog):
    """What the pseudo-cameras are for: with the real camera on both sides every query would be skipped."""
    out, _ = convert(tmp_path, sequences["single"], "--min-gap", "10")
    dataset = load_csv_dataset(out)
    same = [r._replace(camid=r.camid // 2) for r in dataset.query]
    q_pids = np.array([r.pid for r in same])
    g_pids = np.array([r.pid for r in dataset.gallery])
    with pytest.raises(ValueError, match="no query has a matching gallery item"):
        eval_rank((q_pids[:, None] != g_pids[None, :]).astype(np.float32), q_pids, g_pids,
                  [r.camid for r in same], [r.camid // 2 for r in dataset.gallery])


def test_frame_stride_max_crops_classes_and_min_crops(sequences, tmp_path):
    _, summary = convert(tmp_path, sequences["A"], "--frame-stride", "2", "--max-crops", "5", "--classes", "1,7",
                         "--min-visibility", "0", "--min-crops", "3", "--min-gap", "0", name="a")
    # odd frames only; class-7 track 91 is kept (frames 1, 3, 5: 3 crops, enough); every track capped at 5 crops
    assert summary["filtered"]["frame stride 2"] == sum(
        (e - s + 1) - len(range(s + (s % 2 == 0), e + 1, 2)) for s, e in map(track_span, range(1, 7))) + 3 * 2
    assert "class not in [1, 7]" not in summary["filtered"] and "visibility < 0.0" not in summary["filtered"]
    assert summary["train_ids"] + summary["test_ids"] == 7
    assert summary["filtered"]["over --max-crops 5 per track"] == sum(
        len(range(s + (s % 2 == 0), e + 1, 2)) - 5 for s, e in map(track_span, range(1, 7)))
    assert summary["splits"]["train"]["images"] <= 5 * summary["train_ids"]
    # --min-crops drops whole identities: the class-7 track has 3 crops, the people 5
    _, summary = convert(tmp_path, sequences["A"], "--frame-stride", "2", "--max-crops", "5", "--classes", "any",
                         "--min-crops", "4", "--min-gap", "0", name="b")
    assert summary["dropped_ids"] == 1 and summary["filtered"]["identities with fewer than 4 crops"] == 3
    assert summary["train_ids"] + summary["test_ids"] == 6


# ----------------------------------------------------------------------------------------------- several cameras
def test_global_ids_query_from_one_camera_gallery_from_the_other(sequences, tmp_path, caplog):
    out, summary = convert(tmp_path, sequences["multi"], "--global-ids", "--query-rule", "camera", "--seed", "1")
    # persons 1-6 are seen by both cameras, person 7 by MC-2 only: with seed 1 a test identity, so a gallery
    # distractor (no query) under --query-rule camera
    assert summary["train_ids"] == 4 and summary["test_ids"] == 3 and not summary["pseudo_cameras"]
    assert summary["query_ids"] == {"time": 0, "camera": 2} and summary["distractor_ids"] == 1
    query, gallery = rows(out, "query"), rows(out, "gallery")
    for path, pid, camid in query:
        matches = [c for _, q, c in gallery if q == pid]
        assert matches and camid not in matches and set(matches) | {camid} == {0, 1}
    dataset = load_csv_dataset(out)
    assert dataset.num_cams == 2
    result, skipped = oracle_evaluation(dataset, caplog)
    assert skipped == [] and result["mAP"] == 1.0


def test_auto_rule_mixes_cameras_and_time_segments(sequences, tmp_path, caplog):
    out, summary = convert(tmp_path, sequences["multi"], "--global-ids", "--seed", "1", "--min-gap", "10")
    with open(os.path.join(out, "identities.csv"), encoding="utf-8") as f:
        person7 = [r for r in csv.DictReader(f) if r["track"] == "7"]
    assert person7 and person7[0]["split"] == "test" and person7[0]["query"] == "time"  # seed 1 puts it in test
    assert summary["pseudo_cameras"] and summary["query_ids"] == {"time": 1, "camera": 2}
    dataset = load_csv_dataset(out)
    assert dataset.num_cams == 4
    result, skipped = oracle_evaluation(dataset, caplog)
    assert skipped == [] and result["mAP"] == 1.0


def test_camera_option_puts_sequences_on_one_camera(sequences, tmp_path):
    out, summary = convert(tmp_path, sequences["A"], sequences["B"], "--camera", "SEQ-A=3", "--camera", "SEQ-B=3",
                           "--min-gap", "10")
    camids = {c for split in ("train", "query", "gallery") for _, _, c in rows(out, split)}
    assert camids == {6, 7} and summary["train_ids"] + summary["test_ids"] == 12  # identities stay per sequence
    _, summary = convert(tmp_path, sequences["A"], sequences["B"], "--camera", "SEQ-B=0", "--min-gap", "10",
                         name="other")
    assert {c // 2 for _, _, c in rows(str(tmp_path / "other"), "train")} <= {0, 1}


def test_a_sequence_with_the_same_gt_is_skipped(sequences, tmp_path, caplog):
    import shutil
    copy = tmp_path / "SEQ-A-FRCNN"
    shutil.copytree(sequences["A"], copy)
    os.remove(copy / "seqinfo.ini")
    with caplog.at_level(logging.WARNING, logger="tools.mot_to_reid"):
        _, summary = convert(tmp_path, sequences["A"], copy, "--min-gap", "10")
    assert summary["train_ids"] + summary["test_ids"] == 6
    assert any("SEQ-A-FRCNN: same gt.txt as SEQ-A, skipped" in r.getMessage() for r in caplog.records)
    # a camera given to the skipped copy says so, and which sequence to give it to
    with pytest.raises(SystemExit, match="--camera 'SEQ-A-FRCNN=2': sequence 'SEQ-A-FRCNN' was skipped, its gt.txt "
                                         "is the same as 'SEQ-A''s: give the camera to 'SEQ-A'"):
        convert(tmp_path, sequences["A"], copy, "--camera", "SEQ-A-FRCNN=2", name="camera_of_copy")


# ----------------------------------------------------------------------------------------------- errors
def broken_sequence(tmp_path, line):
    seq = tmp_path / "BAD"
    (seq / "gt").mkdir(parents=True)
    (seq / "img1").mkdir()
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(seq / "img1" / "000001.jpg")
    good = f"1,1,10,10,{BOX_W},{BOX_H},1,1,1"
    (seq / "gt" / "gt.txt").write_text(f"{good}\n\n{line}\n", encoding="utf-8")
    return str(seq)


@pytest.mark.parametrize("line, message", [
    ("1,2,10,10,40", "expected 9 comma-separated fields (frame,id,x,y,w,h,conf,class,visibility), got 5"),
    ("1,2,ten,10,40,96,1,1,1", "x must be a number, got 'ten'"),
    ("1,2.5,10,10,40,96,1,1,1", "id must be an integer, got '2.5'"),
    ("0,2,10,10,40,96,1,1,1", "frame must be >= 1 (MOTChallenge frames are 1-based), got 0"),
    ("1,2,10,10,-40,96,1,1,1", "box width and height must be positive, got w=-40 h=96"),
    ("1,1,50,10,40,96,1,1,1", "track 1 already has a box in frame 1 (line 1)"),
    ("2,2,10,10,40,96,1,1,1", "image of frame 2 not found: "),
])
def test_errors_name_file_and_line(tmp_path, line, message):
    seq = broken_sequence(tmp_path, line)
    with pytest.raises(SystemExit) as exit_info:
        mot_to_reid.main([seq, "--out", str(tmp_path / "out"), "--min-crops", "1", "--min-gap", "0"])
    text = str(exit_info.value)
    assert text.startswith("mot_to_reid.py: error: ") and f"{os.path.join(seq, 'gt', 'gt.txt')}, line 3: " in text
    assert message in text
    assert not os.path.exists(tmp_path / "out")  # nothing written


@pytest.mark.parametrize("args, message", [
    (["--camera", "SEQ-A"], "--camera 'SEQ-A': expected SEQ=ID with ID an integer >= 0"),
    (["--camera", "SEQ-A=-1"], "--camera 'SEQ-A=-1': expected SEQ=ID"),
    (["--camera", "NOPE=1"], "--camera 'NOPE=1': no sequence named 'NOPE' among SEQ-A"),
    (["--camera", "SEQ-A=1", "--camera", "SEQ-A=2"], "sequence 'SEQ-A' is given a camera twice"),
    (["--classes", "pedestrian"], "--classes 'pedestrian': expected comma-separated class numbers"),
    (["--min-visibility", "1.5"], "--min-visibility 1.5: must be between 0 and 1"),
    (["--train-ratio", "1"], "--train-ratio 1.0: must be strictly between 0 and 1"),
    (["--frame-stride", "0"], "--frame-stride 0: must be >= 1"),
    (["--min-gap", "1000"], "no test identity can have a query: every test track is too short"),
    (["--query-rule", "camera"], "with --query-rule camera an identity needs crops from two cameras"),
    (["--min-height", "500"], "0 identities left after the filters (at least --min-crops 2 crops each); train and "
                              "test need one each: relax the filters (boxes filtered: 4 visibility < 0.5, 181 smaller than 20 x 500"),
])
def test_bad_options(sequences, tmp_path, args, message):
    with pytest.raises(SystemExit, match=re.escape(message)):
        mot_to_reid.main([sequences["A"], "--out", str(tmp_path / "out"), *args])


def test_missing_input_and_existing_output(sequences, tmp_path):
    with pytest.raises(SystemExit, match="holds no gt/gt.txt, nor do its subfolders"):
        mot_to_reid.main([str(tmp_path), "--out", str(tmp_path / "out")])
    out, _ = convert(tmp_path, sequences["A"], "--min-gap", "10")
    with pytest.raises(SystemExit, match=r"already holds train.csv, query.csv, gallery.csv, identities.csv, crops"):
        convert(tmp_path, sequences["A"], "--min-gap", "10")
    marker = os.path.join(out, "mine.txt")
    open(marker, "w").close()
    mot_to_reid.main([sequences["A"], "--out", out, "--overwrite", "--seed", "1", "--min-gap", "10"])
    assert os.path.isfile(marker)  # --overwrite replaces only what the tool writes


def test_the_script_fails_with_one_line(tmp_path):
    seq = broken_sequence(tmp_path, "1,2,10,10,40")
    result = subprocess.run([sys.executable, os.path.join(REPO, "tools", "mot_to_reid.py"), seq, "--out",
                             str(tmp_path / "o")], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("mot_to_reid.py: error: ")
    assert "Traceback" not in result.stderr and "line 3: expected 9 comma-separated fields" in result.stderr


# ----------------------------------------------------------------------------------------------- training
def test_fine_tune_from_a_reid_checkpoint_on_the_converted_dataset(sequences, tmp_path):
    """The worked example of docs/TRACKING.md: convert, fine-tune from a ReID checkpoint trained elsewhere (other
    identities and cameras: MODEL.PRETRAIN_CHOICE self re-makes the classifiers and camera embedding), evaluate."""
    out, summary = convert(tmp_path, sequences["single"], "--max-crops", "12", "--min-gap", "6")
    torch.manual_seed(0)
    source = build_model(load_cfg(TINY_CONFIG), 9, 6)
    checkpoint = str(tmp_path / "source.pth")
    torch.save({"model": source.state_dict(), "epoch": 1}, checkpoint)
    result = train_net.main(["--config_file", TINY_CONFIG, "DATASETS.NAMES", "csv", "DATASETS.CSV_DIR", out,
                             "MODEL.PRETRAIN_CHOICE", "self", "MODEL.PRETRAIN_PATH", checkpoint,
                             "OUTPUT_DIR", str(tmp_path / "run"), "SOLVER.MAX_EPOCHS", "1",
                             "SOLVER.EVAL_PERIOD", "1", "SOLVER.CHECKPOINT_PERIOD", "1"])
    assert len(result["epochs"]) == 1 and np.isfinite(result["epochs"][0]["loss"])
    assert 0.0 < result["latest"]["mAP"] <= 1.0
    assert os.path.isfile(tmp_path / "run" / "model_best.pth")
