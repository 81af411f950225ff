"""Smoke runs: SOLVER.MAX_EPOCHS 1 and 2 work with every shipped YAML.

A warm-up that does not fit the run is, under SOLVER.SCHEDULE paper_text, clipped to MAX_EPOCHS - 1 epochs with
one warning (solver.scheduler.warmup_epochs); under release it is kept (as the released code runs it) with one
warning; evaluation and the checkpoint still happen at the last epoch when EVAL_PERIOD / CHECKPOINT_PERIOD are
longer than the run.
"""
import glob
import json
import logging
import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

from configs import load_cfg
from solver import build_optimizer, build_scheduler, epoch_lr, start_epoch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
YAMLS = sorted(glob.glob(os.path.join(REPO, "configs", "**", "*.yml"), recursive=True))
QUICKSTART = os.path.join(REPO, "configs", "Synthetic", "quickstart.yml")


def test_every_yaml_is_found():
    assert QUICKSTART in YAMLS and len(YAMLS) > 10


def clip_warnings(caplog):
    return [r for r in caplog.records if r.name == "solver.scheduler" and r.levelno == logging.WARNING]


@pytest.mark.parametrize("max_epochs", [1, 2])
@pytest.mark.parametrize("path", YAMLS, ids=lambda p: os.path.relpath(p, os.path.join(REPO, "configs")))
def test_short_schedule_of_every_yaml(path, max_epochs, caplog):
    cfg = load_cfg(path, ["SOLVER.MAX_EPOCHS", str(max_epochs)])
    s = cfg.SOLVER
    optimizer = build_optimizer(cfg, nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3)))
    with caplog.at_level(logging.WARNING, logger="solver.scheduler"):
        scheduler = build_scheduler(cfg, optimizer)
    warnings = clip_warnings(caplog)
    release = s.SCHEDULE == "release"
    used = s.WARMUP_EPOCHS if release else min(s.WARMUP_EPOCHS, max_epochs - 1)
    assert scheduler.warmup_t == used
    assert scheduler.t_initial == (max_epochs if release else max_epochs - used)
    if s.WARMUP_EPOCHS >= max_epochs and (s.WARMUP_EPOCHS or not release):
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        message = warnings[0].getMessage()
        assert f"SOLVER.WARMUP_EPOCHS ({s.WARMUP_EPOCHS})" in message
        assert f"SOLVER.MAX_EPOCHS ({max_epochs})" in message
        assert ("kept as the released code" if release else f"using {used} warm-up") in message
    else:
        assert warnings == []
    # driven as the trainer does: solver.start_epoch at the start of every epoch
    lrs = []
    for epoch in range(1, max_epochs + 1):
        start_epoch(scheduler, epoch)
        lr = optimizer.param_groups[0]["lr"]  # the 'weights' group: BASE_LR is its peak
        assert optimizer.param_groups[0]["name"] == "weights"
        assert math.isfinite(lr) and lr > 0, (epoch, lr)
        assert lr == pytest.approx(epoch_lr(scheduler, epoch))
        lrs.append(lr)
    if release:  # timm's cosine over MAX_EPOCHS from t = 0, the warm-up laid over it, epoch E at t = E
        w, t = s.WARMUP_EPOCHS, max_epochs
        assert lrs[-1] == pytest.approx(s.WARMUP_LR_INIT + t * (s.BASE_LR - s.WARMUP_LR_INIT) / w if t < w
                                        else s.MIN_LR)
    elif s.WARMUP_EPOCHS >= max_epochs - 1:  # clipped (or exactly fitting): the last epoch is at the peak
        assert lrs[-1] == pytest.approx(s.BASE_LR)
        if max_epochs == 2:
            assert lrs[0] == pytest.approx(s.WARMUP_LR_INIT)


def test_warmup_shorter_than_the_run_is_kept(caplog):
    cfg = load_cfg(QUICKSTART, ["SOLVER.MAX_EPOCHS", "6", "SOLVER.WARMUP_EPOCHS", "3"])
    assert cfg.SOLVER.SCHEDULE == "paper_text"
    with caplog.at_level(logging.WARNING, logger="solver.scheduler"):
        scheduler = build_scheduler(cfg, torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0))
    assert clip_warnings(caplog) == [] and scheduler.warmup_t == 3 and scheduler.t_initial == 3
    assert epoch_lr(scheduler, 4) == pytest.approx(cfg.SOLVER.BASE_LR)


# Quick-start architecture and schedule at the cheapest sizes; periods longer than the run.
CHEAP = ["DATASETS.SYNTHETIC.NUM_TRAIN_IDS", "8", "DATASETS.SYNTHETIC.NUM_TEST_IDS", "4",
         "DATASETS.SYNTHETIC.NUM_CAMS", "2", "DATASETS.SYNTHETIC.IMAGES_PER_CAM", "2",
         "DATASETS.SYNTHETIC.IMAGE_SIZE", "[64, 32]", "INPUT.SIZE_TRAIN", "[64, 32]", "INPUT.SIZE_TEST", "[64, 32]",
         "DATALOADER.NUM_WORKERS", "0", "DATALOADER.NUM_INSTANCE", "4", "SOLVER.IMS_PER_BATCH", "16",
         "TEST.IMS_PER_BATCH", "32", "MODEL.FUSION.DIM", "48", "MODEL.FUSION.NUM_HEADS", "2",
         "SOLVER.EVAL_PERIOD", "7", "SOLVER.CHECKPOINT_PERIOD", "7"]


def test_quickstart_one_epoch_run(tmp_path):
    out = tmp_path / "out"
    opts = ["SOLVER.MAX_EPOCHS", "1", "DATASETS.ROOT_DIR", str(tmp_path / "data"), "OUTPUT_DIR", str(out)] + CHEAP
    cfg = load_cfg(QUICKSTART, opts)
    proc = subprocess.run([sys.executable, "train_net.py", "--config_file", QUICKSTART] + opts, cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["latest"]["epoch"] == 1 and results["best"]["epoch"] == 1  # EVAL_PERIOD 7 > 1 epoch
    assert results["provenance"]["command"] == ["train_net.py", "--config_file", QUICKSTART] + opts  # sys.argv
    assert (out / "last_checkpoint").read_text().strip() == "checkpoint_epoch1.pth"  # CHECKPOINT_PERIOD 7
    state = torch.load(out / "checkpoint_epoch1.pth", map_location="cpu", weights_only=True)
    assert state["epoch"] == 1
    log = (out / "train.log").read_text()
    clipped = "SOLVER.WARMUP_EPOCHS (%d) does not fit in SOLVER.MAX_EPOCHS (1): using 0 warm-up" \
        % cfg.SOLVER.WARMUP_EPOCHS
    assert (clipped in log) == (cfg.SOLVER.WARMUP_EPOCHS >= 1), log[-3000:]
    assert "epoch 1/1: loss" in log
