"""tools/calibrate.py: TAR at FAR, the threshold for a FAR and the EER against an independent brute-force sweep
over every pair (features whose cosine similarities are exact in float32, with many ties), the unreachable
FARs, chunking and its memory bound, the JSON and the PNG, the three inputs (a saved .npz, the synthetic dataset
with a tiny checkpoint, a CSV dataset) and the errors that name the file, key or value."""
import json
import math
import os
import subprocess
import sys
import tracemalloc
from decimal import Decimal

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import REPO, TINY_CONFIG
from tools import calibrate

REPORTED = ("1e-1", "1e-2", "1e-3")


# ----------------------------------------------------------------------------- features with exact similarities
def _four_squares():
    """r -> (a, b, c, d) with a^2 + b^2 + c^2 + d^2 = r, for every r <= 4096 (Lagrange)."""
    two = {}
    for a in range(65):
        for b in range(a + 1):
            two.setdefault(a * a + b * b, (a, b))
    table = {}
    for r in range(4097):
        for s, (a, b) in two.items():
            if r - s in two:
                table[r] = (a, b) + two[r - s]
                break
    return table


FOUR = _four_squares()


def integer_unit_vectors(rng, n, dim=32):
    """``n`` integer vectors of squared norm 4096: divided by 64 they are unit vectors whose dot products are
    multiples of 1/4096 with partial sums below 2^12 in those units, so float32 computes them exactly."""
    out = np.zeros((n, dim), np.int64)
    for i in range(n):
        while True:
            head = rng.integers(-12, 13, dim - 4)
            rest = 4096 - int((head ** 2).sum())
            if rest >= 0:
                break
        v = np.concatenate([head, np.array(FOUR[rest]) * rng.choice([-1, 1], 4)])
        out[i] = rng.permutation(v)
    assert ((out ** 2).sum(1) == 4096).all()
    return out


def structured_set(seed=0, num_ids=12, queries=40, gallery=300, duplicates=30):
    """Query/gallery features of identities (a prototype each; an image = its prototype with a few signs flipped
    and two entries swapped, which keeps the norm), cameras, and some gallery images repeated exactly (ties)."""
    rng = np.random.default_rng(seed)
    prototypes = integer_unit_vectors(rng, num_ids)

    def images(n):
        pids = rng.integers(0, num_ids, n)
        feats = prototypes[pids].copy()
        for f in feats:
            f[rng.choice(len(f), 5, replace=False)] *= -1
            i, j = rng.choice(len(f), 2, replace=False)
            f[[i, j]] = f[[j, i]]
        return feats, pids, rng.integers(0, 4, n)

    qf, qp, qc = images(queries)
    gf, gp, gc = images(gallery - duplicates)
    copy = rng.integers(0, len(gf), duplicates)
    gf, gp, gc = np.concatenate([gf, gf[copy]]), np.concatenate([gp, gp[copy]]), np.concatenate([gc, gc[copy] + 1])
    # the features as any model gives them: unnormalised float32 (each image its own scale, a power of two)
    scale_q, scale_g = 2.0 ** rng.integers(-3, 4, (len(qf), 1)), 2.0 ** rng.integers(-3, 4, (len(gf), 1))
    return (qf * scale_q).astype(np.float32), (gf * scale_g).astype(np.float32), qp, gp, qc, gc


# ----------------------------------------------------------------------------- the independent reference
def reference_pairs(qf, gf, qp, gp, qc=None, gc=None):
    """Genuine and impostor similarities in float64 from the full matrix (exact for the features above)."""
    q = qf.astype(np.float64) / np.sqrt((qf.astype(np.float64) ** 2).sum(1, keepdims=True))
    g = gf.astype(np.float64) / np.sqrt((gf.astype(np.float64) ** 2).sum(1, keepdims=True))
    sim = q @ g.T
    same = np.asarray(qp)[:, None] == np.asarray(gp)[None, :]
    cross = same if qc is None else same & (np.asarray(qc)[:, None] != np.asarray(gc)[None, :])
    return sim[cross], sim[~same]


def sweep(genuine, impostor):
    """Every observed similarity t as a threshold (accept > t): (thresholds, impostors accepted, genuine
    accepted), counted pair by pair (a brute-force comparison, a block of thresholds at a time)."""
    thresholds = np.unique(np.concatenate([genuine, impostor]))
    imp = np.concatenate([(impostor[None, :] > t[:, None]).sum(1) for t in np.array_split(thresholds, 50)])
    gen = np.concatenate([(genuine[None, :] > t[:, None]).sum(1) for t in np.array_split(thresholds, 50)])
    return thresholds, imp, gen


