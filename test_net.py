#!/usr/bin/env python
"""Evaluate a trained FusionReID model.

    python test_net.py --config_file FILE TEST.WEIGHT output/run/model_best.pth [--save-features F] [KEY VALUE ...]

``TEST.WEIGHT`` is a checkpoint written by train_net.py (any of checkpoint_epoch{N}.pth,
model_best.pth) or a bare state dict. Every dataset of ``DATASETS.TEST_NAMES`` (default: the training
datasets ``DATASETS.NAMES``, which also size the model) is evaluated separately. Logs mAP, Rank-1/5/10
and mINP, appends to OUTPUT_DIR/test.log and writes OUTPUT_DIR/test_results.json: the first test set's
metrics at the top level, ``per_dataset`` {name: metrics} of all, and the evaluation's provenance (see
utils/provenance.py). ``--save-features FILE`` also writes the query/gallery features, ids and cameras
(.npz; with several test sets one file per set, FILE's name + ``_<dataset>``). ``TEST.FEAT`` /
``TEST.NECK_FEAT`` choose the evaluated feature, ``TEST.FLIP`` adds the mirrored images.
"""
import logging
import os

import utils

utils.prefer_passive_omp()  # before torch is imported

import numpy as np  # noqa: E402

from processor.cli import RunContext  # noqa: E402
from processor.evaluation import Evaluator, data_and_trained_model, write_results  # noqa: E402
from processor.inference import format_metrics  # noqa: E402
from utils.cli import ConfigArgumentParser  # noqa: E402
from utils.distributed import get_world_size, is_main_process  # noqa: E402
from utils.errors import cli_entry  # noqa: E402
from utils.misc import resolve_amp  # noqa: E402
from utils.output_files import TEST_RESULTS_FILE  # noqa: E402
from utils.protocol import sha256_file  # noqa: E402
from utils.provenance import collect_provenance, command_line, wall_times  # noqa: E402

logger = logging.getLogger(__name__)


def parse_args(argv=None):
    parser = ConfigArgumentParser("Evaluate a trained FusionReID model (TEST.WEIGHT).")
    parser.add_argument("--save-features", dest="save_features", default="", metavar="FILE",
                        help="also save query/gallery features, pids and camids to FILE (.npz); with several "
                             "test sets (DATASETS.TEST_NAMES) to FILE's name + _<dataset> each")
    return parser.parse_args(argv)


def features_path(path, name, several):
    """``path``, or with ``several`` test sets ``path`` with ``_<name>`` before its extension."""
    if not several:
        return path
    stem, ext = os.path.splitext(path)
    return f"{stem}_{name}{ext or '.npz'}"


def save_features(path, feats, pids, camids, num_query):
    """Query/gallery features, ids and cameras as a compressed .npz."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    np.savez_compressed(path, query_feats=feats[:num_query].numpy(), gallery_feats=feats[num_query:].numpy(),
                        query_pids=pids[:num_query].numpy(), gallery_pids=pids[num_query:].numpy(),
                        query_camids=camids[:num_query].numpy(), gallery_camids=camids[num_query:].numpy())
    logger.info("features saved to %s", path)


@cli_entry
def main(argv=None):
    args = parse_args(argv)
    # The weights come from TEST.WEIGHT: no backbone initialisation from ImageNet files.
    with RunContext(args.config_file, args.opts, "test.log", overrides=["MODEL.PRETRAIN_CHOICE", "none"]) as ctx:
        cfg, device = ctx.cfg, ctx.device
        data, model = data_and_trained_model(cfg, device)
        logger.info("evaluating feature %r (%s the BNNeck) of %s", cfg.TEST.FEAT, cfg.TEST.NECK_FEAT,
                    cfg.TEST.WEIGHT)
        amp = resolve_amp(cfg.SOLVER.AMP, device)
        several = len(data.test_sets) > 1

        def keep_features(test_set, features):
            if args.save_features and is_main_process():
                feats, pids, camids = features
                save_features(features_path(args.save_features, test_set.name, several), feats, pids, camids,
                              test_set.num_query)

        evaluation = Evaluator(cfg, data.test_sets, device, amp).evaluate(model, label="test",
                                                                          on_features=keep_features)
        metrics = evaluation.entry()
        if several:
            logger.info("test (first test set, %s): %s", next(iter(evaluation.per_dataset)),
                        format_metrics(metrics))
        logger.info("evaluated in %.1fs", evaluation.seconds)
        if is_main_process():
            provenance = dict(collect_provenance(device, amp, get_world_size(), command_line(argv, __file__)),
                              wall_time_s=wall_times(None, evaluation.seconds, evaluation.seconds),
                              datasets=dict(data.fingerprints),
                              weight={"path": os.path.abspath(cfg.TEST.WEIGHT),
                                      "sha256": sha256_file(cfg.TEST.WEIGHT)})
            results = dict(metrics, weight=cfg.TEST.WEIGHT, feat=cfg.TEST.FEAT, neck_feat=cfg.TEST.NECK_FEAT,
                           provenance=provenance)
            path = write_results(cfg.OUTPUT_DIR, results, TEST_RESULTS_FILE)
            logger.info("results written to %s", path)
        return metrics

if __name__ == "__main__":
    main()
