"""Throughput of the training data loader on the synthetic dataset, and OpenCV vs Pillow decoding.

    python benchmarks/bench_dataloader.py [--config_file F] [--batches N] [KEY VALUE ...]

Prints train-loader images/s with 0, 1 and 2 worker processes (after one warm-up batch, so worker
start-up is not counted) and the per-image decode time of both libraries, all measured in this run;
ratios are relative to 0 workers and to OpenCV.
"""
import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from configs import load_cfg  # noqa: E402
from datasets import build_dataset, make_dataloader  # noqa: E402
from datasets.image_io import DECODERS  # noqa: E402
from datasets.transforms import build_transforms  # noqa: E402
from utils.cli import ConfigArgumentParser  # noqa: E402
from utils.errors import cli_entry  # noqa: E402


def loader_images_per_second(cfg, num_workers, batches):
    """Images/s of the train loader over ``batches`` batches after a warm-up batch."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.DATALOADER.NUM_WORKERS = num_workers
    train_loader = make_dataloader(cfg).train_loader
    iterator = iter(train_loader)
    next(iterator)
    count, start = 0, time.perf_counter()
    for _ in range(batches):
        try:
            images = next(iterator)[0]
        except StopIteration:
            train_loader.sampler.set_epoch(train_loader.sampler.epoch + 1)
            iterator = iter(train_loader)
            images = next(iterator)[0]
        count += images.shape[0]
    return count / (time.perf_counter() - start)


def per_image_seconds(function, items, repeats=3):
    """Best-of-``repeats`` mean time of ``function(item)`` over ``items``."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for item in items:
            function(item)
        best = min(best, (time.perf_counter() - start) / len(items))
    return best


@cli_entry
def main(argv=None):
    parser = ConfigArgumentParser(__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=15, help="timed batches per worker count")
    parser.add_argument("--images", type=int, default=300, help="images decoded per library")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    cfg = load_cfg(args.config_file, ["DATASETS.NAMES", "synthetic", "SOLVER.IMS_PER_BATCH", "64",
                                      "DATALOADER.NUM_INSTANCE", "4"] + list(args.opts))
    print(f"config: {cfg.DATASETS.NAMES[0]} in {cfg.DATASETS.ROOT_DIR}, batch {cfg.SOLVER.IMS_PER_BATCH}, "
          f"input {list(cfg.INPUT.SIZE_TRAIN)}, {args.batches} timed batches")

    rates = {w: loader_images_per_second(cfg, w, args.batches) for w in (0, 1, 2)}
    print("train loader (decode + augmentation + collate):")
    for workers, rate in rates.items():
        print(f"  {workers} worker(s): {rate:8.1f} images/s   x{rate / rates[0]:.2f}")

    torch.set_num_threads(1)   # as in a loader worker (and in the main-process loader)
    paths = [r.path for r in build_dataset(cfg.DATASETS.NAMES[0], cfg.DATASETS.ROOT_DIR, cfg).train[:args.images]]
    transform = build_transforms(cfg, is_train=True)
    print(f"decoding {len(paths)} images, one thread (per image; + train transform):")
    decode = {name: per_image_seconds(fn, paths) for name, fn in DECODERS.items()}
    full = {name: per_image_seconds(lambda p, fn=fn: transform(fn(p)), paths) for name, fn in DECODERS.items()}
    for name in DECODERS:
        print(f"  {name:<4} decode {decode[name] * 1e6:7.1f} us  x{decode[name] / decode['cv2']:.2f}   "
              f"decode+transform {full[name] * 1e6:7.1f} us  x{full[name] / full['cv2']:.2f}")
    print(f"PIL / cv2 decode-time ratio: {decode['pil'] / decode['cv2']:.2f} (> 1: OpenCV is faster)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
