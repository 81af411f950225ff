"""The CSV dataset (DATASETS.NAMES csv, DATASETS.CSV_DIR): loading, semantics of pids and camids, one
error per bad input naming the file and line, tools/make_csv.py, and a short training run on a CSV copy
of the synthetic dataset. Also: a dataset class registered in a test is a config value with no list edited."""
import os

import numpy as np
import pytest
from PIL import Image

import datasets
import train_net
from configs import ConfigError, load_cfg
from datasets import DatasetError, build_dataset, make_dataloader
from datasets import registry as dataset_registry
from datasets.base import ReIDDataset
from datasets.csv_dataset import read_csv_split, write_csv_split
from tests.helpers import tiny_cfg
from tests.test_cli import TINY
from utils.errors import UsageError

# split -> rows (path, pid, camid) written below the header; images are created for every path
ROWS = {
    "train": [("images/a_0.png", 7, 0), ("images/a_1.png", 7, 2), ("images/b_0.png", 3, 1),
              ("images/b_1.png", 3, 0), ("images/junk.png", -1, 0)],
    "query": [("images/q_0.png", 12, 0), ("images/q_1.png", 40, 1)],
    "gallery": [("images/g_0.png", 12, 5), ("images/g_1.png", 40, 0), ("images/g_2.png", 0, 1)],
}


def write_image(path, value=0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.full((16, 8, 3), value, np.uint8)).save(path)


def write_csv(folder, split, lines):
    with open(os.path.join(folder, f"{split}.csv"), "w", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))


def make_csv_dir(folder, rows=ROWS, header="path,pid,camid"):
    """The CSV dataset of ``rows`` in ``folder`` (images written); returns the folder as a string."""
    os.makedirs(folder, exist_ok=True)
    for split, split_rows in rows.items():
        order = [c.strip() for c in header.split(",")]
        lines = [header]
        for i, (path, pid, camid) in enumerate(split_rows):
            write_image(os.path.join(folder, path), 40 * i)
            values = {"path": path, "pid": pid, "camid": camid}
            lines.append(",".join(str(values[c]) for c in order))
        write_csv(folder, split, lines)
    return str(folder)


def csv_cfg(csv_dir, *overrides):
    return tiny_cfg("DATASETS.NAMES", "csv", "DATASETS.CSV_DIR", str(csv_dir), "DATALOADER.NUM_WORKERS", "0",
                    *overrides)


def load(csv_dir):
    return build_dataset("csv", "/unused/root", csv_cfg(csv_dir))


def test_splits_pids_and_cameras(tmp_path):
    folder = make_csv_dir(tmp_path / "mine")
    ds = load(folder)
    assert ds.dataset_dir == folder
    # train: junk (-1) skipped, pids 3, 7 relabelled 0, 1 in sorted order; camids as written
    assert [(os.path.relpath(r.path, folder), r.pid, r.camid) for r in ds.train] == [
        ("images/a_0.png", 1, 0), ("images/a_1.png", 1, 2), ("images/b_0.png", 0, 1), ("images/b_1.png", 0, 0)]
    # query and gallery: pids and camids as written (pid 0 is an identity like any other)
    assert [(r.pid, r.camid) for r in ds.query] == [(12, 0), (40, 1)]
    assert [(r.pid, r.camid) for r in ds.gallery] == [(12, 5), (40, 0), (0, 1)]
    assert all(os.path.isfile(r.path) for r in ds.train + ds.query + ds.gallery)
    # the camera embedding covers the largest camid of any split (5, in the gallery)
    assert ds.num_train_pids == 2 and ds.num_train_cams == 3 and ds.num_cams == 6


def test_any_column_order_spaces_bom_blank_lines_and_absolute_paths(tmp_path):
    folder = make_csv_dir(tmp_path / "mine", header=" camid , path,pid")
    absolute = os.path.join(folder, "images", "q_0.png")
    with open(os.path.join(folder, "query.csv"), "w", encoding="utf-8-sig") as f:  # byte-order mark, as Excel
        f.write(f"pid,path,camid\n\n12,{absolute},0\n  \n40,images/q_1.png,1\n")
    ds = load(folder)
    assert [(r.pid, r.camid) for r in ds.query] == [(12, 0), (40, 1)] and ds.query[0].path == absolute
    assert [(r.pid, r.camid) for r in ds.gallery] == [(12, 5), (40, 0), (0, 1)]


