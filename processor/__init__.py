"""Training and evaluation loops, and :func:`build_trainer` (a config -> a ready :class:`Trainer`)."""
from .inference import compute_metrics, extract_features, format_metrics, run_evaluation
from .trainer import NonFiniteLossError, Trainer, build_trainer, convert_sync_bn, write_results

__all__ = ["NonFiniteLossError", "Trainer", "build_trainer", "compute_metrics", "convert_sync_bn",
           "extract_features", "format_metrics", "run_evaluation", "write_results"]
