"""Feature extraction over the val loader and retrieval metrics (single process or sharded DDP)."""
import logging
import time
from typing import Dict, Mapping, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader
from yacs.config import CfgNode

from utils.distributed import all_gather_cat, broadcast_object, get_world_size, is_main_process
from utils.misc import AmpSettings, autocast

logger = logging.getLogger(__name__)

# Keys of a metrics dict, in the order they are logged.
METRIC_KEYS = ("mAP", "rank1", "rank5", "rank10", "mINP")


@torch.no_grad()
def extract_features(model: torch.nn.Module, loader: DataLoader, device: torch.device, amp: AmpSettings,
                     desc: str = "features") -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Retrieval features of every image of ``loader`` (this process's shard), in loader order.

    The model is put in eval mode and called as ``model(images, camids)``; features come back as
    float32 on the CPU with their ``pids``, ``camids`` and dataset ``indices``. Under DDP each rank
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
                f = model(images, camid.to(device, non_blocking=True))
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


def run_evaluation(cfg: CfgNode, model: torch.nn.Module, val_loader: DataLoader, num_query: int,
                   device: torch.device, amp: AmpSettings
                   ) -> Tuple[Dict[str, float], Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Extract features (sharded under DDP) and compute the metrics on the main process.

    Every rank must call this; every rank gets the same metrics dict back.
    Returns:
        (metrics dict, (feats, pids, camids)).
    """
    start = time.perf_counter()
    feats, pids, camids = extract_features(model, val_loader, device, amp, desc="eval")
    metrics = compute_metrics(cfg, feats, pids, camids, num_query, device) if is_main_process() else None
    metrics = broadcast_object(metrics)
    logger.debug("evaluation of %d images took %.1fs", feats.shape[0], time.perf_counter() - start)
    return metrics, (feats, pids, camids)


def format_metrics(metrics: Mapping[str, float]) -> str:
    """One line: ``mAP 85.3% | Rank-1 90.1% | Rank-5 ... | mINP ...``."""
    names = {"mAP": "mAP", "rank1": "Rank-1", "rank5": "Rank-5", "rank10": "Rank-10", "mINP": "mINP"}
    return " | ".join(f"{names[k]} {100 * metrics[k]:.1f}%" for k in METRIC_KEYS)
