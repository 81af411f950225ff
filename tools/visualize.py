#!/usr/bin/env python
"""Look inside a trained FusionReID (paper Sec. IV-E): Grad-CAM, HTM attention weights, ranked lists.

    # your own images (no camera ids: the mean camera embedding is used)
    python tools/visualize.py --config_file F --images DIR [--images b.jpg] --out vis/ TEST.WEIGHT W
    # 4 queries of the configured dataset (with their camera ids) and their ranked lists
    python tools/visualize.py --config_file F --dataset-queries 4 --ranked --topk 8 --out vis/ TEST.WEIGHT W

Writes PNGs into --out:
  gradcam.png           Fig. 7: per image, Grad-CAM of the CNN and Transformer features at the backbone,
                        after the LRU and after each HTM (SEU local tokens); --target class|norm, --head
  attention.png         Fig. 9: per image, the SEU and MFU attention of each branch's global token, mean of
                        the heads, for every HTM layer
  attention_heads_<i>.png  Fig. 8: the same per head for image i
  ranked_list.png       (--ranked, dataset queries only) top-k gallery images, green = same identity,
                        red = another, gallery images of the query's identity and camera left out
What is computed is documented in processor/visualization.py.
"""
import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from processor import visualization as vis  # noqa: E402
from utils.cli import ConfigArgumentParser  # noqa: E402
from utils.errors import cli_entry  # noqa: E402
from processor.feature_extractor import extractor_from_args, find_images  # noqa: E402

logger = logging.getLogger(__name__)


def int_list(text):
    """'0,3,-1' -> [0, 3, -1]."""
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def parse_args(argv=None):
    parser = ConfigArgumentParser(__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                  config_help="YAML config of the trained model",
                                  opts_help="KEY VALUE overrides, e.g. TEST.WEIGHT path")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", action="append", metavar="PATH",
                     help="an image file or a folder of images (repeat for more)")
    src.add_argument("--dataset-queries", type=int, metavar="N",
                     help="N queries of the first evaluated dataset (DATASETS.TEST_NAMES, default DATASETS.NAMES), "
                          "evenly spaced over its query list")
    parser.add_argument("--cams", type=int_list, help="camera id per --images image, comma-separated (-1 = unknown; "
                        "default: all unknown, the mean camera embedding)")
    parser.add_argument("--out", required=True, help="output folder of the PNGs")
    parser.add_argument("--head", default="all", help="feature head of the Grad-CAM target (default: all)")
    parser.add_argument("--target", choices=("class", "norm"), default="class",
                        help="Grad-CAM target: ID logit of the predicted/--class-id class, or the feature norm")
    parser.add_argument("--class-id", type=int_list, help="training class per image, comma-separated "
                        "(default: the predicted class)")
    parser.add_argument("--heads-of", type=int_list, default=[0],
                        help="images (indices, comma-separated) that get a per-head attention figure")
    parser.add_argument("--ranked", action="store_true", help="also draw ranked lists (with --dataset-queries)")
    parser.add_argument("--topk", type=int, default=10)
    parser.add_argument("--dpi", type=int, default=80)
    return parser.parse_args(argv)


def expand_images(items):
    """Files as given, folders replaced by their images (sorted)."""
    paths = []
    for item in items:
        paths += find_images(item) if os.path.isdir(item) else [item]
    return paths


