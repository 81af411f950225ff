"""Tests of utils/distance.py, utils/metrics.py and utils/reranking.py against slow, obviously-correct
references."""
import ast
import os

import numpy as np
import pytest
import torch

from utils.distance import GalleryDistance, pairwise_distance
from utils.metrics import eval_rank, evaluate
from utils.reranking import re_ranking

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def brute_force_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50):
    """One query at a time: stable argsort, drop same id + same camera, then CMC / AP / INP."""
    distmat = np.asarray(distmat, dtype=np.float64)
    max_rank = min(max_rank, distmat.shape[1])
    cmcs, aps, inps = [], [], []
    for i in range(distmat.shape[0]):
        order = np.argsort(distmat[i], kind="stable")
        junk = (g_pids[order] == q_pids[i]) & (g_camids[order] == q_camids[i])
        hits = (g_pids[order] == q_pids[i])[~junk]
        if not hits.any():
            continue
        positions = np.flatnonzero(hits) + 1  # 1-based ranks of the matches
        cmc = np.zeros(max_rank)
        if positions[0] <= max_rank:
            cmc[positions[0] - 1:] = 1.0
        cmcs.append(cmc)
        aps.append(np.mean(np.arange(1, len(positions) + 1) / positions))
        inps.append(len(positions) / positions[-1])
    if not cmcs:
        raise ValueError("no valid query")
    return {"cmc": np.mean(cmcs, 0), "mAP": float(np.mean(aps)), "mINP": float(np.mean(inps))}


