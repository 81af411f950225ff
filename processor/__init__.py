"""Training and evaluation loops."""
from .inference import compute_metrics, extract_features, format_metrics, run_evaluation
from .trainer import NonFiniteLossError, Trainer, convert_sync_bn, write_results

__all__ = ["NonFiniteLossError", "Trainer", "compute_metrics", "convert_sync_bn", "extract_features",
           "format_metrics", "run_evaluation", "write_results"]
