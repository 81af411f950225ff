"""Dataset layouts, relabelling, statistics logging and the errors of bad input."""
import logging
import os
import re

import cv2
import numpy as np
import pytest

import datasets
from datasets import DatasetError, build_dataset


def write_jpeg(path, value=128):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image = np.full((8, 4, 3), value, np.uint8)
    ok, buf = cv2.imencode(".jpg", image)
    assert ok
    buf.tofile(path)


def make_market_tree(root, folder, names):
    """names: split folder -> list of file names."""
    base = os.path.join(root, folder)
    for split, files in names.items():
        os.makedirs(os.path.join(base, split), exist_ok=True)
        for name in files:
            write_jpeg(os.path.join(base, split, name))
    return base


MARKET_NAMES = {
    "bounding_box_train": ["0002_c1s1_000451_03.jpg", "0002_c2s1_000551_01.jpg", "0007_c3s3_077419_03.jpg",
                           "0010_c6s4_002452_02.jpg", "0010_c1s1_002452_02.jpg", "-1_c1s1_000001_00.jpg"],
    "query": ["0003_c1s1_000001_00.jpg", "0005_c4s1_000002_00.jpg"],
    "bounding_box_test": ["0003_c2s1_000005_01.jpg", "0005_c5s1_000004_01.jpg", "0000_c1s1_000003_01.jpg",
                          "-1_c3s1_000005_01.jpg"],
}
DUKE_NAMES = {
    "bounding_box_train": ["0001_c2_f0046182.jpg", "0001_c5_f0051341.jpg", "0008_c8_f0016240.jpg"],
    "query": ["0005_c2_f0046985.jpg"],
    "bounding_box_test": ["0005_c7_f0047230.jpg", "0019_c1_f0057432.jpg"],
}


@pytest.mark.parametrize("folder", ["Market-1501-v15.09.15", "market1501"])
def test_market_layout(tmp_path, folder):
    make_market_tree(tmp_path, folder, MARKET_NAMES)
    ds = build_dataset("market1501", str(tmp_path))
    assert ds.dataset_dir == os.path.join(str(tmp_path), folder)
    # junk -1 dropped, pids relabelled 2,7,10 -> 0,1,2, cameras 0-based
    assert sorted((os.path.basename(r.path), r.pid, r.camid) for r in ds.train) == [
        ("0002_c1s1_000451_03.jpg", 0, 0), ("0002_c2s1_000551_01.jpg", 0, 1), ("0007_c3s3_077419_03.jpg", 1, 2),
        ("0010_c1s1_002452_02.jpg", 2, 0), ("0010_c6s4_002452_02.jpg", 2, 5)]
    assert ds.num_train_pids == 3 and ds.num_train_cams == 4 and ds.num_cams == 6
    assert sorted((r.pid, r.camid) for r in ds.query) == [(3, 0), (5, 3)]
    # distractors (0000) kept in the gallery with their own pid, junk dropped
    assert sorted((r.pid, r.camid) for r in ds.gallery) == [(0, 0), (3, 1), (5, 4)]
    assert all(len(r) >= 3 and os.path.isfile(r[0]) for r in ds.train + ds.query + ds.gallery)


@pytest.mark.parametrize("folder", ["DukeMTMC-reID", "dukemtmcreid"])
def test_duke_layout(tmp_path, folder):
    make_market_tree(tmp_path, folder, DUKE_NAMES)
    ds = build_dataset("dukemtmcreid", str(tmp_path))
    assert sorted((r.pid, r.camid) for r in ds.train) == [(0, 1), (0, 4), (1, 7)]
    assert [(r.pid, r.camid) for r in ds.query] == [(5, 1)]
    assert sorted((r.pid, r.camid) for r in ds.gallery) == [(5, 6), (19, 0)]
    assert ds.num_cams == 8


def test_dataset_root_may_be_the_dataset_folder_itself(tmp_path):
    base = make_market_tree(tmp_path, "anything", MARKET_NAMES)
    assert len(build_dataset("market1501", base).train) == 5


