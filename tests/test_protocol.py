"""Dataset fingerprints, pretrained-file identification and the paper-protocol record (issue 17, items 1-3)."""
import hashlib
import logging
import os

import pytest

from configs import load_cfg
from datasets import build_dataset
from datasets.base import records_sha256
from test_datasets import MARKET_NAMES, MSMT_LISTS, make_market_tree, make_msmt_tree
from utils import protocol
from utils.protocol import pretrained_files, protocol_record, sha256_file


# ----------------------------------------------------------------------------- dataset fingerprint
def _by_hand(records, folder):
    lines = sorted(f"{os.path.relpath(r.path, folder)},{r.pid},{r.camid}\n" for r in records)
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def test_fingerprint_is_the_sha256_of_the_sorted_records(tmp_path):
    make_market_tree(tmp_path, "market1501", MARKET_NAMES)
    ds = build_dataset("market1501", str(tmp_path))
    fp = ds.fingerprint()
    for split in ("train", "query", "gallery"):
        records = getattr(ds, split)
        assert fp["splits"][split]["sha256"] == _by_hand(records, ds.dataset_dir)
        assert fp["splits"][split]["images"] == len(records)
        assert fp["splits"][split]["ids"] == len({r.pid for r in records})
        assert fp["splits"][split]["cameras"] == len({r.camid for r in records})
        assert records_sha256(list(reversed(records)), ds.dataset_dir) == fp["splits"][split]["sha256"]
    whole = "".join(fp["splits"][s]["sha256"] for s in ("train", "query", "gallery"))
    assert fp["fingerprint"] == hashlib.sha256(whole.encode()).hexdigest()


def test_fingerprint_does_not_depend_on_where_the_data_lie_but_on_every_label(tmp_path):
    make_market_tree(tmp_path / "a", "market1501", MARKET_NAMES)
    make_market_tree(tmp_path / "b", "Market-1501-v15.09.15", MARKET_NAMES)
    renamed = dict(MARKET_NAMES, query=["0003_c1s1_000001_00.jpg", "0005_c3s1_000002_00.jpg"])  # one camera
    make_market_tree(tmp_path / "c", "market1501", renamed)
    a, b, c = (build_dataset("market1501", str(tmp_path / x)).fingerprint() for x in "abc")
    assert a["fingerprint"] == b["fingerprint"]
    assert c["fingerprint"] != a["fingerprint"]
    assert c["splits"]["train"]["sha256"] == a["splits"]["train"]["sha256"]


def test_a_split_that_is_not_standard_says_so_in_one_warning(tmp_path, caplog):
    make_market_tree(tmp_path, "market1501", MARKET_NAMES)
    with caplog.at_level(logging.INFO, logger="datasets"):
        ds = build_dataset("market1501", str(tmp_path))
    assert ds.fingerprint()["standard_split"] is None
    lines = [r.getMessage() for r in caplog.records if "match no standard split" in r.getMessage()]
    assert len(lines) == 1 and "Market-1501 v15.09.15" in lines[0]


@pytest.mark.parametrize("folder, train_dir, test_dir, version", [("MSMT17_V1", "train", "test", "V1"),
                                                                   ("MSMT17_V2", "mask_train_v2", "mask_test_v2", "V2")])
def test_msmt17_version_is_named_when_the_counts_are_the_published_ones(tmp_path, monkeypatch, folder, train_dir,
                                                                        test_dir, version):
    make_msmt_tree(tmp_path, folder, train_dir, test_dir)
    from datasets.msmt17 import MSMT17
    monkeypatch.setattr(MSMT17, "published", {"train": {"ids": 3, "images": 4}, "query": {"images": 1},
                                              "gallery": {"images": 2}})
    fp = build_dataset("msmt17", str(tmp_path)).fingerprint()
    assert fp["standard_split"] == f"MSMT17 {version} (train + val merged)"
    assert len(MSMT_LISTS) == 4


def test_synthetic_split_is_its_generator(tmp_path):
    cfg = load_cfg("configs/Synthetic/tiny.yml", ["DATASETS.ROOT_DIR", str(tmp_path)])
    fp = build_dataset("synthetic", str(tmp_path), cfg).fingerprint()
    assert fp["standard_split"] == "synthetic (generated, seed 0)"
    assert fp["splits"]["train"]["images"] == 96


# ----------------------------------------------------------------------------- pretrained files
def _file(tmp_path, name, content=b"weights"):
    path = tmp_path / name
    path.write_bytes(content)
    return str(path), hashlib.sha256(content).hexdigest()


