"""End-to-end training on a tiny generated dataset (CPU): learning, output files, exact resume,
test_net agreement, non-finite loss handling.

One short training run (module fixture) is shared by the tests; each further test trains at most a
few more epochs of the tiny config (configs/Synthetic/tiny.yml).
"""
import json
import os
import platform
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch

import test_net
import train_net

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(REPO, "configs", "Synthetic", "tiny.yml")
EPOCHS = 8
RESUME_AFTER = 4  # a checkpoint epoch of the tiny config (CHECKPOINT_PERIOD 4)


def tiny_args(data_root, output_dir, *opts):
    """Command-line arguments of a tiny run writing into ``output_dir``."""
    return ["--config_file", TINY, "DATASETS.ROOT_DIR", str(data_root), "OUTPUT_DIR", str(output_dir),
            "SOLVER.MAX_EPOCHS", str(EPOCHS), *opts]


def load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def copy_checkpoint(src_dir, dst_dir, epoch):
    """A fresh output folder holding only the checkpoint of ``epoch`` (as after a stopped run)."""
    os.makedirs(dst_dir, exist_ok=True)
    name = f"checkpoint_epoch{epoch}.pth"
    shutil.copy(os.path.join(src_dir, name), os.path.join(dst_dir, name))
    with open(os.path.join(dst_dir, "last_checkpoint"), "w", encoding="utf-8") as f:
        f.write(name + "\n")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_root):
    """(output folder, summary) of one uninterrupted tiny training run."""
    out = tmp_path_factory.mktemp("run")
    summary = train_net.main(tiny_args(data_root, out))
    return out, summary


def test_training_learns_and_writes_outputs(trained):
    out, summary = trained
    losses = [e["loss"] for e in summary["epochs"]]
    assert len(losses) == EPOCHS and losses[-1] < losses[0], losses
    assert summary["latest"]["mAP"] > summary["untrained"]["mAP"] + 0.05, (summary["untrained"], summary["latest"])

    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"latest", "best", "provenance"}
    metric_keys = ("mAP", "rank1", "rank5", "rank10", "mINP")
    for entry in (results["latest"], results["best"]):
        assert set(entry) == {*metric_keys, "epoch", "per_dataset"}
        assert all(0.0 <= entry[k] <= 1.0 for k in metric_keys)
        assert entry["per_dataset"] == {"synthetic": {k: entry[k] for k in metric_keys}}  # the one test set
    assert results["latest"]["epoch"] == EPOCHS
    assert results["best"]["mAP"] >= results["latest"]["mAP"]

    assert (out / "last_checkpoint").read_text().strip() == f"checkpoint_epoch{EPOCHS}.pth"
    ckpt = load(out / f"checkpoint_epoch{EPOCHS}.pth")
    assert {"model", "optimizer", "scheduler", "scaler", "epoch", "rng", "config"} <= set(ckpt)
    assert ckpt["epoch"] == EPOCHS and not any(k.startswith("module.") for k in ckpt["model"])
    assert "SOLVER" in ckpt["config"]
    best = load(out / "model_best.pth")
    assert best["epoch"] == results["best"]["epoch"]

    assert f"MAX_EPOCHS: {EPOCHS}" in (out / "config.yaml").read_text()
    log = (out / "train.log").read_text()
    assert "validation, untrained model" in log and f"epoch {EPOCHS}/{EPOCHS}" in log
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(out))


PROVENANCE_FIELDS = {"command", "git_commit", "git_dirty", "versions", "device", "device_name", "amp", "world_size",
                     "started", "wall_time_s"}


