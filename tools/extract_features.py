#!/usr/bin/env python
"""Re-identification features of your own images with a trained model (no dataset needed).

    # features of every image under DIR (recursively, sorted) -> feats.npz (features [N, d], paths [N])
    python tools/extract_features.py --config_file F --images DIR --out feats.npz TEST.WEIGHT W
    # rank one set against another: prints the top-k per query, writes feats.npz and a ranked-list PNG
    python tools/extract_features.py --config_file F --query QDIR --gallery GDIR --out feats.npz \\
        [--figure ranked.png] [--topk 10] [--figure-queries 8] [--mean-camera] TEST.WEIGHT W

Images are preprocessed once with the test transform (resize to INPUT.SIZE_TEST, normalise); the
feature is the model's evaluation feature (TEST.FEAT, TEST.NECK_FEAT, TEST.FEAT_NORM, TEST.FLIP).
Distances: TEST.METRIC, as in evaluation.

Each of --images, --query and --gallery is a folder of images, a CSV file of the CSV dataset
(``path,pid,camid``, e.g. DATASETS.CSV_DIR/query.csv) or an MSMT17 list file (list_query.txt beside
test/ or mask_test_v2/). The identity (pid) and camera of each image are read, when known, from
  * the CSV or list file;
  * file names, when every image of a folder is named like Market-1501 / DukeMTMC-reID
    (``0002_c1s1_000451_03.jpg``: pid 2, camera c1) or MSMT17 (``0000_000_01_0303morning_0015_0.jpg``);
  * else per-identity subfolders (QDIR/<id>/x.jpg): the subfolder name is the identity (no camera).
With identities on both sides the figure draws right matches green and wrong ones red (grey when
unknown); pid -1 (Market junk) and 0 (distractors) are identities like any other here. Known cameras are
given to the model, as in evaluation; unknown ones (or all, with --mean-camera) get the mean of the
learned camera embeddings (see processor/feature_extractor.py). Camera ids beyond the checkpoint's cameras
are an error (another dataset's cameras: use --mean-camera).

The npz holds query_features, query_paths, gallery_features, gallery_paths, distances [Q, G] and
ranking [Q, k] (gallery indices, nearest first), plus query_pids / query_camids / gallery_pids /
gallery_camids where known (features, paths, pids, camids with --images).
"""
import argparse
import logging
import os
import sys
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from datasets.csv_dataset import read_csv_split  # noqa: E402
from datasets.market1501 import parse_market_name  # noqa: E402
from datasets.msmt17 import parse_msmt_list, parse_msmt_name  # noqa: E402
from utils.cli import ConfigArgumentParser  # noqa: E402
from utils.errors import UsageError, cli_entry  # noqa: E402
from processor.feature_extractor import extractor_from_args, find_images, folder_identities  # noqa: E402

logger = logging.getLogger(__name__)

# An identity: the pid of a file name, CSV or list file, or a subfolder's name (an int when it is one).
Identity = Union[int, str]
# How a folder's file names give (pid, camid): the parsers of the dataset layouts, tried in this order.
NAME_PARSERS = (("Market-1501 file names", parse_market_name), ("MSMT17 file names", parse_msmt_name))


class ImageSet(NamedTuple):
    """The images of one --images/--query/--gallery argument and what is known about them."""

    paths: List[str]
    pids: Optional[List[Identity]]  # None: identities unknown
    camids: Optional[List[int]]     # None: cameras unknown (0-based otherwise)
    folder: str                     # paths are printed relative to it
    labels_from: str                # where pids/camids came from, for the log