def test_relative_csv_dir_is_relative_to_the_working_directory(tmp_path, monkeypatch):
    make_csv_dir(tmp_path / "mine")
    monkeypatch.chdir(tmp_path)
    ds = load("mine")
    assert ds.dataset_dir == "mine" and all(os.path.isfile(r.path) for r in ds.gallery)


def test_make_dataloader(tmp_path):
    folder = make_csv_dir(tmp_path / "mine")
    cfg = csv_cfg(folder, "SOLVER.IMS_PER_BATCH", "4", "DATALOADER.NUM_INSTANCE", "2", "TEST.IMS_PER_BATCH", "8")
    loaders = make_dataloader(cfg)
    assert (loaders.num_classes, loaders.num_cams, loaders.num_query) == (2, 6, 2)
    images, pids, camids, _ = next(iter(loaders.train_loader))
    assert images.shape == (4, 3, 64, 32) and set(pids.tolist()) == {0, 1}
    images, pids, camids, _ = next(iter(loaders.val_loader))
    assert pids.tolist() == [12, 40, 12, 40, 0] and camids.tolist() == [0, 1, 5, 0, 1]


def test_write_then_read_gives_the_same_records(tmp_path):
    ds = load(make_csv_dir(tmp_path / "mine"))
    out = tmp_path / "elsewhere" / "copy" / "gallery.csv"
    write_csv_split(ds.gallery, str(out))
    assert out.read_text().splitlines()[:2] == ["path,pid,camid", "../../mine/images/g_0.png,12,5"]
    assert [(os.path.realpath(r.path), r.pid, r.camid) for r in read_csv_split(str(out))] == \
        [(os.path.realpath(r.path), r.pid, r.camid) for r in ds.gallery]


# ----------------------------------------------------------------------------- bad input: one error each
def test_empty_csv_dir_is_a_config_error():
    with pytest.raises(ConfigError, match="DATASETS.CSV_DIR is empty"):
        build_dataset("csv", "./data", tiny_cfg("DATASETS.NAMES", "csv"))
    with pytest.raises(ConfigError, match="^the dataset 'csv' is read but DATASETS.CSV_DIR is empty"):
        build_dataset("csv", "./data")  # no config at all


@pytest.mark.parametrize("opts,key", [
    (["DATASETS.NAMES", "csv"], "DATASETS.NAMES"),
    (["DATASETS.NAMES", "['synthetic', 'csv']", "DATASETS.TEST_NAMES", "csv"], "DATASETS.NAMES"),
    (["DATASETS.TEST_NAMES", "['csv']"], "DATASETS.TEST_NAMES"),  # trained on synthetic, tested on csv
])
def test_empty_csv_dir_error_names_the_key_that_names_csv(tmp_path, opts, key):
    cfg = tiny_cfg("DATASETS.ROOT_DIR", str(tmp_path), "DATASETS.SYNTHETIC.NUM_TRAIN_IDS", "4",
                   "DATASETS.SYNTHETIC.NUM_TEST_IDS", "4", "DATASETS.SYNTHETIC.IMAGE_SIZE", "[32, 16]", *opts)
    with pytest.raises(ConfigError, match=f"^{key} names the dataset 'csv' but DATASETS.CSV_DIR is empty: set it"):
        make_dataloader(cfg)


def test_missing_folder(tmp_path):
    missing = str(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match=f"DATASETS.CSV_DIR = '{missing}' does not exist"):
        load(missing)


def test_missing_csv_file(tmp_path):
    folder = make_csv_dir(tmp_path / "mine")
    os.remove(os.path.join(folder, "gallery.csv"))
    with pytest.raises(DatasetError) as info:
        load(folder)
    message = str(info.value)
    assert f"missing file(s) {os.path.join(folder, 'gallery.csv')}" in message and "query.csv" not in message.split(
        "Expected")[0]
    assert "train.csv query.csv gallery.csv" in message  # the expected layout


