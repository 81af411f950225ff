"""The synthetic dataset generator: determinism, sizes from the config, regeneration, Market format."""
import filecmp
import json
import os

import pytest

from configs import get_cfg_defaults
from datasets import DatasetError, build_dataset
from datasets.synthetic_generator import MANIFEST_NAME, SyntheticParams, ensure_generated

TINY = SyntheticParams(num_train_ids=3, num_test_ids=2, num_cams=3, images_per_cam=2, image_size=(32, 16), seed=4)


def tiny_cfg(root, **synthetic):
    cfg = get_cfg_defaults()
    cfg.DATASETS.NAMES = cfg.DATASETS.TEST_NAMES = ("synthetic",)  # as load_cfg leaves them
    cfg.DATASETS.ROOT_DIR = str(root)
    s = cfg.DATASETS.SYNTHETIC
    s.NUM_TRAIN_IDS, s.NUM_TEST_IDS, s.NUM_CAMS, s.IMAGES_PER_CAM = 3, 2, 3, 2
    s.IMAGE_SIZE, s.SEED = [32, 16], 4
    for key, value in synthetic.items():
        s[key] = value
    return cfg


def tree(path):
    return sorted(os.path.relpath(os.path.join(d, f), path) for d, _, fs in os.walk(path) for f in fs)


def test_same_parameters_give_byte_identical_files(tmp_path):
    ensure_generated(str(tmp_path / "a"), TINY)
    ensure_generated(str(tmp_path / "b"), TINY)
    files = tree(tmp_path / "a")
    assert files == tree(tmp_path / "b") and len(files) == 3 * 3 * 2 + 2 * 3 * 2 + 1 + 1
    match, mismatch, errors = filecmp.cmpfiles(tmp_path / "a", tmp_path / "b", files, shallow=False)
    assert not mismatch and not errors
    ensure_generated(str(tmp_path / "c"), SyntheticParams(**{**TINY.__dict__, "seed": 5}))
    _, mismatch, _ = filecmp.cmpfiles(tmp_path / "a", tmp_path / "c", [f for f in files if f.endswith(".jpg")],
                                      shallow=False)
    assert len(mismatch) == len(files) - 1                  # another seed, other images


def test_dataset_matches_its_config_and_every_query_has_a_cross_camera_match(tmp_path):
    ds = build_dataset("synthetic", str(tmp_path), tiny_cfg(tmp_path))
    assert ds.dataset_dir == os.path.join(str(tmp_path), "synthetic")
    assert ds.num_train_pids == 3 and ds.num_train_cams == 3 and ds.num_cams == 3
    assert len(ds.train) == 3 * 3 * 2 and sorted({r.pid for r in ds.train}) == [0, 1, 2]
    assert len(ds.query) == 2 * 3 and {r.camid for r in ds.query} == {0, 1, 2}
    distractors = [r for r in ds.gallery if r.pid == 0]
    assert len(ds.gallery) == 2 * 3 * 1 + len(distractors) and len(distractors) >= 1
    assert not {r.pid for r in ds.train} & {r.pid for r in ds.query}  # only raw pids: train ids are 1..3
    for q in ds.query:
        assert any(g.pid == q.pid and g.camid != q.camid for g in ds.gallery)
    assert len({(r.path) for r in ds.query + ds.gallery}) == len(ds.query) + len(ds.gallery)


def test_generated_on_first_use_reused_then_regenerated_when_config_changes(tmp_path):
    build_dataset("synthetic", str(tmp_path), tiny_cfg(tmp_path))
    manifest_path = tmp_path / "synthetic" / MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    assert manifest["params"]["num_train_ids"] == 3 and manifest["params"]["seed"] == 4
    stamp = os.stat(manifest_path).st_mtime_ns
    build_dataset("synthetic", str(tmp_path), tiny_cfg(tmp_path))
    assert os.stat(manifest_path).st_mtime_ns == stamp          # up to date: not rewritten
    ds = build_dataset("synthetic", str(tmp_path), tiny_cfg(tmp_path, NUM_TRAIN_IDS=4))
    assert ds.num_train_pids == 4
    assert json.loads(manifest_path.read_text())["params"]["num_train_ids"] == 4
    assert [p for p in os.listdir(tmp_path) if p != "synthetic"] == []   # no temporary folders left


def test_bad_synthetic_settings_and_foreign_folder(tmp_path):
    with pytest.raises(DatasetError, match="IMAGES_PER_CAM = 1 must be >= 2"):
        build_dataset("synthetic", str(tmp_path), tiny_cfg(tmp_path, IMAGES_PER_CAM=1))
    os.makedirs(tmp_path / "synthetic")
    (tmp_path / "synthetic" / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="is not a generated synthetic dataset"):
        build_dataset("synthetic", str(tmp_path), tiny_cfg(tmp_path))