MSMT_LISTS = {
    "list_train.txt": ["0000/0000_000_01_0303morning_0015_0.jpg 0", "0000/0000_001_05_0303morning_0016_0.jpg 0",
                       "0002/0002_000_15_0303noon_0100_1.jpg 2"],
    "list_val.txt": ["0001/0001_000_03_0303morning_0020_0.jpg 1"],
    "list_query.txt": ["0000/0000_000_07_0303morning_0015_0.jpg 0"],
    "list_gallery.txt": ["0000/0000_004_02_0303morning_0030_0.jpg 0", "0003/0003_004_11_0303morning_0030_0.jpg 3"],
}


def make_msmt_tree(root, folder, train_dir, test_dir):
    base = os.path.join(root, folder)
    for list_name, lines in MSMT_LISTS.items():
        image_dir = train_dir if list_name in ("list_train.txt", "list_val.txt") else test_dir
        for line in lines:
            write_jpeg(os.path.join(base, image_dir, line.split()[0]))
        os.makedirs(base, exist_ok=True)
        with open(os.path.join(base, list_name), "w") as f:
            f.write("\n".join(lines) + "\n")
    return base


@pytest.mark.parametrize("folder, train_dir, test_dir", [
    ("MSMT17_V1", "train", "test"), ("MSMT17_V2", "mask_train_v2", "mask_test_v2"),
    ("msmt17", "train", "test"), ("msmt17", "mask_train_v2", "mask_test_v2")])
def test_msmt_layouts(tmp_path, folder, train_dir, test_dir):
    base = make_msmt_tree(tmp_path, folder, train_dir, test_dir)
    ds = build_dataset("msmt17", str(tmp_path))
    # train = train + val lists, pids 0,1,2 relabelled in sorted order, camera = third field - 1
    assert sorted((r.pid, r.camid) for r in ds.train) == [(0, 0), (0, 4), (1, 2), (2, 14)]
    assert all(r.path.startswith(os.path.join(base, train_dir)) for r in ds.train)
    assert [(r.pid, r.camid) for r in ds.query] == [(0, 6)]
    assert sorted((r.pid, r.camid) for r in ds.gallery) == [(0, 1), (3, 10)]
    assert all(r.path.startswith(os.path.join(base, test_dir)) and os.path.isfile(r.path) for r in ds.gallery)
    assert ds.num_train_pids == 3 and ds.num_cams == 15


def test_relabelling_is_sorted_and_dense(tmp_path):
    names = dict(MARKET_NAMES, bounding_box_train=[f"{pid:04d}_c1s1_000001_00.jpg" for pid in (900, 12, 345, 77)])
    make_market_tree(tmp_path, "market1501", names)
    ds = build_dataset("market1501", str(tmp_path))
    label_of = {int(os.path.basename(r.path)[:4]): r.pid for r in ds.train}
    assert label_of == {12: 0, 77: 1, 345: 2, 900: 3}


def test_statistics_table_and_published_count_warnings(tmp_path, caplog):
    make_market_tree(tmp_path, "market1501", MARKET_NAMES)
    with caplog.at_level(logging.INFO, logger="datasets"):
        build_dataset("market1501", str(tmp_path))
    records = [r for r in caplog.records if r.name.startswith("datasets.")]
    table = next(r.getMessage() for r in records if r.levelno == logging.INFO and "split" in r.getMessage())
    assert re.search(r"train\s*\|\s*3\s*\|\s*5\s*\|\s*4\b", table)       # ids | images | cameras
    assert re.search(r"query\s*\|\s*2\s*\|\s*2\s*\|\s*2\b", table)
    assert re.search(r"gallery\s*\|\s*3\s*\|\s*3\s*\|\s*3\b", table)
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert any("train split has 3 ids, the published count is 751" in w for w in warnings)
    assert any("gallery split has 3 images, the published count is 15913" in w for w in warnings)


def test_paths_with_spaces_and_non_ascii(tmp_path):
    root = tmp_path / "my data ü 数据"
    make_market_tree(root, "Market-1501-v15.09.15", MARKET_NAMES)
    ds = build_dataset("market1501", str(root))
    for decoder in ("cv2", "pil"):
        image = datasets.read_image(ds.train[0].path, decoder)
        assert image.size == (4, 8) and image.mode == "RGB"


