"""The command-line scripts end bad inputs with one clear line on stderr and a non-zero exit code."""
import os
import subprocess
import sys

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(REPO, "configs", "Synthetic", "tiny.yml")


def run_script(script, *args):
    proc = subprocess.run([sys.executable, os.path.join(REPO, script), *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    return proc.returncode, proc.stderr


def assert_clean_failure(rc, stderr, *needles):
    assert rc != 0
    assert "Traceback" not in stderr, stderr
    last = stderr.strip().splitlines()[-1]
    for needle in needles:
        assert needle in last, (needle, last)


def test_missing_weight_file(tmp_path):
    missing = tmp_path / "no_such_model.pth"
    rc, err = run_script("test_net.py", "--config_file", TINY, "OUTPUT_DIR", str(tmp_path / "out"),
                         "DATASETS.ROOT_DIR", str(tmp_path / "data"), "TEST.WEIGHT", str(missing))
    assert_clean_failure(rc, err, "TEST.WEIGHT", str(missing))


def test_checkpoint_of_another_architecture(tmp_path):
    from configs import load_cfg
    from model import build_model

    other = build_model(load_cfg(TINY, ["MODEL.FUSION.DIM", "64", "MODEL.PRETRAIN_CHOICE", "none"]), 16, 2)
    weight = tmp_path / "other.pth"
    torch.save({"model": other.state_dict(), "epoch": 1}, weight)
    rc, err = run_script("test_net.py", "--config_file", TINY, "OUTPUT_DIR", str(tmp_path / "out"),
                         "DATASETS.ROOT_DIR", str(tmp_path / "data"), "TEST.WEIGHT", str(weight))
    assert_clean_failure(rc, err, "TEST.WEIGHT", str(weight), "64")


@pytest.mark.parametrize("script", ["train_net.py", "test_net.py"])
def test_bad_config(tmp_path, script):
    rc, err = run_script(script, "--config_file", TINY, "OUTPUT_DIR", str(tmp_path), "MODEL.NO_SUCH_KEY", "1")
    assert_clean_failure(rc, err, "MODEL.NO_SUCH_KEY")
    rc, err = run_script(script, "--config_file", str(tmp_path / "missing.yml"))
    assert_clean_failure(rc, err, "missing.yml")


def test_dataset_error(tmp_path):
    rc, err = run_script("train_net.py", "--config_file", TINY, "OUTPUT_DIR", str(tmp_path / "out"),
                         "DATASETS.NAMES", "market1501", "DATASETS.ROOT_DIR", str(tmp_path / "empty"))
    assert_clean_failure(rc, err, str(tmp_path / "empty"))
