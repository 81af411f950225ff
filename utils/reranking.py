"""k-reciprocal re-ranking (Zhong et al., CVPR 2017) without an (Nq+Ng)^2 matrix.

With N = Nq + Ng items (queries and gallery together), k = k1 + 1, h = round(k1 / 2) + 1 and
E = k (h + 1) the largest expanded set, memory is:

* original distances: ``chunk_size`` rows at a time, O(chunk_size x N) -- never N x N;
* neighbour lists O(N k), reciprocity tests O(N k^2), expanded sets O(N E) (int64 / bool);
* the k-reciprocal weights V and their query expansion: sparse, O(N E) and O(N k2 E) entries;
* Jaccard distances: ``chunk_size`` queries x Ng at a time, accumulated from an inverted index of
  the sparse V in blocks of at most ``pair_budget`` (query, gallery, column) triples;
* output: ``re_ranking`` returns the Nq x Ng matrix (float32); ``re_ranking_chunks`` yields it
  chunk by chunk, which ``utils.metrics.evaluate(..., rerank=...)`` ranks without storing it.

Time: the N x N dot products once (neighbours and row maxima), the Nq x Ng ones once more (final
rows), O(N E d) for the weights; the rest is sparse. The original distance is the squared
Euclidean (or cosine) distance of ``utils.distance.GalleryDistance`` -- features L2-normalised
first when ``feat_norm`` -- divided by its row maximum over all N items, as in the reference
method. V is float32 (the reference code stores it in float16). Which of several items tied at
the k-th neighbour is kept is up to ``torch.topk``; the kept ones are ordered by (distance, index).
"""
import logging
from typing import Iterator, Tuple

import torch

from utils.distance import GalleryDistance

logger = logging.getLogger(__name__)


class _Items:
    """Queries then gallery as one indexable set, without concatenating the features."""

    def __init__(self, qf: torch.Tensor, gf: torch.Tensor, metric: str, feat_norm: bool):
        self.qf, self.gf, self.nq = qf, gf, len(qf)
        self.n = len(qf) + len(gf)
        self.to_q = GalleryDistance(qf, metric, feat_norm)
        self.to_g = GalleryDistance(gf, metric, feat_norm)

    def features(self, start: int, stop: int) -> torch.Tensor:
        parts = [self.qf[start: min(stop, self.nq)], self.gf[max(start - self.nq, 0): max(stop - self.nq, 0)]]
        return torch.cat(parts)

    def rows(self, start: int, stop: int) -> torch.Tensor:
        """Original (unnormalised) distances of items start..stop-1 to all N items."""
        f = self.features(start, stop)
        return torch.cat([self.to_q(f), self.to_g(f)], dim=1)


