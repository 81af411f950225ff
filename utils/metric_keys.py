"""The retrieval metrics every evaluation reports (``utils.metrics.evaluate`` computes them), in the order they are
logged: results.json key -> label. Kept free of torch so that the config can check ``SOLVER.BEST_METRIC``."""
METRIC_LABELS = {"mAP": "mAP", "rank1": "Rank-1", "rank5": "Rank-5", "rank10": "Rank-10", "mINP": "mINP"}
METRIC_KEYS = tuple(METRIC_LABELS)
