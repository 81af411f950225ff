"""Feature extraction over the val loaders and retrieval metrics (single process or sharded DDP).

Several test sets (``DATASETS.TEST_NAMES``, :class:`datasets.loader.TestSet`) are evaluated one after the
other (:func:`evaluate_test_sets`); :func:`results_entry` makes the results.json entry of their metrics.
Camera ids: the model's camera embedding has the rows of the training union, so a test set trained on
gives the model ``camid + camera_offset``, and one not trained on gives every image the mean of the
learned rows (:func:`model_camera_ids`, the mean camera of ``processor.feature_extractor.add_mean_camera``,
as for images without a camera in ``tools/extract_features.py``). The metrics always compare the
dataset's own camids.
"""
import logging
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader
from yacs.config import CfgNode

from utils.distributed import all_gather_cat, broadcast_object, get_world_size, is_main_process
from utils.metric_keys import METRIC_KEYS, METRIC_LABELS
from utils.misc import AmpSettings, autocast

from .feature_extractor import add_mean_camera

if TYPE_CHECKING:
    from datasets.loader import TestSet

logger = logging.getLogger(__name__)

Features = Tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # (features [N, d], pids [N], camids [N])


@torch.no_grad()
def extract_features(model: torch.nn.Module, loader: DataLoader, device: torch.device, amp: AmpSettings,
                     desc: str = "features", camera_of: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
                     ) -> Features:
    """Retrieval features of every image of ``loader`` (this process's shard), in loader order.

    The model is put in eval mode and called as ``model(images, camera_of(camids))`` (``camera_of``: the
    model's camera ids of the loader's, default unchanged, see :func:`model_camera_ids`); features come
    back as float32 on the CPU with their ``pids``, the loader's ``camids`` and dataset ``indices``. Under DDP each rank
    extracts its own contiguous shard and the shards are concatenated in rank order, which is
    dataset order; the indices are checked against that.

    Returns:
        (features[N, d] float32, pids[N] int64, camids[N] int64) over the whole dataset.
    """
    was_training = model.training
    model.eval()
    feats, pids, camids, indices = [], [], [], []
    start, count = time.perf_counter(), 0
    try:
        for images, pid, camid, index in loader:
            images = images.to(device, non_blocking=True)
            with autocast(amp):
                cams = camid if camera_of is None else camera_of(torch.as_tensor(camid, dtype=torch.int64))
                f = model(images, cams.to(device, non_blocking=True))
            feats.append(f.float().cpu())
            pids.append(torch.as_tensor(pid, dtype=torch.int64))
            camids.append(torch.as_tensor(camid, dtype=torch.int64))
            indices.append(torch.as_tensor(index, dtype=torch.int64))
            count += images.shape[0]
    finally:
        model.train(was_training)
    if not feats:
        raise RuntimeError(f"{desc}: the val loader gave no images")
    local = [torch.cat(x) for x in (feats, pids, camids, indices)]
    feats, pids, camids, indices = (all_gather_cat(t) for t in local)
    elapsed = time.perf_counter() - start
    logger.debug("%s: %d images on this rank in %.1fs (%.1f images/s)", desc, count, elapsed,
                 count / max(elapsed, 1e-9))
    if get_world_size() > 1:
        _check_order(indices)
    return feats, pids, camids


def _check_order(indices):
    """Gathered shards must come back in dataset order: indices 0..N-1, increasing."""
    expected = torch.arange(indices.numel(), dtype=indices.dtype)
    if not torch.equal(indices, expected):
        raise RuntimeError("the gathered val shards are not in dataset order (each rank must get a contiguous, "
                           "in-order, non-overlapping shard of the val set)")


def compute_metrics(cfg: CfgNode, feats: torch.Tensor, pids: torch.Tensor, camids: torch.Tensor, num_query: int,
                    device: Optional[torch.device] = None) -> Dict[str, float]:
    """mAP, Rank-1/5/10 and mINP (fractions) of the first ``num_query`` rows against the rest.

    ``device``: where distances are computed (default: CPU, where the features are).
    """
    from utils.metrics import evaluate  # imported late: another package's module

    qf, gf = feats[:num_query], feats[num_query:]
    q_pids, g_pids = pids[:num_query].numpy(), pids[num_query:].numpy()
    q_camids, g_camids = camids[:num_query].numpy(), camids[num_query:].numpy()
    rerank = None
    if cfg.TEST.RE_RANKING:
        rerank = (cfg.TEST.RE_RANKING_K1, cfg.TEST.RE_RANKING_K2, cfg.TEST.RE_RANKING_LAMBDA)
    out = evaluate(qf, gf, q_pids, g_pids, q_camids, g_camids, max_rank=cfg.TEST.MAX_RANK,
                   metric=cfg.TEST.METRIC, feat_norm=cfg.TEST.FEAT_NORM, device=device, rerank=rerank)
    cmc = np.asarray(out["cmc"], dtype=np.float64)

    def rank(k):
        return float(cmc[min(k, len(cmc)) - 1])

    return {"mAP": float(out["mAP"]), "rank1": rank(1), "rank5": rank(5), "rank10": rank(10),
            "mINP": float(out["mINP"])}