def _neighbours(items: _Items, k: int, chunk_size: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Indices [N, k] of each item's k nearest items (normally itself first) and each row's maximum
    distance."""
    idx, row_max = [], []
    for s in range(0, items.n, chunk_size):
        d = items.rows(s, s + chunk_size)
        row_max.append(d.amax(dim=1))
        vals, nn = torch.topk(d, k, dim=1, largest=False)
        # order the k by (distance, index): sort by index, then stably by distance
        by_index = torch.sort(nn, dim=1).indices
        nn, vals = nn.gather(1, by_index), vals.gather(1, by_index)
        idx.append(nn.gather(1, torch.sort(vals, dim=1, stable=True).indices))
    return torch.cat(idx), torch.cat(row_max).clamp_min(1e-12)


def _reciprocal(nn: torch.Tensor, k: int) -> torch.Tensor:
    """Mask [N, k] of the k-reciprocal neighbours: j in N(i, k) and i in N(j, k)."""
    nn = nn[:, :k]
    me = torch.arange(len(nn), device=nn.device).view(-1, 1, 1)
    return (nn[nn] == me).any(dim=2)


def _expanded_sets(nn: torch.Tensor, k1: int, chunk_size: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Padded index sets [N, E] and a mask of the unique members of R*(i, k1) (the expansion step):
    R(i, k1) plus every R(c, k1/2), c in R(i, k1), sharing more than 2/3 of it with R(i, k1)."""
    k, half = k1 + 1, int(round(k1 / 2)) + 1
    full = _reciprocal(nn, k)
    half_mask = _reciprocal(nn, half)
    sets, masks = [], []
    for s in range(0, len(nn), chunk_size):
        r_idx = nn[s: s + chunk_size, :k]                       # [c, k]
        r_in = full[s: s + chunk_size]                          # [c, k]
        cand_set = nn[r_idx, :half]                             # [c, k, h]: R(cand, k1/2) members
        cand_in = half_mask[r_idx] & r_in.unsqueeze(2)          # members of valid candidates
        shared = ((cand_set.unsqueeze(3) == r_idx.view(len(r_idx), 1, 1, k)) & r_in.view(len(r_idx), 1, 1, k)).any(3)
        accept = (shared & cand_in).sum(2) > 2.0 / 3.0 * cand_in.sum(2)  # [c, k]
        members = torch.cat([r_idx, cand_set.flatten(1)], dim=1)
        valid = torch.cat([r_in, (cand_in & accept.unsqueeze(2)).flatten(1)], dim=1)
        # unique: sort the (valid) members, drop repeats
        key = torch.where(valid, members, len(nn))
        key = torch.sort(key, dim=1).values
        first = torch.ones_like(valid)
        first[:, 1:] = key[:, 1:] != key[:, :-1]
        sets.append(key.clamp_max(len(nn) - 1))
        masks.append(first & (key < len(nn)))
    return torch.cat(sets), torch.cat(masks)


def _ragged(crow: torch.Tensor, rows: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """For CSR row pointers ``crow``: (position in ``rows``, entry index) of every entry of ``rows``."""
    lengths = crow[rows + 1] - crow[rows]
    owner = torch.repeat_interleave(torch.arange(len(rows), device=rows.device), lengths)
    first = torch.cumsum(lengths, 0) - lengths
    entry = torch.arange(int(lengths.sum()), device=rows.device) - first[owner] + crow[rows][owner]
    return owner, entry


def _csr(rows: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor, n_rows: int, n_cols: int):
    """(crow, col, val) of the coalesced (duplicates summed) sparse matrix."""
    m = torch.sparse_coo_tensor(torch.stack([rows, cols]), vals, (n_rows, n_cols),
                                check_invariants=False).coalesce()
    r, c = m.indices()
    crow = torch.zeros(n_rows + 1, dtype=torch.int64, device=rows.device)
    crow[1:] = torch.cumsum(torch.bincount(r, minlength=n_rows), 0)
    return crow, c, m.values()


def _pair_distances(items: _Items, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Original distances of the pairs (rows[i], cols[i]), through the same formulas as ``rows``."""
    out = torch.empty(len(rows), device=rows.device)
    block = max(1, (1 << 24) // items.qf.shape[1])  # ~64 MB of gathered features at a time
    for s in range(0, len(rows), block):
        r, c = rows[s: s + block], cols[s: s + block]
        f = torch.empty(len(r), items.qf.shape[1], device=r.device)
        r_is_q = r < items.nq
        f[r_is_q] = items.qf[r[r_is_q]]
        f[~r_is_q] = items.gf[r[~r_is_q] - items.nq]
        d = torch.empty(len(r), device=r.device)
        c_is_q = c < items.nq
        d[c_is_q] = items.to_q.pairs(f[c_is_q], c[c_is_q])
        d[~c_is_q] = items.to_g.pairs(f[~c_is_q], c[~c_is_q] - items.nq)
        out[s: s + block] = d
    return out


def re_ranking_chunks(qf: torch.Tensor, gf: torch.Tensor, k1: int = 20, k2: int = 6,
                      lambda_value: float = 0.3, metric: str = "euclidean", feat_norm: bool = False,
                      chunk_size: int = 256, pair_budget: int = 1 << 23
                      ) -> Iterator[Tuple[slice, torch.Tensor]]:
    """Yields ``(query slice, re-ranked distances [len(slice), Ng])`` chunk by chunk."""
    qf, gf = qf.float(), gf.float()
    items = _Items(qf, gf, metric, feat_norm)
    n, nq, ng, k = items.n, items.nq, len(gf), k1 + 1
    if n < k:
        raise ValueError(f"re-ranking needs at least k1 + 1 = {k} items, got {n}")
    nn, row_max = _neighbours(items, max(k, k2), chunk_size)
    sets, mask = _expanded_sets(nn, k1, chunk_size)
    # V: weights exp(-d(i, j)) over R*(i, k1), normalised per row (sparse)
    rows = torch.arange(n, device=qf.device).unsqueeze(1).expand_as(sets)[mask]
    cols = sets[mask]
    w = torch.exp(-_pair_distances(items, rows, cols) / row_max[rows])
    w = w / torch.zeros(n, device=w.device).index_add_(0, rows, w)[rows]
    crow, col, val = _csr(rows, cols, w, n, n)
    if k2 > 1:  # query expansion: V_i := mean of V over the k2 nearest neighbours of i
        owner, entry = _ragged(crow, nn[:, :k2].reshape(-1))
        crow, col, val = _csr(owner // k2, col[entry], val[entry] / k2, n, n)
    # inverted index over the gallery rows: for each column t, the gallery items j with V[j, t] > 0
    g_first = int(crow[nq])
    g_rows = torch.repeat_interleave(torch.arange(ng, device=qf.device), crow[nq + 1:] - crow[nq:-1])
    t_crow, t_row, t_val = _csr(col[g_first:], g_rows, val[g_first:], n, ng)
    for s in range(0, nq, chunk_size):
        stop = min(s + chunk_size, nq)
        overlap = torch.zeros((stop - s) * ng, device=qf.device)
        q_rows = torch.arange(s, stop, device=qf.device)
        owner, entry = _ragged(crow, q_rows)  # (query, t, V[q, t])
        cost = t_crow[col[entry] + 1] - t_crow[col[entry]]
        for block in _blocks(cost, pair_budget):
            o, e = owner[block], entry[block]
            pair_owner, pair_entry = _ragged(t_crow, col[e])  # gallery j with V[j, t] > 0
            contrib = torch.minimum(val[e][pair_owner], t_val[pair_entry])
            overlap.index_add_(0, o[pair_owner] * ng + t_row[pair_entry], contrib)
        overlap = overlap.view(stop - s, ng)
        jaccard = 1.0 - overlap / (2.0 - overlap)
        original = items.to_g(qf[s:stop]) / row_max[s:stop].unsqueeze(1)
        yield slice(s, stop), jaccard.mul_(1.0 - lambda_value).add_(original, alpha=lambda_value)


def _blocks(cost: torch.Tensor, budget: int):
    """Consecutive index ranges whose summed ``cost`` stays under ``budget`` (at least one item)."""
    ends = torch.cumsum(cost, 0)
    start = 0
    while start < len(cost):
        base = int(ends[start - 1]) if start else 0
        stop = int(torch.searchsorted(ends, base + budget, right=True))
        stop = max(stop, start + 1)
        yield slice(start, stop)
        start = stop


def re_ranking(qf, gf, k1: int = 20, k2: int = 6, lambda_value: float = 0.3, metric: str = "euclidean",
               feat_norm: bool = False, chunk_size: int = 256) -> torch.Tensor:
    """The re-ranked query x gallery distance matrix [Nq, Ng] (float32)."""
    qf, gf = torch.as_tensor(qf), torch.as_tensor(gf)
    with torch.no_grad():
        return torch.cat([d for _, d in re_ranking_chunks(qf, gf, k1, k2, lambda_value, metric,
                                                          feat_norm, chunk_size)])
