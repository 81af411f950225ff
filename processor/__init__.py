"""Training and evaluation: the :class:`Trainer` and its seams (callbacks, :class:`Evaluator` with the best-model
rule, :class:`Builders`), :func:`build_trainer` (a config -> a ready :class:`Trainer`), feature extraction and
metrics."""
from .callbacks import Callback, StepInfo, TensorBoard
from .evaluation import BestModelRule, Evaluation, Evaluator, write_results
from .inference import compute_metrics, extract_features, format_metrics, run_evaluation
from .trainer import Builders, NonFiniteLossError, Trainer, build_trainer, convert_sync_bn

__all__ = ["BestModelRule", "Builders", "Callback", "Evaluation", "Evaluator", "NonFiniteLossError", "StepInfo",
           "TensorBoard", "Trainer", "build_trainer", "compute_metrics", "convert_sync_bn", "extract_features",
           "format_metrics", "run_evaluation", "write_results"]