def parse_args(argv=None):
    parser = ConfigArgumentParser(__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                  config_help="YAML config of the trained model",
                                  opts_help="KEY VALUE overrides, e.g. TEST.WEIGHT path")
    parser.add_argument("--images", help="images to describe: a folder, a CSV file or an MSMT17 list file")
    parser.add_argument("--query", help="query images (with --gallery): a folder, a CSV file or an MSMT17 list file")
    parser.add_argument("--gallery", help="gallery images (with --query): a folder, a CSV file or an MSMT17 list file")
    parser.add_argument("--out", required=True, help="output .npz file")
    parser.add_argument("--figure", help="ranked-list PNG (default: next to --out, <out>_ranked.png)")
    parser.add_argument("--topk", type=int, default=10)
    parser.add_argument("--figure-queries", type=int, default=8, help="queries drawn in the figure (the first N)")
    parser.add_argument("--mean-camera", action="store_true",
                        help="ignore known cameras: every image gets the mean camera embedding")
    args = parser.parse_args(argv)
    if bool(args.images) == bool(args.query or args.gallery):
        parser.error("give either --images DIR, or --query DIR and --gallery DIR")
    if not args.images and not (args.query and args.gallery):
        parser.error("--query and --gallery go together")
    return args


def name_labels(paths: Sequence[str]) -> Optional[Tuple[str, List[int], List[int]]]:
    """``(description, pids, camids)`` when every file name follows one dataset's naming, else None."""
    for description, parse in NAME_PARSERS:
        parsed = [parse(path) for path in paths]
        if all(p is not None for p in parsed):
            return description, [p[0] for p in parsed], [p[1] for p in parsed]
    return None


def subfolder_labels(paths: Sequence[str], folder: str) -> Optional[List[Identity]]:
    """The per-identity subfolder of each image (an int when the name is one, so that ``0002/`` and
    ``0002_c1s1_...jpg`` are the same identity); None when any image lies directly in ``folder``."""
    names = folder_identities(paths, folder)
    if names is None:
        return None
    return [int(name) if name.isdigit() else name for name in names]


def read_image_set(source: str) -> ImageSet:
    """The images of ``source`` (a folder, a CSV file ``path,pid,camid`` or an MSMT17 list file) with their
    identities and cameras where the layout gives them (see the module docstring)."""
    if os.path.isfile(source):
        kind = os.path.splitext(source)[1].lower()
        if kind not in (".csv", ".txt"):
            raise UsageError(f"{source}: expected a folder of images, a CSV file (path,pid,camid) or an MSMT17 "
                             f"list file (.txt)")
        records = read_csv_split(source) if kind == ".csv" else parse_msmt_list(source)
        if not records:
            raise UsageError(f"{source} lists no images")
        return ImageSet([r.path for r in records], [r.pid for r in records], [r.camid for r in records],
                        os.path.dirname(source), "the CSV file" if kind == ".csv" else "the MSMT17 list")
    paths = find_images(source)
    named = name_labels(paths)
    if named is not None:
        description, pids, camids = named
        return ImageSet(paths, pids, camids, source, description)
    pids = subfolder_labels(paths, source)
    if pids is not None:
        return ImageSet(paths, pids, None, source, "per-identity subfolders")
    return ImageSet(paths, None, None, source, "nothing (identities unknown)")


def camera_ids(image_set: ImageSet, extractor, mean_camera: bool) -> Optional[List[int]]:
    """The cameras given to the model: the known ones, unless ``mean_camera`` or the model has no camera
    embedding; a ``UsageError`` naming the image when a camera is not one of the checkpoint's."""
    num_cams = extractor.unknown_cam  # the checkpoint's cameras (the mean camera is the next id); None: no SIE
    if mean_camera or image_set.camids is None or num_cams is None:
        return None
    for path, camid in zip(image_set.paths, image_set.camids):
        if camid >= num_cams:
            raise UsageError(f"{path}: camera {camid} (0-based) is not one of the checkpoint's {num_cams} cameras; "
                             f"pass --mean-camera to ignore the cameras of another dataset")
    return list(image_set.camids)


