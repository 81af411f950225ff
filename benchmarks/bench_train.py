#!/usr/bin/env python
"""Throughput and peak memory of one full training step and of eval feature extraction.

    python benchmarks/bench_train.py                                   # paper model, batch 8, CPU
    python benchmarks/bench_train.py --device cuda --batch 64          # AMP per SOLVER.AMP ('auto' = fp16)
    python benchmarks/bench_train.py --config_file configs/Synthetic/quickstart.yml --batch 32

A training step is forward + loss + backward + optimizer step of the whole model (loss/solver from
the config) on random images of ``INPUT.SIZE_TRAIN``; extraction is an eval-mode forward under
``no_grad``. Images/s is measured over ``--iters`` steps after ``--warmup`` steps; peak memory is the
CUDA allocator's peak on GPU and the process's peak resident set size on CPU. Without
``--config_file`` the default config is the paper's full model (ResNet50 + ViT-B/16*, D=768, 256x128)
with random weights (MODEL.PRETRAIN_CHOICE none).
"""
import logging
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import utils  # noqa: E402

utils.prefer_passive_omp()  # before torch is imported

import torch  # noqa: E402

from configs import load_cfg  # noqa: E402
from utils.cli import ConfigArgumentParser  # noqa: E402
from utils.errors import cli_entry  # noqa: E402
from utils.logger import setup_logger  # noqa: E402
from utils.misc import autocast, make_grad_scaler, resolve_amp, resolve_device, set_seed  # noqa: E402

logger = logging.getLogger(__name__)


def parse_args(argv=None):
    parser = ConfigArgumentParser(__doc__.split("\n\n")[0], config_help="YAML config (default: the paper's full model)")
    parser.add_argument("--batch", type=int, default=8, help="images per step (training and extraction)")
    parser.add_argument("--iters", type=int, default=5, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--num-classes", type=int, default=751, help="identities of the ID classifiers")
    return parser.parse_args(argv)


def peak_memory_mb(device):
    """Peak CUDA memory allocated since the last reset, or the process's peak RSS on CPU (MiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, steps, warmup, batch, device):
    """Images/s of ``fn()`` over ``steps`` calls after ``warmup`` calls, and peak memory (MiB)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    _sync(device)
    elapsed = time.perf_counter() - start
    return steps * batch / elapsed, peak_memory_mb(device)


def build(cfg, num_classes, device, num_cams=6):
    from loss import build_loss
    from model import build_model
    from solver import build_optimizer

    model = build_model(cfg, num_classes, num_cams).to(device)
    return model, build_loss(cfg, num_classes), build_optimizer(cfg, model)


@cli_entry
def main(argv=None):
    args = parse_args(argv)
    setup_logger(None)
    cfg = load_cfg(args.config_file, ["MODEL.PRETRAIN_CHOICE", "none", "MODEL.DEVICE", args.device] + args.opts)
    device = resolve_device(cfg.MODEL.DEVICE)
    amp = resolve_amp(cfg.SOLVER.AMP, device)
    set_seed(cfg.SOLVER.SEED)
    model, loss_fn, optimizer = build(cfg, args.num_classes, device)
    scaler = make_grad_scaler(amp)
    b, k = args.batch, max(1, min(cfg.DATALOADER.NUM_INSTANCE, args.batch))
    h, w = cfg.INPUT.SIZE_TRAIN
    images = torch.randn(b, 3, h, w, device=device)
    pids = (torch.arange(b, device=device) // k) % args.num_classes
    camids = torch.arange(b, device=device) % 6

    def train_step():
        with autocast(amp):
            loss, _ = loss_fn(model(images, camids), pids)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    @torch.no_grad()
    def extract():
        with autocast(amp):
            model(test_images, camids)

    logger.info("model: %s + %s, D=%d, %dx%d, %.1fM parameters | device %s | AMP %s | batch %d | threads %d",
                cfg.MODEL.CNN.NAME or "-", cfg.MODEL.TRANSFORMER.NAME or "-", cfg.MODEL.FUSION.DIM, h, w,
                sum(p.numel() for p in model.parameters()) / 1e6, device, amp.name, b, torch.get_num_threads())
    model.train()
    speed, mem = timed(train_step, args.iters, args.warmup, b, device)
    logger.info("train step (forward+backward+optimizer): %.1f images/s, peak memory %.0f MiB", speed, mem)
    model.eval()
    th, tw = cfg.INPUT.SIZE_TEST
    test_images = torch.randn(b, 3, th, tw, device=device)
    speed, mem = timed(extract, args.iters, args.warmup, b, device)
    logger.info("feature extraction (eval, no grad):   %.1f images/s, peak memory %.0f MiB", speed, mem)


if __name__ == "__main__":
    main()