@contextmanager
def model_camera_ids(model: torch.nn.Module, camera_offset: Optional[int]
                     ) -> Iterator[Callable[[torch.Tensor], torch.Tensor]]:
    """The map from a test set's camids to the camera ids given to ``model``, valid inside the block.

    ``camera_offset`` an int (the test set is a training dataset): ``camid + camera_offset``, its rows of
    the training union. ``None`` (a test set not trained on: its cameras are not the model's): every
    image gets the mean of the learned camera embeddings, a row that ``add_mean_camera`` appends for the
    block only; the original table (the very parameter an optimizer may hold) is put back on leaving.
    Without a camera embedding the ids are not used and pass unchanged.
    """
    if camera_offset is not None:
        yield lambda camids: camids + camera_offset
        return
    transformer = getattr(model, "transformer", None)
    table = getattr(transformer, "sie_embed", None)
    mean_id = add_mean_camera(model)
    try:
        yield (lambda camids: camids) if mean_id is None else (lambda camids: torch.full_like(camids, mean_id))
    finally:
        if mean_id is not None:
            transformer.sie_embed = table


def run_evaluation(cfg: CfgNode, model: torch.nn.Module, val_loader: DataLoader, num_query: int,
                   device: torch.device, amp: AmpSettings, camera_offset: Optional[int] = 0
                   ) -> Tuple[Dict[str, float], Features]:
    """Extract features (sharded under DDP) and compute the metrics on the main process.

    ``camera_offset``: see :func:`model_camera_ids` (0: the loader's camids are the model's; None: the
    mean camera). Every rank must call this; every rank gets the same metrics dict back, or the same
    ``utils.metrics.NoMatchError`` when no query has a match in the gallery.
    Returns:
        (metrics dict, (feats, pids, camids)), camids as in the loader.
    """
    from utils.metrics import require_matches  # imported late: another package's module

    start = time.perf_counter()
    with model_camera_ids(model, camera_offset) as camera_of:
        feats, pids, camids = extract_features(model, val_loader, device, amp, desc="eval", camera_of=camera_of)
    # on every rank (each has all the ids): rank 0 alone refusing would leave the others in the broadcast
    require_matches(pids[:num_query], pids[num_query:], camids[:num_query], camids[num_query:])
    metrics = compute_metrics(cfg, feats, pids, camids, num_query, device) if is_main_process() else None
    metrics = broadcast_object(metrics)
    logger.debug("evaluation of %d images took %.1fs", feats.shape[0], time.perf_counter() - start)
    return metrics, (feats, pids, camids)


def evaluate_test_sets(cfg: CfgNode, model: torch.nn.Module, test_sets: Sequence["TestSet"], device: torch.device,
                       amp: AmpSettings) -> Iterator[Tuple["TestSet", Dict[str, float], Features]]:
    """``(test set, metrics, (feats, pids, camids))`` of each test set in turn (:func:`run_evaluation`; every
    rank must run the whole iteration). One set's features are dropped when the next one starts."""
    from utils.metrics import NoMatchError

    for test_set in test_sets:
        try:
            metrics, features = run_evaluation(cfg, model, test_set.loader, test_set.num_query, device, amp,
                                               test_set.camera_offset)
        except NoMatchError as e:  # say which test set
            raise NoMatchError(f"test set {test_set.name!r} (DATASETS.TEST_NAMES): {e}") from None
        yield test_set, metrics, features


def results_entry(per_dataset: Mapping[str, Mapping[str, float]], **extra: Any) -> Dict[str, Any]:
    """The metrics of the first test set, ``extra`` (e.g. ``epoch``) and ``per_dataset``: {name: metrics} of
    every test set, in order: a ``latest``/``best`` entry of results.json (and test_results.json's top level).
    Readers of the top-level metrics see the first test set, as with a single one."""
    first = next(iter(per_dataset.values()))
    return dict(first, **extra, per_dataset={name: dict(metrics) for name, metrics in per_dataset.items()})


def format_metrics(metrics: Mapping[str, float]) -> str:
    """One line: ``mAP 85.3% | Rank-1 90.1% | Rank-5 ... | mINP ...``."""
    return " | ".join(f"{METRIC_LABELS[k]} {100 * metrics[k]:.1f}%" for k in METRIC_KEYS)