def reference_far(genuine, impostor, far):
    """(threshold, TAR, achieved FAR, impostors accepted, allowed) for ``far``: the smallest observed threshold
    accepting at most far * N impostors (far as the decimal written); None when far * N < 1."""
    thresholds, imp, gen = sweep(genuine, impostor)
    allowed = int((Decimal(repr(far)) * len(impostor)).to_integral_value(rounding="ROUND_FLOOR"))
    if allowed == 0:
        return None
    i = np.flatnonzero(imp <= allowed)[0]
    return thresholds[i], gen[i] / len(genuine), imp[i] / len(impostor), int(imp[i]), allowed


def reference_eer(genuine, impostor):
    """(EER, threshold): the observed t with the smallest |FAR - FRR| (exact in integers; the smallest t)."""
    thresholds, imp, gen = sweep(genuine, impostor)
    n_imp, n_gen = len(impostor), len(genuine)
    gap = np.abs(imp * n_gen - (n_gen - gen) * n_imp)
    i = int(np.argmin(gap))
    return (imp[i] / n_imp + 1 - gen[i] / n_gen) / 2, thresholds[i]


def check_against_reference(result, genuine, impostor, fars):
    entries = dict(result["tar_at_far"], requested=result["requested_far"])
    checked = {}
    for label, entry in entries.items():
        expected = reference_far(genuine, impostor, entry["far"])
        if expected is None:
            assert entry["threshold"] is None and entry["tar"] is None and "unreachable" in entry, (label, entry)
        else:
            t, tar, achieved, accepted, allowed = expected
            assert (entry["threshold"], entry["tar"], entry["achieved_far"]) == (t, tar, achieved), (label, entry)
            assert (entry["impostors_accepted"], entry["impostors_allowed"]) == (accepted, allowed)
        checked[label] = expected
    eer, t = reference_eer(genuine, impostor)
    assert result["eer"]["threshold"] == t and result["eer"]["eer"] == pytest.approx(eer, abs=1e-15)
    assert result["pairs"]["genuine"] == len(genuine) and result["pairs"]["impostor"] == len(impostor)
    return checked


# ----------------------------------------------------------------------------- figures
@pytest.mark.parametrize("chunk_pairs", [1, 1000, calibrate.CHUNK_PAIRS])
def test_figures_equal_a_brute_force_sweep(chunk_pairs):
    qf, gf, qp, gp, qc, gc = structured_set()
    genuine, impostor = reference_pairs(qf, gf, qp, gp, qc, gc)
    n = len(impostor)
    # reported FARs, FARs around 1/N (one impostor allowed, none allowed: unreachable), a FAR inside a tie
    requested = [1.5 / n, 0.5 / n, 1e-5, 0.05]
    for far in requested:
        scores = calibrate.pair_scores(qf, gf, qp, gp, qc, gc, fars=calibrate.REPORTED_FARS + (far,),
                                       chunk_pairs=chunk_pairs, device="cpu")
        result = calibrate.calibrate(scores, far)
        checked = check_against_reference(result, genuine, impostor, calibrate.REPORTED_FARS + (far,))
        assert result["recommended_threshold"] == (None if checked["requested"] is None else checked["requested"][0])
    assert checked["1e-3"] is not None  # N > 1000: every reported FAR is reachable here
    # the data exercise ties: some threshold rejects tied impostors, reaching a FAR below the one asked for
    fars = tuple(float(f) for f in np.linspace(0.01, 0.3, 30))
    scores = calibrate.pair_scores(qf, gf, qp, gp, qc, gc, fars=fars, chunk_pairs=chunk_pairs, device="cpu")
    ties = [calibrate.threshold_at_far(scores, f) for f in fars]
    assert [(e["threshold"], e["tar"], e["achieved_far"]) for e in ties] == \
        [reference_far(genuine, impostor, f)[:3] for f in fars]
    assert any(e["impostors_accepted"] < e["impostors_allowed"] for e in ties)
    assert len(np.unique(impostor)) < len(impostor) / 3  # many tied similarities