def test_pretrained_files_are_hashed_and_the_papers_file_recognised_by_content(tmp_path, monkeypatch, caplog):
    cnn, cnn_sha = _file(tmp_path, "renamed.pth", b"the paper's resnet")
    vit, vit_sha = _file(tmp_path, "jx_vit_base_p16_224-80ecf9dd.pth", b"an imagenet-1k vit")
    monkeypatch.setitem(protocol.PAPER_FILES, "resnet50", (cnn_sha[:8], "resnet50-0676ba61.pth"))
    cfg = load_cfg("", ["MODEL.CNN.PRETRAIN_PATH", cnn, "MODEL.TRANSFORMER.PRETRAIN_PATH", vit])
    with caplog.at_level(logging.WARNING, logger="utils.protocol"):
        files = pretrained_files(cfg)
    assert files["MODEL.CNN.PRETRAIN_PATH"]["sha256"] == cnn_sha == sha256_file(cnn)
    assert files["MODEL.CNN.PRETRAIN_PATH"]["paper_file"] is True
    vit_record = files["MODEL.TRANSFORMER.PRETRAIN_PATH"]
    assert vit_record["sha256"] == vit_sha and vit_record["paper_file"] is False  # the name is not the content
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "jx_vit_base_p16_224-80ecf9dd.pth" in warnings[0]


def test_torchvision_v2_resnet_is_named(tmp_path, monkeypatch):
    path, sha = _file(tmp_path, "resnet50-11ad3fa6.pth", b"v2")
    monkeypatch.setitem(protocol.OTHER_FILES, sha[:8], "torchvision's IMAGENET1K_V2 ResNet-50")
    files = pretrained_files(load_cfg("", ["MODEL.CNN.PRETRAIN_PATH", path, "MODEL.TRANSFORMER.NAME", ""]))
    note = files["MODEL.CNN.PRETRAIN_PATH"]["note"]
    assert "IMAGENET1K_V2" in note and "resnet50-0676ba61.pth" in note


# ----------------------------------------------------------------------------- protocol record
STANDARD = {"market1501": {"standard_split": "Market-1501 v15.09.15"}}


def _paper_pretrained():
    return {key: {"paper_file": True, "note": None}
            for key in ("MODEL.CNN.PRETRAIN_PATH", "MODEL.TRANSFORMER.PRETRAIN_PATH")}


def test_the_defaults_on_one_gpu_are_the_papers_protocol():
    record = protocol_record(load_cfg(), "fp16", "cuda", 1, STANDARD, _paper_pretrained())
    assert record == {"paper_protocol": True, "differences": []}


@pytest.mark.parametrize("opts, amp, device, world, datasets, words", [
    (["SOLVER.IMS_PER_BATCH", "64"], "fp16", "cuda", 1, STANDARD, "SOLVER.IMS_PER_BATCH is 64"),
    (["SOLVER.SCHEDULE", "paper_text"], "fp16", "cuda", 1, STANDARD, "SOLVER.SCHEDULE"),
    (["INPUT.SIZE_TRAIN", "[224, 112]", "INPUT.SIZE_TEST", "[224, 112]"], "fp16", "cuda", 1, STANDARD,
     "INPUT.SIZE_TRAIN"),
    ([], "bf16", "cuda", 1, STANDARD, "mixed precision is bf16"),
    ([], "off", "cpu", 1, STANDARD, "trained on cpu"),
    (["MODEL.TRIPLET_BATCH", "per_process"], "fp16", "cuda", 2, STANDARD, "mine triplets among their own"),
    ([], "fp16", "cuda", 1, {"msmt17": {"standard_split": "MSMT17 V2 (train + val merged)"}}, "MSMT17 V1"),
    ([], "fp16", "cuda", 1, {"csv": {"standard_split": None}}, "match no standard split"),
])
def test_each_difference_is_listed_in_words(opts, amp, device, world, datasets, words):
    record = protocol_record(load_cfg("", opts), amp, device, world, datasets, _paper_pretrained())
    assert not record["paper_protocol"]
    assert len(record["differences"]) == 1 and words in record["differences"][0], record["differences"]


def test_several_gpus_with_global_mining_and_sync_bn_are_the_papers_protocol():
    assert protocol_record(load_cfg(), "fp16", "cuda", 2, STANDARD, _paper_pretrained())["paper_protocol"]
    record = protocol_record(load_cfg("", ["MODEL.SYNC_BN", "False"]), "fp16", "cuda", 2, STANDARD,
                             _paper_pretrained())
    assert "BatchNorm" in " ".join(record["differences"])


def test_missing_or_other_pretrained_files_are_differences():
    pretrained = {"MODEL.CNN.PRETRAIN_PATH": {"paper_file": False, "note": "x.pth is torchvision's V2"}}
    record = protocol_record(load_cfg(), "fp16", "cuda", 1, STANDARD, pretrained)
    assert record["differences"] == ["MODEL.CNN.PRETRAIN_PATH: x.pth is torchvision's V2",
                                     "MODEL.TRANSFORMER.PRETRAIN_PATH is not set: that backbone starts from "
                                     "random weights"]