# ------------------------------------------------------------------------------------------ bad input
def test_unknown_name_lists_known_names(tmp_path):
    known = datasets.dataset_names()  # the registry (every test over dataset names reads it, none keeps a list)
    assert len(known) > 1 and "cuhk03" not in known
    with pytest.raises(DatasetError) as e:
        build_dataset("cuhk03", str(tmp_path))
    assert str(e.value) == f"unknown dataset 'cuhk03'; known datasets: {', '.join(known)}"


def test_missing_root():
    with pytest.raises(DatasetError, match="dataset root '/no/such/folder' does not exist"):
        build_dataset("market1501", "/no/such/folder")


def test_wrong_layout_shows_expected_tree(tmp_path):
    os.makedirs(tmp_path / "Market-1501-v15.09.15" / "query")
    with pytest.raises(DatasetError) as info:
        build_dataset("market1501", str(tmp_path))
    message = str(info.value)
    assert "missing folder(s) bounding_box_train, bounding_box_test" in message
    assert "Expected layout" in message and "bounding_box_train/" in message and "0002_c1s1_000451_03.jpg" in message


def test_wrong_msmt_layout(tmp_path):
    os.makedirs(tmp_path / "MSMT17_V1" / "train")
    with pytest.raises(DatasetError) as info:
        build_dataset("msmt17", str(tmp_path))
    assert "list_query.txt" in str(info.value) and "mask_train_v2" in str(info.value)


def test_malformed_msmt_list_line(tmp_path):
    base = make_msmt_tree(tmp_path, "MSMT17_V1", "train", "test")
    with open(os.path.join(base, "list_query.txt"), "a") as f:
        f.write("0000/broken.jpg\n")
    with pytest.raises(DatasetError, match=r"list_query.txt, line 2: expected '<relative path> <pid>'"):
        build_dataset("msmt17", str(tmp_path))


def test_msmt_list_pointing_at_missing_images(tmp_path):
    base = make_msmt_tree(tmp_path, "MSMT17_V2", "mask_train_v2", "mask_test_v2")
    os.rename(os.path.join(base, "mask_test_v2", "0000"), os.path.join(base, "mask_test_v2", "moved"))
    with pytest.raises(DatasetError, match="list_query.txt names .*0000_000_07.* which does not exist"):
        build_dataset("msmt17", str(tmp_path))


def test_empty_split(tmp_path):
    make_market_tree(tmp_path, "market1501", dict(MARKET_NAMES, query=[]))
    with pytest.raises(DatasetError, match=r"the query split in .*market1501 is empty .*in query/"):
        build_dataset("market1501", str(tmp_path))


def test_corrupt_image_names_the_file(tmp_path):
    make_market_tree(tmp_path, "market1501", MARKET_NAMES)
    ds = build_dataset("market1501", str(tmp_path))
    bad = ds.train[0].path
    with open(bad, "wb") as f:
        f.write(b"not a jpeg")
    for decoder in ("cv2", "pil"):
        with pytest.raises(DatasetError, match=f"cannot read image {bad}"):
            datasets.read_image(bad, decoder)
    with pytest.raises(DatasetError, match=f"cannot read image {bad}.*SKIP_CORRUPT"):
        datasets.ImageDataset(ds.train)[0]


def test_skip_corrupt_uses_another_image_of_the_same_pid(tmp_path, caplog):
    make_market_tree(tmp_path, "market1501", MARKET_NAMES)
    ds = build_dataset("market1501", str(tmp_path))
    records = sorted(ds.train)
    bad, good = records[0].path, records[1].path
    assert records[0].pid == records[1].pid
    open(bad, "wb").close()
    dataset = datasets.ImageDataset(records, skip_corrupt=True)
    with caplog.at_level(logging.WARNING, logger="datasets"):
        image, pid, camid, index = dataset[0]
    assert (pid, camid, index) == (records[0].pid, records[0].camid, 0) and image.size == (4, 8)
    assert any(bad in r.getMessage() and good in r.getMessage() for r in caplog.records)
    # the only image of an identity cannot be replaced
    only = next(i for i, r in enumerate(records) if sum(s.pid == r.pid for s in records) == 1)
    open(records[only].path, "wb").close()
    with pytest.raises(DatasetError, match="no other readable image of pid"):
        dataset[only]