def test_hand_computed_case():
    """One query, identity a; gallery: a in another camera (1.0), a in the same camera (left out), b twice and c
    (0.0: tied impostors), d (0.5). By hand: FAR 1/2 allows 2 of the 4 impostors: the 3rd largest, 0.0, is the
    threshold and its ties are rejected with it (achieved FAR 1/4); FAR 1/4 allows one: the 2nd largest, 0.0
    again; FAR 0.2 allows none (4 < 1/0.2): unreachable. EER 0 at 0.5 (FAR 0, FRR 0)."""
    e = np.eye(5, dtype=np.float32)
    d = np.array([1, 0, 1, 1, 1], np.float32)  # norm 2: cosine 0.5 with e0, exactly
    gf = np.stack([e[0] * 3, e[0], e[1], e[1] * 2, e[2], d])
    scores = calibrate.pair_scores(e[:1] * 2, gf, ["a"], ["a", "a", "b", "b", "c", "d"], [0], [1, 0, 1, 1, 1, 1],
                                   fars=(0.5, 0.25, 0.2), device="cpu")
    result = calibrate.calibrate(scores, 0.2, fars=(0.5, 0.25))
    assert result["pairs"]["genuine"] == 1 and result["pairs"]["impostor"] == 4
    assert result["pairs"]["same_identity_same_camera_left_out"] == 1
    half, quarter = result["tar_at_far"]["5e-1"], result["tar_at_far"]["2.5e-1"]
    assert (half["threshold"], half["achieved_far"], half["tar"], half["impostors_allowed"]) == (0.0, 0.25, 1.0, 2)
    assert (quarter["threshold"], quarter["achieved_far"], quarter["tar"]) == (0.0, 0.25, 1.0)
    assert result["requested_far"]["threshold"] is None and result["recommended_threshold"] is None
    assert "4 impostor pairs < 1/FAR = 5" in result["requested_far"]["unreachable"]
    assert result["eer"] == {"eer": 0.0, "threshold": 0.5, "far": 0.0, "frr": 0.0}
    assert result["impostor"]["max"] == 0.5 and result["genuine"]["min"] == 1.0


def test_eer_tie_takes_the_smaller_threshold():
    """Genuine 0.5, impostors 0.25 and 0.75: |FAR - FRR| is 1/2 at 0.25 (FAR 1/2, FRR 0) and at 0.5 (FAR 1/2,
    FRR 1): the smaller threshold, EER 1/4."""
    query = np.eye(5, dtype=np.float32)[:1]
    gallery = np.array([[1, 0, 1, 1, 1], [1, 3, 2, 1, 1], [3, 2, 1, 1, 1]], np.float32)  # norms 2, 4, 4
    scores = calibrate.pair_scores(query, gallery, [1], [1, 2, 3], [0], [1, 1, 1], fars=(0.5,), device="cpu")
    assert calibrate.equal_error_rate(scores) == {"eer": 0.25, "threshold": 0.25, "far": 0.5, "frr": 0.0}


def test_similarity_keys_sort_as_the_values():
    values = np.array([-1.0, -0.5, -1e-30, -0.0, 0.0, 1e-30, 0.25, 0.5, 1.0, 1.0000001], np.float32)
    keys = calibrate.similarity_keys(values)
    assert (np.diff(keys.astype(np.int64)) > 0).sum() == len(values) - 2 and keys[3] == keys[4]  # -0.0 is 0.0
    assert np.array_equal(calibrate.key_values(keys)[[0, 1, 2, 4, 5, 6, 7, 8, 9]], values[[0, 1, 2, 4, 5, 6, 7, 8, 9]])
    shuffled = np.random.default_rng(0).normal(size=1000).astype(np.float32)
    assert np.array_equal(calibrate.key_values(np.sort(calibrate.similarity_keys(shuffled))), np.sort(shuffled))


def test_chunked_memory_stays_bounded():
    """Four times the queries (pairs) at the same chunk size: numpy's peak grows by far less than keeping the
    added pairs' similarities would take (4 bytes each)."""
    rng = np.random.default_rng(1)
    gallery = 20000
    gf, gp = rng.normal(size=(gallery, 8)).astype(np.float32), rng.integers(0, 500, gallery)
    peaks = []
    for queries in (100, 400):
        qf, qp = rng.normal(size=(queries, 8)).astype(np.float32), rng.integers(0, 500, queries)
        tracemalloc.start()
        calibrate.pair_scores(qf, gf, qp, gp, fars=calibrate.REPORTED_FARS, chunk_pairs=1 << 17, device="cpu")
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    added_pairs = 300 * gallery
    assert peaks[1] - peaks[0] < 0.1 * 4 * added_pairs, peaks
    assert peaks[1] < 4 * 400 * gallery, peaks  # less than the similarities of all pairs