def random_problem(rng, nq=23, ng=71, num_ids=9, num_cams=3, ties=False):
    q_pids = rng.integers(0, num_ids + 2, nq)  # some query ids are absent from the gallery
    g_pids = rng.integers(0, num_ids, ng)
    g_pids[: ng // 6] = -1  # distractors
    q_camids = rng.integers(0, num_cams, nq)
    g_camids = rng.integers(0, num_cams, ng)
    if ties:
        dist = rng.integers(0, 6, (nq, ng)).astype(np.float32)
    else:
        dist = rng.random((nq, ng)).astype(np.float32)
    return dist, q_pids, g_pids, q_camids, g_camids


def assert_same(a, b):
    np.testing.assert_allclose(a["cmc"], b["cmc"], rtol=0, atol=1e-12)
    assert a["mAP"] == pytest.approx(b["mAP"], abs=1e-12)
    assert a["mINP"] == pytest.approx(b["mINP"], abs=1e-12)


def reference_re_ranking(qf, gf, k1, k2, lam):
    """Dense, loop-by-loop k-reciprocal re-ranking on squared Euclidean distances (float64)."""
    x = np.concatenate([qf, gf]).astype(np.float64)
    n, nq = len(x), len(qf)
    d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    d = d / d.max(axis=1, keepdims=True)
    rank = np.argsort(d, axis=1, kind="stable")

    def reciprocal(i, k):
        fwd = rank[i, :k]
        return [j for j in fwd if i in rank[j, :k]]

    v = np.zeros((n, n))
    for i in range(n):
        r = reciprocal(i, k1 + 1)
        expanded = set(r)
        for c in r:
            rc = reciprocal(c, int(round(k1 / 2)) + 1)
            if len(set(rc) & set(r)) > 2 / 3 * len(rc):
                expanded |= set(rc)
        idx = sorted(expanded)
        w = np.exp(-d[i, idx])
        v[i, idx] = w / w.sum()
    if k2 > 1:
        v = np.stack([v[rank[i, :k2]].mean(0) for i in range(n)])
    final = np.zeros((nq, n - nq))
    for i in range(nq):
        for j in range(n - nq):
            m = np.minimum(v[i], v[nq + j]).sum()
            final[i, j] = (1 - lam) * (1 - m / (2 - m)) + lam * d[i, nq + j]
    return final


# ----------------------------------------------------------------------------- eval_rank
@pytest.mark.parametrize("seed", range(6))
def test_eval_rank_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    for trial in range(15):
        problem = random_problem(rng, nq=int(rng.integers(1, 30)), ng=int(rng.integers(2, 90)),
                                 ties=trial % 2 == 0)
        max_rank = int(rng.integers(1, 120))  # often larger than the gallery
        try:
            ref = brute_force_rank(*problem, max_rank=max_rank)
        except ValueError:
            with pytest.raises(ValueError):
                eval_rank(*problem, max_rank=max_rank)
            continue
        assert len(ref["cmc"]) == min(max_rank, problem[0].shape[1])
        for dist in (problem[0], problem[0].astype(np.float64), torch.from_numpy(problem[0])):
            out = eval_rank(dist, *problem[1:], max_rank=max_rank, chunk_size=int(rng.integers(1, 9)))
            assert_same(out, ref)
            assert isinstance(out["mAP"], float) and isinstance(out["cmc"], np.ndarray)


def test_eval_rank_hand_case():
    # query id 1 cam 0; gallery ranked: [id1 cam0 (junk), id2, id1 cam1, id3, id1 cam2]
    dist = np.array([[0.1, 0.2, 0.3, 0.4, 0.5]])
    g_pids, g_cams = np.array([1, 2, 1, 3, 1]), np.array([0, 1, 1, 1, 2])
    out = eval_rank(dist, np.array([1]), g_pids, np.array([0]), g_cams, max_rank=10)
    # kept ranking: id2, id1, id3, id1 -> matches at ranks 2 and 4; cmc length = gallery size
    np.testing.assert_array_equal(out["cmc"], [0, 1, 1, 1, 1])
    assert out["mAP"] == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert out["mINP"] == pytest.approx(2 / 4)


def test_eval_rank_ties_use_gallery_order():
    dist = np.zeros((1, 4), dtype=np.float32)  # all tied: ranking is gallery order
    out = eval_rank(dist, np.array([7]), np.array([3, 7, 3, 7]), np.array([0]), np.array([1, 1, 1, 1]))
    assert out["mAP"] == pytest.approx((1 / 2 + 2 / 4) / 2)
    np.testing.assert_array_equal(out["cmc"], [0, 1, 1, 1])


@pytest.mark.parametrize("seed", range(3))
def test_eval_rank_float32_signs_and_zeros(seed):
    """float32 rows are ordered through their bit patterns: negative values, -0.0 beside 0.0 (equal, so
    ordered by gallery index) and ties must rank as a plain stable sort ranks them."""
    rng = np.random.default_rng(seed)
    dist, *ids = random_problem(rng, nq=20, ng=60)
    dist = (rng.integers(-3, 4, dist.shape) * 0.5).astype(np.float32)  # negatives, many ties
    dist[rng.random(dist.shape) < 0.2] = -0.0
    ref = brute_force_rank(dist, *ids)
    assert_same(eval_rank(dist, *ids, chunk_size=7), ref)
    assert_same(eval_rank(torch.from_numpy(dist), *ids), ref)


def test_eval_rank_no_valid_query_raises():
    dist = np.random.rand(2, 3)
    with pytest.raises(ValueError, match="no query"):
        eval_rank(dist, np.array([1, 2]), np.array([1, 1, 5]), np.array([0, 0]), np.array([0, 0, 0]))


# ----------------------------------------------------------------------------- evaluate
def feature_problem(rng, nq=37, ng=150, d=16, num_ids=12):
    centres = rng.standard_normal((num_ids, d)).astype(np.float32)
    q_pids, g_pids = rng.integers(0, num_ids, nq), rng.integers(0, num_ids, ng)
    qf = centres[q_pids] + 0.8 * rng.standard_normal((nq, d)).astype(np.float32)
    gf = centres[g_pids] + 0.8 * rng.standard_normal((ng, d)).astype(np.float32)
    gf[5] = gf[6]  # an exact duplicate -> tied distances
    return qf, gf, q_pids, g_pids, rng.integers(0, 4, nq), rng.integers(0, 4, ng)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("feat_norm", [True, False])
def test_evaluate_equals_full_matrix(metric, feat_norm):
    rng = np.random.default_rng(3)
    qf, gf, q_pids, g_pids, q_cams, g_cams = feature_problem(rng)
    dist = pairwise_distance(qf, gf, metric, feat_norm)
    ref = brute_force_rank(dist.numpy(), q_pids, g_pids, q_cams, g_cams, max_rank=20)
    assert_same(eval_rank(dist, q_pids, g_pids, q_cams, g_cams, max_rank=20), ref)
    for chunk in (1, 5, 16, 37, 1000):  # 5 and 16 do not divide 37
        out = evaluate(torch.from_numpy(qf), gf, q_pids, g_pids, q_cams, g_cams, max_rank=20,
                       metric=metric, feat_norm=feat_norm, chunk_size=chunk)
        assert_same(out, ref)


def test_pairwise_distance_values():
    rng = np.random.default_rng(0)
    q, g = rng.standard_normal((4, 8)), rng.standard_normal((5, 8))
    sq = ((q[:, None] - g[None]) ** 2).sum(-1)
    np.testing.assert_allclose(pairwise_distance(q, g).numpy(), sq, rtol=1e-5, atol=1e-5)
    qn, gn = q / np.linalg.norm(q, axis=1, keepdims=True), g / np.linalg.norm(g, axis=1, keepdims=True)
    np.testing.assert_allclose(pairwise_distance(q, g, "euclidean", feat_norm=True).numpy(),
                               ((qn[:, None] - gn[None]) ** 2).sum(-1), atol=1e-5)
    np.testing.assert_allclose(pairwise_distance(q, g, "cosine").numpy(), 1 - qn @ gn.T, atol=1e-5)
    # feat_norm changes euclidean rankings: scale one gallery vector
    g2 = g.copy()
    g2[0] *= 100
    assert not np.allclose(pairwise_distance(q, g2).numpy()[:, 0],
                           pairwise_distance(q, g2, feat_norm=True).numpy()[:, 0])


@pytest.mark.parametrize("metric,feat_norm", [("euclidean", False), ("euclidean", True), ("cosine", False)])
def test_gallery_distance_pairs_are_entries_of_the_matrix(metric, feat_norm):
    """``GalleryDistance.pairs`` (re-ranking's per-pair distances) = the matrix entries it stands for."""
    g = torch.Generator().manual_seed(0)
    q, gal = torch.randn(6, 8, generator=g), 3 * torch.randn(5, 8, generator=g)
    dist = GalleryDistance(gal, metric, feat_norm)
    rows, cols = torch.tensor([0, 0, 3, 5, 2, 2]), torch.tensor([4, 1, 1, 0, 2, 3])
    torch.testing.assert_close(dist.pairs(q[rows], cols), dist(q)[rows, cols], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="metric must be one of"):
        GalleryDistance(gal, "manhattan")


def test_distances_have_their_own_module():
    """utils.distance imports neither evaluation module; re-ranking does not import evaluation."""
    imported = {}
    for name in ("distance", "metrics", "reranking"):
        with open(os.path.join(ROOT, "utils", f"{name}.py"), encoding="utf-8") as f:
            tree = ast.parse(f.read())
        imported[name] = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        imported[name] |= {a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
    assert not imported["distance"] & {"utils.metrics", "utils.reranking"}
    assert "utils.metrics" not in imported["reranking"]
    assert {"utils.distance", "utils.reranking"} <= imported["metrics"]


def test_evaluate_feat_norm_matters():
    rng = np.random.default_rng(1)
    qf, gf, q_pids, g_pids, q_cams, g_cams = feature_problem(rng)
    gf = gf * rng.uniform(0.1, 10, (len(gf), 1)).astype(np.float32)  # scrambles unnormalised ranks
    a = evaluate(qf, gf, q_pids, g_pids, q_cams, g_cams, feat_norm=True)
    b = evaluate(qf, gf, q_pids, g_pids, q_cams, g_cams, feat_norm=False)
    assert a["mAP"] != b["mAP"]


# ----------------------------------------------------------------------------- re-ranking
@pytest.mark.parametrize("k1,k2", [(4, 3), (6, 1)])
def test_re_ranking_matches_reference(k1, k2):
    rng = np.random.default_rng(k1)
    qf, gf, *_ = feature_problem(rng, nq=9, ng=31, d=8, num_ids=5)
    gf[6] += 0.01  # no exact ties for the reference's neighbour lists
    ref = reference_re_ranking(qf, gf, k1, k2, 0.3)
    out = re_ranking(torch.from_numpy(qf), torch.from_numpy(gf), k1, k2, 0.3, chunk_size=7)
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-4, atol=1e-5)


def test_evaluate_with_rerank_equals_rank_of_reranked_matrix():
    rng = np.random.default_rng(5)
    qf, gf, q_pids, g_pids, q_cams, g_cams = feature_problem(rng, nq=20, ng=60)
    dist = re_ranking(qf, gf, 5, 3, 0.3, feat_norm=True)
    ref = eval_rank(dist, q_pids, g_pids, q_cams, g_cams)
    out = evaluate(qf, gf, q_pids, g_pids, q_cams, g_cams, feat_norm=True, rerank=(5, 3, 0.3), chunk_size=7)
    assert_same(out, ref)