def dataset_inputs(cfg, num_queries):
    """(query records, gallery records, camera ids for the model) of the first evaluated dataset
    (``DATASETS.TEST_NAMES``, default ``DATASETS.NAMES``): ``num_queries`` queries evenly spaced over the
    query list (so that they show different identities), and the whole gallery.

    The records keep the dataset's own camera ids (the ranking drops same-identity, same-camera matches by
    them); the third item maps records to the model's camera ids: as they are when the dataset is the
    first training dataset (camera offset 0), else -1 (the mean camera embedding), as said in the log."""
    from datasets import build_dataset, check_dataset_names

    check_dataset_names(cfg)
    name = cfg.DATASETS.TEST_NAMES[0]
    data = build_dataset(name, cfg.DATASETS.ROOT_DIR, cfg)
    step = max(1, len(data.query) // max(1, num_queries))
    if name == cfg.DATASETS.NAMES[0]:
        def model_cams(records):
            return [r.camid for r in records]
    else:
        logger.info("%s is not the first training dataset: its images get the mean camera embedding", name)

        def model_cams(records):
            return [-1] * len(records)
    return data.query[::step][:num_queries], data.gallery, model_cams


def draw_ranked(extractor, cfg, queries, gallery, model_cams, topk, path, dpi):
    """Rank ``queries`` against the whole ``gallery`` (records with pids and cameras) and draw the lists."""
    from datasets import read_image
    from utils.distance import pairwise_distance

    logger.info("extracting %d gallery features", len(gallery))
    gf = extractor([r.path for r in gallery], model_cams(gallery))
    qf = extractor([r.path for r in queries], model_cams(queries))
    dist = pairwise_distance(qf, gf, cfg.TEST.METRIC, cfg.TEST.FEAT_NORM).numpy()
    ranking = vis.rank_gallery(dist, topk, [r.pid for r in queries], [r.pid for r in gallery],
                               [r.camid for r in queries], [r.camid for r in gallery])
    show = {}
    for g in {int(g) for g in ranking.flat if g >= 0}:
        show[g] = display(extractor, [read_image(gallery[g].path)])[0]
    matches = [[g >= 0 and gallery[g].pid == q.pid for g in row] for q, row in zip(queries, ranking)]
    distances = [[dist[i, g] if g >= 0 else 0.0 for g in row] for i, row in enumerate(ranking)]
    query_images = display(extractor, [read_image(r.path) for r in queries])
    names = [f"id {r.pid} cam {r.camid}" for r in queries]
    return vis.plot_ranked_list(query_images, show, ranking, path, matches, distances, names, dpi=dpi)


def display(extractor, images):
    """Images as the model sees them (test transform), for drawing: [N, H, W, 3] in [0, 1]."""
    cfg = extractor.cfg
    return vis.to_display(extractor.preprocess(images), cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD)


@cli_entry
def main(argv=None):
    args = parse_args(argv)
    extractor = extractor_from_args(args)
    cfg = extractor.cfg
    if args.images:
        paths = expand_images(args.images)
        cam_list = args.cams
        names = [os.path.basename(p) for p in paths]
        queries = gallery = None
    else:
        queries, gallery, model_cams = dataset_inputs(cfg, args.dataset_queries)
        paths, cam_list = [r.path for r in queries], model_cams(queries)
        names = [f"id {r.pid} cam {r.camid}" for r in queries]
    images = extractor.preprocess(paths)
    cams = extractor.camera_ids(cam_list, len(paths)).to(extractor.device)
    images = images.to(extractor.device)
    shown = vis.to_display(images, cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD)
    model = extractor.model
    os.makedirs(args.out, exist_ok=True)

    cams_maps, classes = vis.grad_cam(model, images, cams, args.head, args.target, args.class_id)
    target = ("feature norm" if args.target == "norm" else "ID logit of the "
              + ("given" if args.class_id else "predicted") + " class")
    print(vis.plot_gradcam(shown, cams_maps, os.path.join(args.out, "gradcam.png"), names,
                           f"Grad-CAM, target: {target} (head: {args.head})", args.dpi))
    if classes is not None:
        print("classes used: " + ", ".join(f"{n}: {c}" for n, c in zip(names, classes.tolist())))
    if len(model.htm):
        grids = vis.attention_grids(model, images, cams)
        print(vis.plot_attention_summary(shown, grids, os.path.join(args.out, "attention.png"), names,
                                         dpi=args.dpi))
        for i in args.heads_of:
            if 0 <= i < len(paths):
                print(vis.plot_attention(shown[i], grids, os.path.join(args.out, f"attention_heads_{i}.png"), i,
                                         f"HTM attention weights per head: {names[i]}", args.dpi))
    else:
        logger.info("the model has no HTM: no attention figures")
    if args.ranked:
        if queries is None:
            logger.warning("--ranked needs --dataset-queries (for your own images use tools/extract_features.py "
                           "--query DIR --gallery DIR)")
        else:
            print(draw_ranked(extractor, cfg, queries, gallery, model_cams, args.topk,
                              os.path.join(args.out, "ranked_list.png"), args.dpi))


if __name__ == "__main__":
    main()