# ----------------------------------------------------------------------------- the command line, the files
def write_npz(path, qf, gf, qp, gp, qc=None, gc=None, keys=("query_feats", "gallery_feats")):
    arrays = {keys[0]: qf, keys[1]: gf, "query_pids": np.asarray(qp), "gallery_pids": np.asarray(gp)}
    if qc is not None:
        arrays.update(query_camids=np.asarray(qc), gallery_camids=np.asarray(gc))
    np.savez(path, **arrays)
    return str(path)


def test_saved_features_json_and_png(tmp_path, capsys):
    qf, gf, qp, gp, qc, gc = structured_set(seed=3)
    path = write_npz(tmp_path / "feats.npz", qf, gf, qp, gp, qc, gc)
    result = calibrate.main(["--features", path, "--far", "0.02"])
    out = tmp_path / "feats_calibration.json"
    with open(out, encoding="utf-8") as f:
        written = json.load(f)
    assert written == json.loads(json.dumps(result))
    assert set(written) == {"source", "similarity", "decision_rule", "pair_rule", "threshold_rule", "eer_rule",
                            "pairs", "genuine", "impostor", "tar_at_far", "eer", "requested_far",
                            "recommended_threshold", "figure"}
    assert list(written["tar_at_far"]) == list(REPORTED)
    assert set(written["tar_at_far"]["1e-2"]) == {"far", "threshold", "tar", "achieved_far", "impostors_accepted",
                                                  "impostors_allowed", "genuine_accepted"}
    assert set(written["eer"]) == {"eer", "threshold", "far", "frr"}
    assert set(written["genuine"]) == set(written["impostor"]) == {"count", "mean", "std", "min", "max"}
    assert written["pairs"]["cameras_known"] and "different camera" in written["pair_rule"]
    genuine, impostor = reference_pairs(qf, gf, qp, gp, qc, gc)
    check_against_reference(written, genuine, impostor, calibrate.REPORTED_FARS + (0.02,))
    assert written["recommended_threshold"] == written["requested_far"]["threshold"] is not None
    assert written["genuine"]["mean"] == pytest.approx(genuine.mean()) and \
        written["impostor"]["std"] == pytest.approx(impostor.std(), rel=1e-6)
    # the PNG: histograms and ROC side by side
    figure = tmp_path / "feats_calibration.png"
    assert written["figure"] == str(figure)
    with Image.open(figure) as image:
        assert image.format == "PNG" and image.size[0] > image.size[1] > 200
    printed = capsys.readouterr().out
    assert "FAR 1e-2: TAR" in printed and "EER" in printed and str(out) in printed


def test_features_of_extract_features_without_cameras(tmp_path, caplog):
    """tools/extract_features.py's keys, identities as folder names, no cameras: every same-identity pair is
    genuine; pids of Market junk (-1) are left out."""
    qf, gf, qp, gp, _, _ = structured_set(seed=4)
    names = np.array([f"id{p}" for p in qp]), np.array([f"id{p}" for p in gp])
    gp_junk = names[1].copy()
    gp_junk[:5] = "-1"
    path = write_npz(tmp_path / "x.npz", qf, gf, names[0], gp_junk, keys=("query_features", "gallery_features"))
    result = calibrate.main(["--features", path, "--out", str(tmp_path / "c.json"), "--figure",
                             str(tmp_path / "c.png")])
    assert "no cameras" in caplog.text and not result["pairs"]["cameras_known"]
    assert result["pairs"]["junk_gallery_left_out"] == 5 and os.path.isfile(tmp_path / "c.png")
    genuine, impostor = reference_pairs(qf, gf[5:], names[0], names[1][5:])
    check_against_reference(result, genuine, impostor, calibrate.REPORTED_FARS)