def check_provenance(record, command, trains=True):
    """The fields and types of a provenance record (utils/provenance.py) of a CPU run of ``command``."""
    import timm
    import torchvision

    assert set(record) == PROVENANCE_FIELDS | ({"pretrained", "protocol", "datasets"} if trains else
                                               {"datasets", "weight"})
    assert record["command"] == command
    assert record["versions"] == {"python": platform.python_version(), "torch": torch.__version__,
                                  "torchvision": torchvision.__version__, "timm": timm.__version__}
    assert record["device"] == "cpu" and record["amp"] == "off" and record["world_size"] == 1
    assert record["device_name"] is None or isinstance(record["device_name"], str)
    commit, dirty = record["git_commit"], record["git_dirty"]
    if commit is None:
        assert dirty is None
    else:
        assert re.fullmatch(r"[0-9a-f]{40}", commit) and isinstance(dirty, bool)
        # a commit of this repository (not compared with HEAD: others may commit while the tests run)
        subprocess.run(["git", "cat-file", "-e", commit + "^{commit}"], cwd=REPO, check=True)
    times = record["wall_time_s"]
    assert set(times) == {"train", "eval_last", "eval_total"}
    assert isinstance(times["eval_last"], float) and 0 < times["eval_last"] <= times["eval_total"]
    if trains:
        assert isinstance(times["train"], float) and times["train"] > 0
    else:
        assert times["train"] is None


def test_results_and_checkpoints_record_provenance(trained, data_root):
    out, _ = trained
    command = [train_net.__file__] + tiny_args(data_root, out)  # train_net.main(argv): its file + argv
    results = json.loads((out / "results.json").read_text())
    check_provenance(results["provenance"], command)
    last, middle, best = (load(out / name)["provenance"] for name in  # all load with weights_only=True
                          (f"checkpoint_epoch{EPOCHS}.pth", f"checkpoint_epoch{RESUME_AFTER}.pth", "model_best.pth"))
    for record in (last, middle, best):
        check_provenance(record, command)
    # results.json is written by the last evaluation, the last checkpoint right after it: same times
    assert last["wall_time_s"] == results["provenance"]["wall_time_s"]
    assert middle["wall_time_s"]["train"] < last["wall_time_s"]["train"]
    # five evaluations (the untrained model, epochs 2, 4, 6, 8): the total is more than the last one
    assert last["wall_time_s"]["eval_total"] > last["wall_time_s"]["eval_last"]
    assert middle["started"] == last["started"] == results["provenance"]["started"]


