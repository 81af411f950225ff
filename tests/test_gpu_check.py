"""benchmarks/gpu_check.py: the ``--device cpu --quick`` run end to end (the tiny model; bench_memory's prediction
read from its own --json output; seconds), the JSON report's structure and the rows guarded by time budgets."""
import json
import os
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks import gpu_check  # noqa: E402

SCRIPT = os.path.join(REPO, "benchmarks", "gpu_check.py")
CUDA_ROWS = {"train fp16", "train fp16 +ckpt", "nccl"}
RUN_ROWS = {"train fp32", "train fp32 +ckpt", "train bf16", "train bf16 +ckpt", "extract", "evaluate"}


def test_quick_cpu_run_json(tmp_path):
    mem = tmp_path / "mem.txt"
    cmd = [sys.executable, os.path.join(REPO, "benchmarks", "bench_memory.py"), "--quick", "--rows", "baseline",
           "grad_checkpoint", "--batches", "4", "8", "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    mem.write_text(done.stdout)
    out = tmp_path / "report" / "gpu.json"
    cmd = [sys.executable, SCRIPT, "--device", "cpu", "--quick", "--memory-prediction", str(mem), "--json", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()  # the log, then the table
    head = [line for line in lines if line.startswith("gpu_check: ")]
    assert len(head) == 1 and head[0].startswith("gpu_check: resnet18 + vit_tiny_patch16_224, D=48")
    assert "repository default training: AMP off" in head[0]
    assert any(line.startswith("train fp16 ") and "skipped: no CUDA" in line for line in lines)  # the table
    report = json.loads(out.read_text())
    assert set(report) == {"setup", "rows", "wall_s"} and 0 < report["wall_s"] < report["setup"]["budget_s"]
    setup, rows = report["setup"], report["rows"]
    assert list(rows) == list(gpu_check.CHECKS)
    assert (setup["device"], setup["batch"], setup["iters"], setup["warmup"]) == ("cpu", 8, 1, 1)
    # the repository's defaults on a CPU: SOLVER.AMP 'auto' is float32 there, no checkpointing
    assert (setup["default_solver_amp"], setup["default_amp"], setup["default_grad_checkpoint"]) == ("auto", "off",
                                                                                                     False)
    for name, row in rows.items():
        assert "status" in row and row["seconds"] >= 0, name
        if name in CUDA_ROWS:
            assert row["status"] == "skipped: no CUDA", name
        elif name in RUN_ROWS:
            assert row["status"] == "ok", (name, row["status"])
            assert row["budget_s"] > 0
        else:
            assert row["status"].startswith("skipped: --quick on a CPU"), name
    assert [n for n, r in rows.items() if r.get("default")] == ["train fp32"]
    mem_rows = json.loads(mem.read_text().strip().splitlines()[-1])["rows"]
    for name in ("train fp32", "train fp32 +ckpt", "train bf16", "train bf16 +ckpt"):
        row = rows[name]
        assert row["train_images_per_s"] > 0 and row["extract_images_per_s"] > 0 and row["train_peak_gib"] > 0
        assert row["amp"] == ("bf16" if "bf16" in name else "off") and row["grad_scaler"] is False
        if "fp32" in name:  # bench_memory's line of the op of its batch-128 peak, at batch 8
            predicted = mem_rows["grad_checkpoint" if "ckpt" in name else "baseline"]
            assert row["predicted_peak_gib"] == pytest.approx(
                (predicted["constant_mib"] + 8 * predicted["slope_mib_per_image"]) / 1024)
        else:  # bench_memory was not asked for its bf16 rows
            assert "predicted_peak_gib" not in row
    extract, evaluate = rows["extract"], rows["evaluate"]
    assert extract["images_per_s"] > 0 and extract["batch"] == 32 and extract["dim"] == setup["feature_dim"] == 896
    assert (evaluate["num_query"], evaluate["num_gallery"], evaluate["dim"]) == (200, 1000, 896)
    assert 0 < evaluate["mAP"] <= 1 and evaluate["evaluate_s"] > 0
    assert sorted(os.listdir(tmp_path)) == ["mem.txt", "report"]  # no output folder, no TensorBoard files


def test_rows_are_guarded():
    cpu = gpu_check.torch.device("cpu")
    far = time.monotonic() + 100

    def boom():
        raise ValueError("boom\nsecond line")

    failed = gpu_check.run_guarded(boom, 10, far, cpu)
    assert failed["status"] == "failed: ValueError: boom" and failed["budget_s"] == 10
    slow = gpu_check.run_guarded(lambda: time.sleep(5) or {}, 0.3, far, cpu)
    assert slow["status"] == "timeout: over its time budget of 0 s" and slow["seconds"] < 2
    assert gpu_check.run_guarded(lambda: {"x": 1}, 10, far, cpu) == {"x": 1, "status": "ok", "seconds": pytest.approx(
        0, abs=1), "budget_s": 10}
    late = gpu_check.run_guarded(lambda: {"x": 1}, 10, time.monotonic() + 1, cpu)
    assert late["status"].startswith("skipped: out of time")


def test_memory_prediction_rows():
    predictions = {"setup": {"model": "m"}, "rows": {
        "bf16": {"peak_at_128_gib": 30.0, "constant_mib": 1024.0, "slope_mib_per_image": 10.0},
        "grad_checkpoint+bf16": {"peak_at_128_gib": 12.0, "constant_mib": 1024.0, "slope_mib_per_image": 2.0}}}
    fp16 = gpu_check.memory_prediction(predictions, ["fp16"], 128, "m")
    assert (fp16["predicted_peak_gib"], fp16["predicted_row"]) == (30.0, "bf16")
    assert fp16["prediction_notes"] == ["predicted by bench_memory's bf16 row"]
    both = gpu_check.memory_prediction(predictions, ["grad_checkpoint", "bf16"], 64, "other")
    assert both["predicted_peak_gib"] == pytest.approx((1024 + 64 * 2) / 1024) and len(both["prediction_notes"]) == 2
    assert gpu_check.memory_prediction(predictions, [], 128, "m") == {}
    assert gpu_check.memory_prediction(None, ["bf16"], 128, "m") == {}