def describe(extractor, source: str, mean_camera: bool = False) -> Tuple[ImageSet, np.ndarray]:
    """``(ImageSet, features [N, d] numpy)`` of the images of ``source``."""
    image_set = read_image_set(source)
    cams = camera_ids(image_set, extractor, mean_camera)
    logger.info("%s: %d images; identities and cameras from %s; %s", source, len(image_set.paths),
                image_set.labels_from, "known cameras used" if cams is not None else "mean camera")
    return image_set, extractor(image_set.paths, cams).numpy()


def ranked_matches(ranking: np.ndarray, query_pids: Optional[Sequence[Identity]],
                   gallery_pids: Optional[Sequence[Identity]]) -> Optional[List[List[bool]]]:
    """[Q][k] booleans: is ranked gallery image ``ranking[q, j]`` of the query's identity (False for -1,
    no image); None when either side's identities are unknown (the figure then draws grey)."""
    if query_pids is None or gallery_pids is None:
        return None
    return [[bool(g >= 0 and gallery_pids[g] == query_pids[q]) for g in row] for q, row in enumerate(ranking)]


def label_arrays(prefix: str, image_set: ImageSet) -> Dict[str, np.ndarray]:
    """``{prefix + 'pids': ..., prefix + 'camids': ...}`` for what is known of ``image_set``."""
    arrays = {}
    if image_set.pids is not None:
        arrays[prefix + "pids"] = np.array(image_set.pids)
    if image_set.camids is not None:
        arrays[prefix + "camids"] = np.array(image_set.camids)
    return arrays


def rank(extractor, args):
    """Query/gallery features, distances, ranking; the ranked-list figure; printed top-k."""
    from processor import visualization as vis
    from utils.distance import pairwise_distance

    cfg = extractor.cfg
    query, qf = describe(extractor, args.query, args.mean_camera)
    gallery, gf = describe(extractor, args.gallery, args.mean_camera)
    q_paths, g_paths = query.paths, gallery.paths
    dist = pairwise_distance(qf, gf, cfg.TEST.METRIC, cfg.TEST.FEAT_NORM).numpy()
    ranking = vis.rank_gallery(dist, args.topk)
    matches = ranked_matches(ranking, query.pids, gallery.pids)
    for i, row in enumerate(ranking):
        ranked = ", ".join(f"{os.path.relpath(g_paths[g], gallery.folder)} ({dist[i, g]:.3f})" for g in row if g >= 0)
        print(f"{os.path.relpath(q_paths[i], query.folder)}: {ranked}")

    def shown(paths):
        return vis.to_display(extractor.preprocess(paths), cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD)

    n = min(args.figure_queries, len(q_paths))
    drawn = ranking[:n]
    needed = sorted({int(g) for g in drawn.flat if g >= 0})
    gallery_images = dict(zip(needed, shown([g_paths[g] for g in needed])))
    distances = [[dist[i, g] if g >= 0 else 0.0 for g in row] for i, row in enumerate(drawn)]
    figure = args.figure or os.path.splitext(args.out)[0] + "_ranked.png"
    names = [os.path.relpath(p, query.folder) for p in q_paths[:n]]
    vis.plot_ranked_list(shown(q_paths[:n]), gallery_images, drawn, figure, None if matches is None else matches[:n],
                         distances, names)
    print(f"ranked lists: {figure}")
    return {"query_features": qf, "query_paths": np.array(q_paths), "gallery_features": gf,
            "gallery_paths": np.array(g_paths), "distances": dist, "ranking": ranking,
            **label_arrays("query_", query), **label_arrays("gallery_", gallery)}


@cli_entry
def main(argv=None):
    args = parse_args(argv)
    extractor = extractor_from_args(args)
    if args.images:
        image_set, feats = describe(extractor, args.images, args.mean_camera)
        arrays = {"features": feats, "paths": np.array(image_set.paths), **label_arrays("", image_set)}
    else:
        arrays = rank(extractor, args)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    np.savez(args.out, **arrays)
    print(f"features: {args.out} ({', '.join(f'{k} {tuple(v.shape)}' for k, v in arrays.items())})")


if __name__ == "__main__":
    main()
