"""benchmarks/bench_train.py: the rows it builds, and a real run on the tiny config whose --json line holds
every row with positive figures (a few child processes of the tiny model: well under a minute on 2 cores)."""
import json
import os
import subprocess
import sys

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

import bench_train  # noqa: E402


def test_rows_baseline_each_lever_and_all():
    cpu = torch.device("cpu")
    rows = bench_train.build_rows(["grad_checkpoint", "compile", "bf16"], cpu)
    assert rows == {"baseline": [], "grad_checkpoint": ["grad_checkpoint"], "compile": ["compile"], "bf16": ["bf16"],
                    "all": ["grad_checkpoint", "compile", "bf16"]}
    assert bench_train.build_rows(["channels_last"], cpu) == {"baseline": [], "channels_last": ["channels_last"]}
    # one AMP mode in "all": bf16 where native, else fp16
    assert bench_train.amp_for_all(["fp16", "bf16"], cpu) == "bf16"
    assert bench_train.amp_for_all(["compile"], cpu) is None
    # the baseline turns every lever off, whatever a config file says; a row turns its own on after that
    opts = bench_train.row_opts(["compile"])
    assert opts[:len(bench_train.LEVERS_OFF)] == bench_train.LEVERS_OFF and opts[-2:] == ["MODEL.COMPILE", "True"]


def test_quick_run_json(tmp_path):
    cmd = [sys.executable, os.path.join(REPO, "benchmarks", "bench_train.py"), "--quick", "--levers",
           "channels_last", "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    report = json.loads(lines[-1])
    assert any(line.startswith("baseline ") for line in lines)  # the table
    assert set(report["rows"]) == {"baseline", "channels_last"}
    for name, row in report["rows"].items():
        assert "error" not in row, row
        for key in ("train_images_per_s", "train_peak_mib", "extract_images_per_s"):
            assert row[key] > 0 and row[key + "_ratio"] > 0, (name, key)
    assert report["rows"]["baseline"]["train_images_per_s_ratio"] == 1.0
    (evaluation,) = report["evaluate"]
    assert evaluation["dim"] == 64 and evaluation["seconds"] > 0 and 0 < evaluation["mAP"] <= 1
    assert report["setup"]["repeats"] == 1 and len(report["setup"]["load_before"]) == 3
    assert not os.listdir(tmp_path)  # no output folder, no TensorBoard files