# ----------------------------------------------------------------------------- a model on a dataset
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A tiny checkpoint for configs/Synthetic/tiny.yml (untrained, as train_net.py saves one), its data root."""
    from configs import load_cfg
    from model import build_model

    root = tmp_path_factory.mktemp("calibrate")
    cfg = load_cfg(TINY_CONFIG, ["MODEL.PRETRAIN_CHOICE", "none"])
    torch.manual_seed(0)
    model = build_model(cfg, cfg.DATASETS.SYNTHETIC.NUM_TRAIN_IDS, cfg.DATASETS.SYNTHETIC.NUM_CAMS)
    weight = str(root / "model_best.pth")
    torch.save({"model": model.state_dict(), "epoch": 1, "config": cfg.dump()}, weight)
    return weight, str(root / "data"), root


def _figures(result):
    return {k: result[k] for k in ("pairs", "tar_at_far", "eer", "requested_far", "genuine", "impostor")}


def test_synthetic_dataset_csv_dataset_and_saved_features_agree(tiny_model):
    import test_net
    from tools import make_csv

    weight, data, root = tiny_model
    common = ["DATASETS.ROOT_DIR", data, "TEST.WEIGHT", weight]
    synthetic = calibrate.main(["--config_file", TINY_CONFIG, "--far", "1e-2", "OUTPUT_DIR", str(root / "syn")]
                               + common)
    assert os.path.isfile(root / "syn" / calibrate.CALIBRATION_FILE)
    assert os.path.isfile(root / "syn" / "calibration.png")
    assert synthetic["source"]["dataset"] == "synthetic" and synthetic["source"]["weight"] == weight
    # test_net.py's features of the same model: the same figures from the .npz, and the same retrieval metrics
    metrics = test_net.main(["--config_file", TINY_CONFIG, "--save-features", str(root / "f.npz"),
                             "OUTPUT_DIR", str(root / "test")] + common)
    assert all(synthetic["source"]["retrieval"][k] == metrics[k] for k in ("mAP", "rank1"))
    saved = calibrate.main(["--features", str(root / "f.npz"), "--far", "1e-2"])
    assert _figures(saved) == _figures(synthetic)
    with np.load(root / "f.npz") as f:
        genuine, impostor = reference_pairs(f["query_feats"], f["gallery_feats"], f["query_pids"],
                                            f["gallery_pids"], f["query_camids"], f["gallery_camids"])
    assert synthetic["pairs"]["genuine"] == len(genuine) and synthetic["pairs"]["impostor"] == len(impostor)
    assert synthetic["tar_at_far"]["1e-1"]["threshold"] == pytest.approx(np.sort(impostor)[::-1][
        math.floor(0.1 * len(impostor))], abs=1e-6)
    # the CSV copy of the dataset (tools/make_csv.py): the same images, identities and cameras
    csv_dir = make_csv.main(["--config_file", TINY_CONFIG, "DATASETS.ROOT_DIR", data])
    # (a test set among the training datasets: the model is given its cameras, as for the synthetic set)
    csv = calibrate.main(["--config_file", TINY_CONFIG, "--far", "1e-2", "--dataset", "csv", "DATASETS.NAMES", "csv",
                          "DATASETS.TEST_NAMES", "('synthetic', 'csv')", "DATASETS.CSV_DIR", csv_dir,
                          "OUTPUT_DIR", str(root / "csv")] + common)
    assert csv["source"]["dataset"] == "csv" and _figures(csv) == _figures(synthetic)
    with pytest.raises(SystemExit, match=r"--dataset market1501 is not one of the test sets .*'synthetic'"):
        calibrate.main(["--config_file", TINY_CONFIG, "--dataset", "market1501", "OUTPUT_DIR", str(root / "x")]
                       + common)


def test_write_to_an_export(tiny_model, tmp_path, capsys):
    """The threshold for --far lands in a real export's metadata (tools/export.py, TorchScript); an unreachable
    FAR is refused and leaves the file as it was; a file that is no export is refused before any work."""
    from tools import export
    from tracking.exported import read_metadata

    weight, data, root = tiny_model
    exported = str(tmp_path / "model.pt")
    export.main(["--config_file", TINY_CONFIG, "--format", "torchscript", "--out", exported,
                 "TEST.WEIGHT", weight, "DATASETS.ROOT_DIR", data])
    assert read_metadata(exported)["recommended_threshold"] is None
    common = ["DATASETS.ROOT_DIR", data, "TEST.WEIGHT", weight, "OUTPUT_DIR", str(tmp_path / "out")]
    result = calibrate.main(["--config_file", TINY_CONFIG, "--far", "0.05", "--write-to", exported] + common)
    assert result["recommended_threshold"] == result["requested_far"]["threshold"] is not None
    metadata = read_metadata(exported)
    assert metadata["recommended_threshold"] == result["recommended_threshold"]
    record = metadata["threshold_calibration"]  # how the threshold was chosen travels with it
    assert record["far"] == 0.05 and record["decision_rule"] == calibrate.DECISION_RULE
    assert record["achieved_far"] == result["requested_far"]["achieved_far"] <= 0.05
    assert record["pairs"]["impostor"] == result["pairs"]["impostor"]
    assert f"written into {exported}" in capsys.readouterr().out
    before = open(exported, "rb").read()
    tiny_far = 0.5 / result["pairs"]["impostor"]
    with pytest.raises(SystemExit, match=f"--write-to {exported}: no threshold for --far .*impostor pairs < 1/FAR.*"
                                         f"left as it was"):
        calibrate.main(["--config_file", TINY_CONFIG, "--far", repr(tiny_far), "--write-to", exported] + common)
    assert open(exported, "rb").read() == before
    not_export = tmp_path / "notes.txt"
    not_export.write_text("not a model")
    with pytest.raises(SystemExit, match=f"{not_export} is neither a TorchScript archive nor an ONNX model"):
        calibrate.main(["--features", str(root / "f.npz"), "--write-to", str(not_export)])
    with pytest.raises(SystemExit, match=f"--write-to {tmp_path / 'none.onnx'}: file not found"):
        calibrate.main(["--features", str(root / "f.npz"), "--write-to", str(tmp_path / "none.onnx")])


# ----------------------------------------------------------------------------- errors
def test_errors_name_the_file_key_or_value(tmp_path):
    qf, gf, qp, gp, qc, gc = structured_set(seed=5, queries=5, gallery=20, duplicates=0)
    missing = str(tmp_path / "missing.npz")
    with pytest.raises(SystemExit, match=f"calibrate.py: error: --features {missing}: file not found"):
        calibrate.main(["--features", missing])
    no_pids = str(tmp_path / "no_pids.npz")
    np.savez(no_pids, query_feats=qf, gallery_feats=gf)
    with pytest.raises(SystemExit, match=f"--features {no_pids}: no key query_pids"):
        calibrate.main(["--features", no_pids])
    other = str(tmp_path / "other.npz")
    np.savez(other, features=qf, paths=np.array(["a"] * len(qf)))
    with pytest.raises(SystemExit, match=f"--features {other}: expected the keys query_feats \\+ gallery_feats.*"
                                         f"found \\['features', 'paths'\\].*use --query and --gallery"):
        calibrate.main(["--features", other])
    bad_shape = write_npz(tmp_path / "shape.npz", qf, gf, qp[:-1], gp, qc, gc)
    with pytest.raises(SystemExit, match=r"query_pids has shape \(4,\), expected \(5,\) like query_feats"):
        calibrate.main(["--features", bad_shape])
    nan = qf.copy()
    nan[0, 0] = np.nan
    with pytest.raises(SystemExit, match="query_feats holds NaN"):
        calibrate.main(["--features", write_npz(tmp_path / "nan.npz", nan, gf, qp, gp, qc, gc)])
    not_npz = tmp_path / "text.npz"
    not_npz.write_text("hello")
    with pytest.raises(SystemExit, match=f"--features {not_npz}: not a .npz file"):
        calibrate.main(["--features", str(not_npz)])
    good = write_npz(tmp_path / "good.npz", qf, gf, qp, gp, qc, gc)
    for far in ("0", "1", "-0.1", "1.5", "abc", "nan"):
        with pytest.raises(SystemExit, match=f"--far {far}: expected a number between 0 and 1"):
            calibrate.main(["--features", good, "--far", far])
    one_identity = write_npz(tmp_path / "one.npz", qf, gf, np.zeros(5, int), np.zeros(20, int), qc, gc)
    with pytest.raises(SystemExit, match="no impostor pair"):
        calibrate.main(["--features", one_identity])
    with pytest.raises(SystemExit, match="--features reads saved features"):
        calibrate.main(["--features", good, "--config_file", TINY_CONFIG])
    # the script itself: one line, exit code 1
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", "calibrate.py"), "--features", good,
                           "--far", "2"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == ("calibrate.py: error: --far 2: expected a number between 0 "
                                                    "and 1 (exclusive), e.g. 1e-3")
