"""Retrieval metrics of person re-identification: CMC, mAP and mINP under the Market-1501 protocol.

Protocol (shared by every entry point here):

* the gallery is ranked by distance, ascending; equal distances are ordered by gallery index
  (a stable sort);
* for each query, gallery items with the query's identity *and* camera are dropped ("junk");
* queries without any remaining same-identity item are skipped (a :class:`NoMatchError` when none is left:
  a gallery that shares no identity with its query, or only under the query's own camera);
* CMC@k: fraction of queries whose first match is within the top k of the kept list;
* AP: non-interpolated average precision, mean over the matches of (matches so far / rank);
* INP (AGW paper): ``num_matches / rank_of_the_last_match``; mINP is its mean.

How the fast path works (``evaluate``): queries are processed in chunks, so at most
``chunk_size x num_gallery`` distances exist at any time, and nothing is sorted along the whole
gallery. For each query, only the gallery items ranked no later than its farthest match can
change CMC, AP or INP; one comparison per distance finds them, and only those candidates are
ordered (by distance, then gallery index). Per chunk of n queries and G gallery items: the
distance matmul, O(n G) elementwise work, and O(S log S) for the S candidates (S is a small
fraction of n G for any useful feature; n G at worst, i.e. a plain sort).

The distances themselves come from :mod:`utils.distance`, which :mod:`utils.reranking` shares.
"""
import contextlib
import logging
from typing import Dict, Iterator, Optional, Tuple, Union

import numpy as np
import torch

from utils.distance import ArrayLike, GalleryDistance, default_device, to_tensor
from utils.errors import UsageError
from utils.reranking import re_ranking_chunks

logger = logging.getLogger(__name__)


class NoMatchError(UsageError):
    """No query has a true match in its gallery (the same identity seen by another camera), so CMC, mAP and
    mINP are undefined; the message counts the queries whose identity is not in the gallery at all and
    those whose identity is there only under the query's own camera."""


