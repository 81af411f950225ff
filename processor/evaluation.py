"""Evaluation as one piece: every test set evaluated and logged, the best-model rule, and the results files.

``train_net.py`` (through the :class:`processor.trainer.Trainer`) and ``test_net.py`` both evaluate with an
:class:`Evaluator`; both write their JSON with :func:`write_results`.

- :meth:`Evaluator.evaluate` runs every test set (``DATASETS.TEST_NAMES``) in turn (all ranks; features sharded
  under DDP, :func:`processor.inference.evaluate_test_sets`), logs one line per set and returns an
  :class:`Evaluation`.
- :meth:`Evaluator.record` keeps the latest and the best evaluation of a training run by a
  :class:`BestModelRule` (``SOLVER.BEST_METRIC`` of the first test set, higher is better; a tie keeps the earlier
  epoch) and says whether the new one is the best, which is when the trainer writes ``model_best.pth``.
- :func:`data_and_trained_model`: the data of a config and its model with the weights of TEST.WEIGHT (what
  ``test_net.py`` and ``tools/calibrate.py`` evaluate).
- results.json: ``{"latest", "best", "provenance"}``; test_results.json: the first test set's metrics at the top
  level, ``per_dataset``, what was evaluated and the provenance. An entry (``latest``, ``best``) is
  :meth:`Evaluation.entry`: the first test set's metrics, ``epoch`` and ``per_dataset``.
"""
import json
import logging
import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Sequence, Tuple

import torch
from yacs.config import CfgNode

from utils.checkpoint import atomic_write_text
from utils.distributed import broadcast_buffers, main_process_first
from utils.misc import AmpSettings

from .inference import METRIC_KEYS, Features, evaluate_test_sets, format_metrics, results_entry

logger = logging.getLogger(__name__)


@dataclass
class Evaluation:
    """One evaluation: ``per_dataset`` {test set: metrics} in order (the first one is the run's metric),
    ``epoch`` (training: 0 for the untrained model; ``None`` for test_net) and its wall time in seconds."""
    per_dataset: "OrderedDict[str, Dict[str, float]]"
    epoch: Optional[int] = None
    seconds: float = 0.0

    @property
    def metrics(self) -> Dict[str, float]:
        """The first test set's metrics."""
        return next(iter(self.per_dataset.values()))

    def metrics_items(self) -> Iterable[Tuple[str, float]]:
        return ((k, self.metrics[k]) for k in METRIC_KEYS)

    def entry(self) -> Dict[str, Any]:
        """The results.json entry: the first test set's metrics, ``epoch`` (when training) and ``per_dataset``."""
        extra = {} if self.epoch is None else {"epoch": int(self.epoch)}
        return results_entry(self.per_dataset, **extra)


class BestModelRule:
    """Which evaluation is the best model: the highest ``metric`` (one of ``METRIC_KEYS``) of the first test set;
    a tie keeps the earlier one."""

    def __init__(self, metric: str = "mAP"):
        if metric not in METRIC_KEYS:
            raise ValueError(f"unknown best-model metric {metric!r} (one of {', '.join(METRIC_KEYS)})")
        self.metric = metric

    def is_better(self, new: Mapping[str, Any], best: Optional[Mapping[str, Any]]) -> bool:
        return best is None or new[self.metric] > best[self.metric]

    def __repr__(self) -> str:
        return f"BestModelRule({self.metric!r})"


class Evaluator:
    """Evaluates a model on ``test_sets`` (:class:`datasets.loader.TestSet`) and keeps the latest and best.

    Args:
        cfg: the run's config (TEST.* decides the metric computation).
        test_sets: every test set, the first one decides the best model.
        device, amp: where and in which precision features are extracted.
        best_rule: default ``BestModelRule(cfg.SOLVER.BEST_METRIC)``.
    """

    def __init__(self, cfg: CfgNode, test_sets: Sequence[Any], device: torch.device, amp: AmpSettings,
                 best_rule: Optional[BestModelRule] = None):
        self.cfg, self.test_sets, self.device, self.amp = cfg, tuple(test_sets), device, amp
        self.best_rule = best_rule or BestModelRule(cfg.SOLVER.BEST_METRIC)
        self.latest: Optional[Dict[str, Any]] = None  # entries (Evaluation.entry)
        self.best: Optional[Dict[str, Any]] = None

    def evaluate(self, model: torch.nn.Module, epoch: Optional[int] = None, label: str = "test",
                 on_features: Optional[Callable[[Any, Features], None]] = None) -> Evaluation:
        """Every test set in turn (every rank must call this), with rank 0's BatchNorm statistics on every rank.

        Logs ``<label>[, <dataset>]: <metrics>`` per set (the dataset named when there are several).
        ``on_features(test_set, (feats, pids, camids))`` is called with each set's features (e.g. to save them).
        """
        start = time.perf_counter()
        broadcast_buffers(model)
        several = len(self.test_sets) > 1
        per_dataset = OrderedDict()
        for test_set, metrics, features in evaluate_test_sets(self.cfg, model, self.test_sets, self.device,
                                                              self.amp):
            per_dataset[test_set.name] = metrics
            logger.info("%s%s: %s", label, f", {test_set.name}" if several else "", format_metrics(metrics))
            if on_features is not None:
                on_features(test_set, features)
        return Evaluation(per_dataset, epoch, time.perf_counter() - start)

    def record(self, evaluation: Evaluation) -> bool:
        """``evaluation`` becomes the latest; returns whether it is also the new best (by the rule)."""
        entry = evaluation.entry()
        self.latest = entry
        improved = self.best_rule.is_better(entry, self.best)
        if improved:
            self.best = entry
        return improved

    def results(self, provenance: Mapping[str, Any]) -> Dict[str, Any]:
        """results.json of a training run."""
        return {"latest": self.latest, "best": self.best, "provenance": dict(provenance)}

    def state_dict(self) -> Dict[str, Any]:
        return {"latest": self.latest, "best": self.best}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.latest, self.best = state.get("latest"), state.get("best")


def data_and_trained_model(cfg: CfgNode, device: torch.device) -> Tuple[Any, torch.nn.Module]:
    """(``datasets.make_dataloader(cfg)``, the model of ``cfg`` with the weights of TEST.WEIGHT on ``device``).
    TEST.WEIGHT is checked before the data are prepared (once per node); the checkpoint's architecture must be
    ``cfg``'s, and ID classifiers of another shape are skipped."""
    from datasets import make_dataloader
    from model import build_model
    from model.backbones.weights import check_path
    from model.checkpointer import load_model_weights

    check_path(cfg.TEST.WEIGHT, "TEST.WEIGHT")
    with main_process_first(local=True):
        data = make_dataloader(cfg)
    model = build_model(cfg, data.num_classes, data.num_cams)
    load_model_weights(model, cfg, cfg.TEST.WEIGHT, "TEST.WEIGHT")
    return data, model.to(device)


def write_results(output_dir: str, results: Mapping[str, Any], name: str) -> str:
    """``results`` as indented JSON in ``output_dir/name``, atomically; returns the path."""
    path = os.path.join(output_dir, name)
    atomic_write_text(path, json.dumps(results, indent=2) + "\n")
    return path