# (split, lines of its CSV file, what the message must say after "<file>, line N: ")
BAD_FILES = {
    "missing column": ("train", ["path,pid", "images/a_0.png,7"], 1, "missing column(s) 'camid'"),
    "unknown column": ("query", ["path,pid,camid,view", "images/q_0.png,12,0,front"], 1,
                       "unknown column(s) 'view'"),
    "repeated column": ("gallery", ["path,pid,pid"], 1, "repeated column(s) 'pid'"),
    "no header": ("query", [], 1, "the file is empty"),
    "pid not an integer": ("train", ["path,pid,camid", "images/a_0.png,7,0", "images/a_1.png,seven,0"], 3,
                           "pid must be an integer >= 0 (or -1 for a junk image, skipped), got 'seven'"),
    "pid below -1": ("query", ["path,pid,camid", "images/q_0.png,-2,0"], 2, "pid must be an integer >= 0"),
    "camid not an integer": ("gallery", ["path,pid,camid", "images/g_0.png,12,1.5"], 2,
                             "camid must be an integer >= 0 (0-based camera), got '1.5'"),
    "negative camid": ("gallery", ["path,pid,camid", "", "images/g_0.png,12,-1"], 3, "camid must be an integer >= 0"),
    "missing image": ("query", ["path,pid,camid", "images/q_0.png,12,0", "images/nobody.png,40,1"], 3,
                      "image 'images/nobody.png' not found"),
    "empty path": ("train", ["path,pid,camid", ",7,0"], 2, "the path is empty"),
    "too many fields": ("train", ["path,pid,camid", "images/a_0.png,7,0,1"], 2, "expected 3 fields"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_csv_names_file_and_line(tmp_path, case):
    split, lines, line_no, says = BAD_FILES[case]
    folder = make_csv_dir(tmp_path / "mine")
    write_csv(folder, split, lines)
    csv_file = os.path.join(folder, f"{split}.csv")
    with pytest.raises(DatasetError) as info:
        load(folder)
    assert str(info.value).startswith(f"{csv_file}, line {line_no}: {says}"), str(info.value)


@pytest.mark.parametrize("split", ["train", "query", "gallery"])
def test_empty_split(tmp_path, split):
    folder = make_csv_dir(tmp_path / "mine")
    write_csv(folder, split, ["path,pid,camid", "images/a_0.png,-1,0"])  # only junk
    with pytest.raises(DatasetError, match=f"the {split} split in {folder} is empty .*{split}.csv has a header "
                                           f"and no rows"):
        load(folder)


def test_error_ends_the_training_script_with_one_line(tmp_path):
    folder = make_csv_dir(tmp_path / "mine")
    write_csv(folder, "query", ["path,pid,camid", "images/q_0.png,twelve,0"])
    with pytest.raises(SystemExit) as info:
        train_net.main(["--config_file", TINY, "OUTPUT_DIR", str(tmp_path / "out"),
                        "DATASETS.NAMES", "csv", "DATASETS.CSV_DIR", folder])
    # '<script>: error: ' (the script's name is pytest's here); the one line names the file and line
    assert info.value.code.endswith(f": error: {os.path.join(folder, 'query.csv')}, line 2: pid must be an "
                                    f"integer >= 0 (or -1 for a junk image, skipped), got 'twelve'"), info.value.code


# ----------------------------------------------------------------------------- registering a dataset
def test_a_dataset_class_registered_in_a_test_needs_no_list(tmp_path, monkeypatch):
    """A ReIDDataset subclass registered here is a valid DATASETS.NAMES and loads through make_dataloader;
    the registry is restored afterwards (monkeypatch)."""
    monkeypatch.setattr(dataset_registry, "DATASET_REGISTRY", dict(dataset_registry.DATASET_REGISTRY))
    folder = make_csv_dir(tmp_path / "flat")
    # the config loads before the dataset is registered (registry names are checked when the data is built)
    cfg = tiny_cfg("DATASETS.NAMES", "flat_people", "DATASETS.ROOT_DIR", str(tmp_path),
                   "SOLVER.IMS_PER_BATCH", "4", "DATALOADER.NUM_INSTANCE", "2", "DATALOADER.NUM_WORKERS", "0")
    with pytest.raises(ConfigError, match=r"DATASETS.NAMES = \('flat_people',\): 'flat_people' is not one of"):
        make_dataloader(cfg)

    @datasets.register_dataset("flat_people")
    class FlatPeople(ReIDDataset):
        """The ROWS above, read from ROOT_DIR/flat (a dataset with its own layout)."""

        folder_names = ("flat",)

        def layout_problem(self, path):
            return None if os.path.isfile(os.path.join(path, "train.csv")) else "no train.csv"

        def load_splits(self, path):
            return tuple(read_csv_split(os.path.join(path, f"{split}.csv")) for split in ("train", "query", "gallery"))

    assert "flat_people" in datasets.dataset_names()
    loaders = make_dataloader(cfg)
    assert (loaders.num_classes, loaders.num_cams, loaders.num_query) == (2, 6, 2)
    assert build_dataset("flat_people", str(tmp_path), cfg).dataset_dir == folder
    monkeypatch.undo()
    assert "flat_people" not in datasets.dataset_names()


# ----------------------------------------------------------------------------- tools/make_csv.py and training
@pytest.fixture(scope="module")
def synthetic_csv(tmp_path_factory):
    """(data root, CSV folder) of the tiny synthetic dataset written by tools/make_csv.py."""
    from tools import make_csv

    root = tmp_path_factory.mktemp("data")
    out = make_csv.main(["--config_file", TINY, "DATASETS.ROOT_DIR", str(root)])
    return root, out


def test_make_csv_copies_the_configured_dataset(synthetic_csv):
    root, out = synthetic_csv
    assert out == os.path.join(str(root), "synthetic_csv")
    original = build_dataset("synthetic", str(root), load_cfg(TINY, ["DATASETS.ROOT_DIR", str(root)]))
    copy = build_dataset("csv", str(root), load_cfg(TINY, ["DATASETS.NAMES", "csv", "DATASETS.CSV_DIR", out]))
    for split in ("train", "query", "gallery"):
        assert [(os.path.realpath(r.path), r.pid, r.camid) for r in getattr(copy, split)] == \
            [(os.path.realpath(r.path), r.pid, r.camid) for r in getattr(original, split)], split
    assert copy.num_cams == original.num_cams and copy.num_train_pids == original.num_train_pids
    with open(os.path.join(out, "train.csv"), encoding="utf-8") as f:
        assert next(f).strip() == "path,pid,camid" and next(f).startswith("../synthetic/bounding_box_train/")


def test_make_csv_errors(tmp_path):
    from tools import make_csv

    with pytest.raises(SystemExit, match="make_csv.py: error: unknown dataset 'cuhk03'; known datasets: csv, "):
        make_csv.main(["--dataset", "cuhk03", "DATASETS.ROOT_DIR", str(tmp_path)])
    with pytest.raises(UsageError, match=r"DATASETS.NAMES = \['a', 'b'\] names 2 datasets: choose one with --dataset"):
        make_csv.configured_name(["a", "b"])
    assert make_csv.configured_name(("a",)) == "a"


def test_training_on_the_csv_copy(synthetic_csv, tmp_path):
    _, out = synthetic_csv
    summary = train_net.main(["--config_file", TINY, "DATASETS.NAMES", "csv", "DATASETS.CSV_DIR", out,
                              "OUTPUT_DIR", str(tmp_path / "run"), "SOLVER.MAX_EPOCHS", "2",
                              "SOLVER.EVAL_PERIOD", "2", "SOLVER.CHECKPOINT_PERIOD", "2"])
    assert len(summary["epochs"]) == 2 and all(np.isfinite(e["loss"]) for e in summary["epochs"])
    assert 0.0 <= summary["latest"]["mAP"] <= 1.0
    assert os.path.isfile(tmp_path / "run" / "model_best.pth")

