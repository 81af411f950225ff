"""benchmarks/bench_train.py: the rows it builds, and a real run on the tiny config whose --json line holds
every row with positive figures (a few child processes of the tiny model: well under a minute on 2 cores);
benchmarks/bench_memory.py on the tiny config (seconds)."""
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


def test_memory_quick_run_json(tmp_path):
    """benchmarks/bench_memory.py on the tiny model: facts a wrong counter would break (seconds)."""
    cmd = [sys.executable, os.path.join(REPO, "benchmarks", "bench_memory.py"), "--quick", "--rows", "baseline",
           "grad_checkpoint", "--batches", "4", "16", "--calibrate", "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    report = json.loads(lines[-1])
    assert any(line.startswith("grad_checkpoint ") for line in lines)  # the table
    rows = report["rows"]
    assert set(rows) == {"baseline", "grad_checkpoint"}
    for row in rows.values():
        # the forward + backward peak grows with the batch; a step's peak holds what was live at its start
        assert 0 < row["train_peaks_mib"]["4"] < row["train_peaks_mib"]["16"]
        assert row["peaks_mib"]["4"] >= row["state_mib"]
        # parameters, gradients and the AdamW state (two tensors per trained parameter) are counted
        assert row["params_mib"] == row["params"] * 4 / 2 ** 20
        assert row["grads_mib"] > 0.99 * row["params_mib"] and row["optimizer_mib"] > 1.99 * row["params_mib"]
        assert row["params_mib"] + row["grads_mib"] + row["optimizer_mib"] <= row["state_mib"]
        assert row["state_mib"] < 1.05 * (row["params_mib"] + row["grads_mib"] + row["optimizer_mib"])
        assert row["max_batch"]["24"] < row["max_batch"]["40"] < row["max_batch"]["80"]
        assert row["max_batch"]["24"] % 4 == 0
    # checkpointing stores fewer activations per image (slopes from the aligned timelines of both steps)
    assert rows["baseline"]["timeline"] and rows["grad_checkpoint"]["timeline"]
    assert 0 < rows["grad_checkpoint"]["slope_mib_per_image"] < 0.5 * rows["baseline"]["slope_mib_per_image"]
    assert rows["grad_checkpoint"]["peak_at_128_gib"] < rows["baseline"]["peak_at_128_gib"]
    calibration = report["calibration"]
    assert abs(calibration["peak_delta_mib"] - calibration["extra_mib"]) <= 1
    assert calibration["checkpoint_grads_equal"]
    assert calibration["checkpoint_peak_kib"] < calibration["plain_peak_kib"]
    assert not os.listdir(tmp_path)
