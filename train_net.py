#!/usr/bin/env python
"""Train (and evaluate) FusionReID.

    python train_net.py --config_file configs/Synthetic/quickstart.yml [--resume] [KEY VALUE ...]
    torchrun --nproc_per_node=2 train_net.py --config_file FILE ...     # DDP, global batch unchanged

Writes to OUTPUT_DIR: train.log (appended), config.yaml, TensorBoard events, checkpoint_epoch{N}.pth +
last_checkpoint, model_best.pth and results.json. ``--resume`` continues from OUTPUT_DIR's last
checkpoint (a fresh start when there is none; when the one ``last_checkpoint`` names is missing or
unreadable, the newest loadable checkpoint, with a warning).
"""
import logging

import utils

utils.prefer_passive_omp()  # before torch is imported

from processor import Trainer, convert_sync_bn  # noqa: E402
from processor.cli import RunContext, base_parser, parse_cli  # noqa: E402
from utils.distributed import main_process_first  # noqa: E402
from utils.errors import cli_entry  # noqa: E402

logger = logging.getLogger(__name__)


def parse_args(argv=None):
    parser = base_parser("Train and evaluate FusionReID.")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the last checkpoint in OUTPUT_DIR (see its last_checkpoint file)")
    return parse_cli(parser, argv)


def build_trainer(cfg, device):
    """Data, model, loss, optimizer and scheduler of ``cfg``, assembled into a :class:`Trainer`."""
    from datasets import make_dataloader
    from loss import build_loss
    from model import build_model
    from solver import build_optimizer, build_scheduler

    with main_process_first():  # rank 0 generates/checks the data before the others read them
        train_loader, val_loader, num_query, num_classes, num_cams = make_dataloader(cfg)
    logger.info("data: %d train identities, %d cameras, %d train batches/epoch, %d query + %d gallery images",
                num_classes, num_cams, len(train_loader), num_query, len(val_loader.dataset) - num_query)
    model = build_model(cfg, num_classes, num_cams).to(device)
    model = convert_sync_bn(model, cfg, device)
    logger.info("model: %.2fM parameters", sum(p.numel() for p in model.parameters()) / 1e6)
    loss_fn = build_loss(cfg, num_classes)
    optimizer = build_optimizer(cfg, model)
    scheduler = build_scheduler(cfg, optimizer)
    return Trainer(cfg, model, loss_fn, optimizer, scheduler, train_loader, val_loader, num_query, device)


@cli_entry
def main(argv=None):
    args = parse_args(argv)
    with RunContext(args.config_file, args.opts, "train.log") as ctx:
        ctx.save_config()
        trainer = build_trainer(ctx.cfg, ctx.device)
        if args.resume and trainer.resume_last(ctx.cfg.OUTPUT_DIR) is None:
            logger.warning("--resume: no checkpoint in %s, starting from scratch", ctx.cfg.OUTPUT_DIR)
        return trainer.train()


if __name__ == "__main__":
    main()