def matchable_queries(q_pids: torch.Tensor, g_pids: torch.Tensor, q_camids: torch.Tensor,
                      g_camids: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per query: ``(identity in the gallery, a true match in the gallery)``, boolean [Nq] each; a true match
    is a gallery item of the query's identity seen by another camera (what the protocol ranks)."""
    if len(g_pids) == 0:
        none = torch.zeros_like(q_pids, dtype=torch.bool)
        return none, none
    pairs = torch.unique(torch.stack([g_pids, g_camids], dim=1), dim=0)  # sorted by (pid, camid)
    pids, num_cams = torch.unique_consecutive(pairs[:, 0], return_counts=True)
    first_cam = pairs[torch.cumsum(num_cams, 0) - num_cams, 1]
    at = torch.searchsorted(pids, q_pids).clamp_(max=len(pids) - 1)
    present = pids[at] == q_pids
    return present, present & ((num_cams[at] > 1) | (first_cam[at] != q_camids))


def require_matches(q_pids: torch.Tensor, g_pids: torch.Tensor, q_camids: torch.Tensor,
                    g_camids: torch.Tensor) -> None:
    """A :class:`NoMatchError` when no query has a true match in the gallery (:func:`matchable_queries`)."""
    present, matchable = matchable_queries(q_pids, g_pids, q_camids, g_camids)
    if bool(matchable.any()):
        return
    common = len(np.intersect1d(q_pids.cpu().numpy(), g_pids.cpu().numpy()))
    absent = int((~present).sum())
    raise NoMatchError(
        f"no query has a matching gallery item: the evaluator (CMC/mAP/mINP, Market-1501 protocol) needs at least "
        f"one query whose identity is in the gallery seen by another camera; of the {len(q_pids)} queries, "
        f"{absent} have an identity that is not in the gallery ({len(g_pids)} items; {common} identities in "
        f"common with the queries) and {len(q_pids) - absent} have it there only under their own camera")


# ----------------------------------------------------------------------------- per-chunk metrics
class _Gallery:
    """Gallery identities and cameras, grouped by identity to find a query's items without a scan."""

    def __init__(self, g_pids: torch.Tensor, g_camids: torch.Tensor):
        self.pids = g_pids
        self.camids = g_camids
        self.order = torch.sort(g_pids, stable=True).indices
        self.sorted_pids = g_pids[self.order]

    def matches(self, q_pids: torch.Tensor, q_camids: torch.Tensor):
        """Per query, padded to the largest identity group P: gallery indices [n, P] and a mask of
        the true matches among them (same identity, other camera)."""
        start = torch.searchsorted(self.sorted_pids, q_pids)
        length = torch.searchsorted(self.sorted_pids, q_pids, right=True) - start
        p = max(int(length.max()) if len(length) else 0, 1)
        slot = torch.arange(p, device=q_pids.device)
        gidx = self.order[(start.unsqueeze(1) + slot).clamp_(max=len(self.pids) - 1)]
        match = (slot < length.unsqueeze(1)) & (self.camids[gidx] != q_camids.unsqueeze(1))
        return gidx, match


def _candidate_order(rows: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """The permutation that orders candidates listed by (row, gallery index) by (row, value, gallery index).

    float32 values (``evaluate``'s distances): one stable sort of the int64 key ``row << 32 | bits``, where
    ``bits`` is the value's IEEE pattern mapped to an unsigned 32-bit integer of the same order (negative
    values have their magnitude bits flipped; ``+ 0.0`` first makes -0.0 equal to 0.0, as it compares).
    Other dtypes: a stable sort by value, then a stable sort by row.
    """
    if values.dtype == torch.float32:
        bits = (values + 0.0).view(torch.int32).long()
        bits = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits) + 2 ** 31
        return torch.sort((rows << 32) | bits, stable=True).indices
    perm = torch.sort(values, stable=True).indices
    return perm[torch.sort(rows[perm], stable=True).indices]


def _chunk_metrics(dist: torch.Tensor, q_pids: torch.Tensor, q_camids: torch.Tensor, gallery: _Gallery):
    """Per-query results of one chunk of distance rows [n, G].

    Only the items ranked no later than the query's farthest match can change CMC, AP or INP, so
    only those candidates (found with one comparison per distance) are ordered, by
    (distance, gallery index): ``nonzero`` lists them by (row, index) and one stable sort
    (:func:`_candidate_order`) gives (row, distance, index). Cost: O(n G) comparisons plus
    O(S log S) for the S candidates (S << n G for any useful feature; n G at worst).

    Returns ``valid`` [n] (has a match), ``first`` [n] (1-based rank of the first match among
    kept items), ``ap`` [n] and ``inp`` [n] (float64; meaningless where not valid).
    """
    n, num_gallery, device = dist.shape[0], dist.shape[1], dist.device
    gidx, match = gallery.matches(q_pids, q_camids)
    num_match = match.sum(dim=1)
    far = torch.where(match, dist.gather(1, gidx), float("-inf")).amax(dim=1)
    flat = (dist <= far.unsqueeze(1)).view(-1).nonzero().squeeze(1)  # candidates, in (row, index) order
    rows = torch.div(flat, num_gallery, rounding_mode="floor")
    cols = flat - rows * num_gallery
    same_id = gallery.pids[cols] == q_pids[rows]
    keep = ~(same_id & (gallery.camids[cols] == q_camids[rows]))  # junk: same id and same camera
    flat, rows, hit = flat[keep], rows[keep], same_id[keep]
    perm = _candidate_order(rows, dist.reshape(-1)[flat])
    rows, hit = rows[perm], hit[perm]
    # 1-based rank among kept items, and number of matches so far, within each row
    per_row = torch.bincount(rows, minlength=n)
    start = torch.cumsum(per_row, 0) - per_row
    rank = torch.arange(1, len(rows) + 1, device=device) - start[rows]
    hits_so_far = torch.cumsum(hit, 0)
    hits_so_far -= (hits_so_far - hit.long())[start[rows]]
    rows, rank, hits_so_far = rows[hit], rank[hit].to(torch.float64), hits_so_far[hit]
    zeros = torch.zeros(n, dtype=torch.float64, device=device)
    ap = zeros.index_add(0, rows, hits_so_far / rank)  # non-interpolated AP (sum of precisions)
    first = zeros.scatter_reduce(0, rows, rank, "amin", include_self=False)
    last = zeros.scatter_reduce(0, rows, rank, "amax", include_self=False)
    valid = num_match > 0
    num = num_match.clamp_min(1).to(torch.float64)
    inp = num / last.clamp_min(1.0)  # INP = matches / rank of the hardest match
    return valid, first, ap / num, inp


@contextlib.contextmanager
def _cpu_threads(tensor: torch.Tensor, num: int = 1):
    """Run a block of many small CPU ops with ``num`` intra-op threads (restored afterwards).

    The per-chunk bookkeeping is a few dozen light ops; OpenMP fork/join costs more than it saves
    there, and on a busy CPU every parallel region can stall for milliseconds.
    """
    if tensor.device.type != "cpu":
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(min(num, previous))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class _Accumulator:
    """Sums the per-query results of the chunks; ``result`` gives the final dict."""

    def __init__(self, max_rank: int):
        self.max_rank = max_rank
        self.first_hist = torch.zeros(max_rank + 1, dtype=torch.float64)
        self.ap = 0.0
        self.inp = 0.0
        self.num_valid = 0
        self.num_queries = 0

    def add(self, valid, first, ap, inp):
        self.num_queries += len(valid)
        self.num_valid += int(valid.sum())
        self.ap += float(ap[valid].sum())
        self.inp += float(inp[valid].sum())
        first = first[valid].clamp(max=self.max_rank + 1).long() - 1  # 0-based, max_rank = miss
        self.first_hist += torch.bincount(first.cpu(), minlength=self.max_rank + 1).to(torch.float64)

    def result(self) -> Dict[str, object]:
        """The metrics; at least one query must have been valid (:func:`require_matches`)."""
        skipped = self.num_queries - self.num_valid
        if skipped:
            logger.info("%d of %d queries have no valid match and are skipped",
                        skipped, self.num_queries)
        cmc = torch.cumsum(self.first_hist[: self.max_rank], 0) / self.num_valid
        return {"cmc": cmc.numpy().astype(np.float64), "mAP": self.ap / self.num_valid,
                "mINP": self.inp / self.num_valid}


def _prepare_ids(q_pids, g_pids, q_camids, g_camids, device):
    ids = [to_tensor(x, device, torch.int64).reshape(-1) for x in (q_pids, g_pids, q_camids, g_camids)]
    if len(ids[0]) != len(ids[2]) or len(ids[1]) != len(ids[3]):
        raise ValueError("pids and camids must have one entry per query / gallery item")
    return ids


def _rank_chunks(dist_chunks: Iterator[Tuple[slice, torch.Tensor]], q_pids, g_pids, q_camids,
                 g_camids, max_rank: int, num_gallery: int) -> Dict[str, object]:
    """Metrics from an iterator of (query slice, distance rows) pairs (computed lazily: a gallery without a
    match for any query is refused before any distance, :func:`require_matches`)."""
    if num_gallery == 0:
        raise ValueError("the gallery is empty")
    require_matches(q_pids, g_pids, q_camids, g_camids)
    acc = _Accumulator(min(int(max_rank), num_gallery))
    gallery = _Gallery(g_pids, g_camids)
    for rows, dist in dist_chunks:
        if dist.shape[1] != num_gallery:
            raise ValueError(f"distance rows have {dist.shape[1]} columns, gallery has {num_gallery}")
        with _cpu_threads(dist):
            acc.add(*_chunk_metrics(dist, q_pids[rows], q_camids[rows], gallery))
    return acc.result()


def eval_rank(distmat: ArrayLike, q_pids: ArrayLike, g_pids: ArrayLike, q_camids: ArrayLike,
              g_camids: ArrayLike, max_rank: int = 50, chunk_size: int = 256) -> Dict[str, object]:
    """CMC, mAP and mINP from a full query x gallery distance matrix (numpy or torch).

    Returns ``{'cmc': np.ndarray[min(max_rank, num_gallery)], 'mAP': float, 'mINP': float}``,
    all fractions. Raises :class:`NoMatchError` (a ``ValueError``) when no query has a valid match.
    """
    device = default_device(distmat) if isinstance(distmat, torch.Tensor) else torch.device("cpu")
    dist = to_tensor(distmat, device)
    if not dist.is_floating_point():
        dist = dist.to(torch.float64)
    q_pids, g_pids, q_camids, g_camids = _prepare_ids(q_pids, g_pids, q_camids, g_camids, device)
    if dist.shape != (len(q_pids), len(g_pids)):
        raise ValueError(f"distmat shape {tuple(dist.shape)} != ({len(q_pids)}, {len(g_pids)})")
    chunks = ((slice(s, s + chunk_size), dist[s: s + chunk_size])
              for s in range(0, len(q_pids), chunk_size))
    return _rank_chunks(chunks, q_pids, g_pids, q_camids, g_camids, max_rank, len(g_pids))


def evaluate(qf: ArrayLike, gf: ArrayLike, q_pids: ArrayLike, g_pids: ArrayLike,
             q_camids: ArrayLike, g_camids: ArrayLike, max_rank: int = 50,
             metric: str = "euclidean", feat_norm: bool = True, chunk_size: int = 256,
             device: Optional[Union[str, torch.device]] = None,
             rerank: Optional[Tuple[int, int, float]] = None) -> Dict[str, object]:
    """CMC, mAP and mINP of query features ``qf`` [Nq, d] against gallery features ``gf`` [Ng, d].

    Distances are computed ``chunk_size`` queries at a time (``metric`` 'euclidean' or 'cosine',
    features L2-normalised first when ``feat_norm``), so memory beyond the inputs is
    O(chunk_size x Ng), never O(Nq x Ng). ``device``: where to compute (default: the features'
    device for tensors, else CUDA when available, else CPU). ``rerank=(k1, k2, lambda)`` ranks
    with k-reciprocal re-ranking distances instead (see ``utils.reranking``; memory O((Nq+Ng)^2)
    is avoided there too). Results equal ``eval_rank(utils.distance.pairwise_distance(qf, gf,
    metric, feat_norm), ...)``.
    """
    device = torch.device(device) if device is not None else default_device(qf)
    q = to_tensor(qf, device, torch.float32)
    g = to_tensor(gf, device, torch.float32)
    if q.dim() != 2 or g.dim() != 2 or q.shape[1] != g.shape[1]:
        raise ValueError(f"features must be [N, d] with the same d, got {tuple(q.shape)}, {tuple(g.shape)}")
    ids = _prepare_ids(q_pids, g_pids, q_camids, g_camids, device)
    if len(ids[0]) != len(q) or len(ids[1]) != len(g):
        raise ValueError("pids must have one entry per feature row")
    chunk_size = max(1, int(chunk_size))
    with torch.no_grad():
        if rerank is not None:
            k1, k2, lam = rerank
            chunks = re_ranking_chunks(q, g, k1, k2, lam, metric=metric, feat_norm=feat_norm,
                                       chunk_size=chunk_size)
        else:
            dist_fn = GalleryDistance(g, metric, feat_norm)
            chunks = ((slice(s, s + chunk_size), dist_fn(q[s: s + chunk_size]))
                      for s in range(0, len(q), chunk_size))
        return _rank_chunks(chunks, *ids, max_rank=max_rank, num_gallery=len(g))