def test_resume_gives_identical_weights(trained, data_root, tmp_path):
    out, _ = trained
    resumed = tmp_path / "resumed"
    copy_checkpoint(out, resumed, RESUME_AFTER)
    summary = train_net.main(tiny_args(data_root, resumed) + ["--resume"])
    assert [e["epoch"] for e in summary["epochs"]] == list(range(RESUME_AFTER + 1, EPOCHS + 1))
    straight = load(out / f"checkpoint_epoch{EPOCHS}.pth")
    again = load(resumed / f"checkpoint_epoch{EPOCHS}.pth")
    assert straight["model"].keys() == again["model"].keys()
    for key, value in straight["model"].items():
        assert torch.equal(value, again["model"][key]), key
    for key, state in straight["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(again["optimizer"]["state"][key][name]))
    assert json.loads((resumed / "results.json").read_text())["latest"] == \
        json.loads((out / "results.json").read_text())["latest"]
    assert "resumed from" in (resumed / "train.log").read_text()
    # the provenance of the resumed run: its own command line, training time carried over from the checkpoint
    record = again["provenance"]
    check_provenance(record, [train_net.__file__] + tiny_args(data_root, resumed) + ["--resume"])
    before = load(resumed / f"checkpoint_epoch{RESUME_AFTER}.pth")["provenance"]["wall_time_s"]
    assert record["wall_time_s"]["train"] > before["train"] and record["wall_time_s"]["eval_total"] > \
        before["eval_total"]


def test_provenance_has_datasets_pretrained_files_and_protocol(trained, data_root, tmp_path):
    """results.json says which data were read (issue 17): the fingerprint recomputed from the dataset, the
    pretrained files (none here) and why the tiny run is not the paper's protocol; test_results.json the same
    fingerprint and the evaluated weight's SHA-256."""
    from configs import load_cfg
    from datasets import build_dataset
    from utils.protocol import sha256_file

    out, _ = trained
    provenance = json.loads((out / "results.json").read_text())["provenance"]
    cfg = load_cfg(TINY, ["DATASETS.ROOT_DIR", str(data_root)])
    expected = build_dataset("synthetic", str(data_root), cfg).fingerprint()
    assert provenance["datasets"] == {"synthetic": expected}
    assert expected["standard_split"] == "synthetic (generated, seed 0)"
    assert provenance["pretrained"] == {}
    protocol = provenance["protocol"]
    assert protocol["paper_protocol"] is False
    text = " ".join(protocol["differences"])
    for words in ("SOLVER.OPTIMIZER_NAME is 'AdamW'", "trained on cpu", "MODEL.PRETRAIN_CHOICE is 'none'",
                  "INPUT.SIZE_TRAIN is [64, 32]"):
        assert words in text, words
    weight = out / "model_best.pth"
    test_net.main(tiny_args(data_root, tmp_path / "t", "TEST.WEIGHT", str(weight)))
    tested = json.loads((tmp_path / "t" / "test_results.json").read_text())["provenance"]
    assert tested["datasets"] == {"synthetic": expected}
    assert tested["weight"]["sha256"] == sha256_file(str(weight))


def test_test_net_reproduces_final_evaluation(trained, data_root, tmp_path):
    out, _ = trained
    final = json.loads((out / "results.json").read_text())["latest"]
    weight = out / f"checkpoint_epoch{EPOCHS}.pth"
    bare = tmp_path / "bare.pth"  # a bare state dict, as other tools save it
    torch.save(load(weight)["model"], bare)
    for i, path in enumerate((weight, bare)):
        test_out = tmp_path / f"test{i}"
        feats = tmp_path / f"feats{i}.npz"
        args = tiny_args(data_root, test_out, "TEST.WEIGHT", str(path)) + ["--save-features", str(feats)]
        metrics = test_net.main(args)
        written = json.loads((test_out / "test_results.json").read_text())
        check_provenance(written["provenance"], [test_net.__file__] + args, trains=False)
        for key in ("mAP", "rank1", "rank5", "rank10", "mINP"):
            assert written[key] == pytest.approx(final[key], abs=1e-9), key
            assert metrics[key] == written[key]
        saved = np.load(feats)
        assert saved["query_feats"].shape[0] == saved["query_pids"].shape[0] == saved["query_camids"].shape[0]
        assert saved["gallery_feats"].shape[1] == saved["query_feats"].shape[1]


def test_non_finite_loss_stops_and_keeps_last_checkpoint(trained, data_root, tmp_path, monkeypatch):
    out, _ = trained
    run = tmp_path / "nan"
    copy_checkpoint(out, run, RESUME_AFTER)
    from loss import build_loss as real_build
    from processor import Builders

    def build_nan_loss(cfg, num_classes):
        fn, calls = real_build(cfg, num_classes), [0]

        def nan_at_second_step(outputs, pids):
            calls[0] += 1
            total, terms = fn(outputs, pids)
            return (total * float("nan") if calls[0] == 2 else total), terms
        return nan_at_second_step

    with pytest.raises(SystemExit) as info:
        train_net.main(tiny_args(data_root, run) + ["--resume"], builders=Builders(loss=build_nan_loss))
    message = str(info.value.code)
    assert "non-finite training loss" in message and f"epoch {RESUME_AFTER + 1}, iteration 2/" in message
    assert sorted(n for n in os.listdir(run) if n.endswith(".pth")) == [f"checkpoint_epoch{RESUME_AFTER}.pth"]
    assert (run / "last_checkpoint").read_text().strip() == f"checkpoint_epoch{RESUME_AFTER}.pth"
    assert "non-finite training loss" in (run / "train.log").read_text()
