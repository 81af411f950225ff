#!/usr/bin/env python
"""Re-identification features of your own images with a trained model (no dataset, no camera ids needed).

    # features of every image under DIR (recursively, sorted) -> feats.npz (features [N, d], paths [N])
    python tools/extract_features.py --config_file F --images DIR --out feats.npz TEST.WEIGHT W
    # rank one folder against another: prints the top-k per query, writes feats.npz and a ranked-list PNG
    python tools/extract_features.py --config_file F --query QDIR --gallery GDIR --out feats.npz \\
        [--figure ranked.png] [--topk 10] [--figure-queries 8] TEST.WEIGHT W

Images are preprocessed once with the test transform (resize to INPUT.SIZE_TEST, normalise); the
feature is the model's evaluation feature (TEST.FEAT, TEST.NECK_FEAT, TEST.FEAT_NORM). Camera ids are
unknown for your photos, so the mean of the learned camera embeddings is used (see
utils/feature_extractor.py). Distances: TEST.METRIC, as in evaluation.

With --query/--gallery, images in per-identity subfolders (QDIR/<id>/x.jpg, GDIR/<id>/y.jpg) are
labelled by the subfolder name: the figure then draws right matches green and wrong ones red
(grey when the folders are flat). The npz holds query_features, query_paths, gallery_features,
gallery_paths, distances [Q, G] and ranking [Q, k] (gallery indices, nearest first).
"""
import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from utils.cli import ConfigArgumentParser  # noqa: E402
from utils.errors import cli_entry  # noqa: E402
from utils.feature_extractor import extractor_from_args, find_images, folder_identities  # noqa: E402

logger = logging.getLogger(__name__)


def parse_args(argv=None):
    parser = ConfigArgumentParser(__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                  config_help="YAML config of the trained model",
                                  opts_help="KEY VALUE overrides, e.g. TEST.WEIGHT path")
    parser.add_argument("--images", help="folder of images to describe")
    parser.add_argument("--query", help="folder of query images (with --gallery)")
    parser.add_argument("--gallery", help="folder of gallery images (with --query)")
    parser.add_argument("--out", required=True, help="output .npz file")
    parser.add_argument("--figure", help="ranked-list PNG (default: next to --out, <out>_ranked.png)")
    parser.add_argument("--topk", type=int, default=10)
    parser.add_argument("--figure-queries", type=int, default=8, help="queries drawn in the figure (the first N)")
    args = parser.parse_args(argv)
    if bool(args.images) == bool(args.query or args.gallery):
        parser.error("give either --images DIR, or --query DIR and --gallery DIR")
    if not args.images and not (args.query and args.gallery):
        parser.error("--query and --gallery go together")
    return args


def describe(extractor, folder):
    """(paths, features [N, d] numpy) of every image under ``folder``."""
    paths = find_images(folder)
    logger.info("%s: %d images", folder, len(paths))
    return paths, extractor(paths).numpy()


def rank(extractor, args):
    """Query/gallery features, distances, ranking; the ranked-list figure; printed top-k."""
    from utils import visualization as vis
    from utils.distance import pairwise_distance

    cfg = extractor.cfg
    q_paths, qf = describe(extractor, args.query)
    g_paths, gf = describe(extractor, args.gallery)
    dist = pairwise_distance(qf, gf, cfg.TEST.METRIC, cfg.TEST.FEAT_NORM).numpy()
    ranking = vis.rank_gallery(dist, args.topk)
    q_ids, g_ids = folder_identities(q_paths, args.query), folder_identities(g_paths, args.gallery)
    matches = None
    if q_ids is not None and g_ids is not None:
        matches = [[g >= 0 and g_ids[g] == q_ids[i] for g in row] for i, row in enumerate(ranking)]
    for i, row in enumerate(ranking):
        ranked = ", ".join(f"{os.path.relpath(g_paths[g], args.gallery)} ({dist[i, g]:.3f})" for g in row if g >= 0)
        print(f"{os.path.relpath(q_paths[i], args.query)}: {ranked}")

    def shown(paths):
        return vis.to_display(extractor.preprocess(paths), cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD)

    n = min(args.figure_queries, len(q_paths))
    drawn = ranking[:n]
    needed = sorted({int(g) for g in drawn.flat if g >= 0})
    gallery_images = dict(zip(needed, shown([g_paths[g] for g in needed])))
    distances = [[dist[i, g] if g >= 0 else 0.0 for g in row] for i, row in enumerate(drawn)]
    figure = args.figure or os.path.splitext(args.out)[0] + "_ranked.png"
    names = [os.path.relpath(p, args.query) for p in q_paths[:n]]
    vis.plot_ranked_list(shown(q_paths[:n]), gallery_images, drawn, figure, None if matches is None else matches[:n],
                         distances, names)
    print(f"ranked lists: {figure}")
    return {"query_features": qf, "query_paths": np.array(q_paths), "gallery_features": gf,
            "gallery_paths": np.array(g_paths), "distances": dist, "ranking": ranking}


@cli_entry
def main(argv=None):
    args = parse_args(argv)
    extractor = extractor_from_args(args)
    if args.images:
        paths, feats = describe(extractor, args.images)
        arrays = {"features": feats, "paths": np.array(paths)}
    else:
        arrays = rank(extractor, args)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    np.savez(args.out, **arrays)
    print(f"features: {args.out} ({', '.join(f'{k} {tuple(v.shape)}' for k, v in arrays.items())})")


if __name__ == "__main__":
    main()
