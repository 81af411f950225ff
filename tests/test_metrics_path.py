"""Rank-k (CMC), mAP and mINP as the trainer and test_net.py report them, against values built by hand.

The path under test is the one both use: ``processor.inference.evaluate_test_sets`` (feature extraction over a
test set's loader, then ``compute_metrics``: ``utils.metrics.evaluate`` and the Rank-k read from the CMC), and
for the trainer ``Trainer.evaluate`` (its results entry). The "model" returns its input, so the features, hence
the distances, are chosen here: gallery item i is the unit vector e_i and query j the vector of its scores
s_ji, so ||q_j - g_i||^2 = ||q_j||^2 + 1 - 2 s_ji and the cosine is s_ji / ||q_j||; either way (and with or
without TEST.FEAT_NORM, which only rescales the query) gallery items come in the order of decreasing score,
which is the ranking written below for each query.

Market protocol: gallery items of the query's identity *and* camera are dropped (junk); a query with no
match left is skipped. The queries' first matches (after junk removal) are at ranks 1, 2, 6 and 11, so
Rank-1/5/10 each change if the CMC is read one place off; one query has only junk and must be skipped.
"""
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from configs import load_cfg
from datasets.loader import TestSet
from processor.inference import METRIC_KEYS, evaluate_test_sets
from processor.trainer import Trainer
from utils.misc import resolve_amp

# gallery: (pid, camid); pids 0-4 are the queries' identities, 9 and 8 distractors
GALLERY = [(0, 1), (0, 0), (0, 2),            # 0-2: pid 0 (item 1 shares query 0's camera: junk for it)
           (1, 0), (1, 1), (1, 2),            # 3-5: pid 1 (item 3 junk for query 1)
           (2, 0), (2, 1),                    # 6-7: pid 2 (item 7 junk for query 2)
           (3, 0), (3, 2),                    # 8-9: pid 3
           (4, 2),                            # 10: pid 4, only in the camera of query 4: junk, no valid match
           (9, 0), (9, 1), (9, 2), (8, 0), (8, 1)]
# queries: (pid, camid, gallery indices from nearest to farthest)
QUERIES = [
    (0, 0, [1, 0, 11, 12, 2, 3, 4, 5, 6, 7, 8, 9, 10, 13, 14, 15]),   # kept: 0 m, 11, 12, 2 m: matches at 1, 4
    (1, 0, [3, 11, 4, 12, 13, 14, 15, 5, 0, 1, 2, 6, 7, 8, 9, 10]),   # kept: 11, 4 m, 12..15, 5 m: at 2, 7
    (2, 1, [11, 12, 7, 13, 14, 15, 6, 0, 1, 2, 3, 4, 5, 8, 9, 10]),   # kept: 11..15, 6 m: at 6
    (3, 1, [0, 1, 2, 3, 4, 5, 6, 7, 10, 11, 8, 12, 13, 14, 9, 15]),   # no junk: matches at 11, 15
    (4, 2, [10, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15]),   # only junk: skipped
]
# by hand, from the match ranks above (4 valid queries)
FIRST_MATCH = [1, 2, 6, 11]
AP = [(1 / 1 + 2 / 4) / 2, (1 / 2 + 2 / 7) / 2, 1 / 6, (1 / 11 + 2 / 15) / 2]
INP = [2 / 4, 2 / 7, 1 / 6, 2 / 15]
EXPECTED = {"rank1": 1 / 4, "rank5": 2 / 4, "rank10": 3 / 4, "mAP": float(np.mean(AP)), "mINP": float(np.mean(INP))}


def features():
    """(query + gallery features, pids, camids): gallery one-hot, each query its scores (rank 0 scores G)."""
    g = len(GALLERY)
    query = np.zeros((len(QUERIES), g))
    for j, (_, _, order) in enumerate(QUERIES):
        assert sorted(order) == list(range(g))
        query[j, order] = np.arange(g, 0, -1) / g
    feats = np.concatenate([query, np.eye(g)])
    pids = [q[0] for q in QUERIES] + [p for p, _ in GALLERY]
    camids = [q[1] for q in QUERIES] + [c for _, c in GALLERY]
    return feats, pids, camids


def hand_metrics(feats, pids, camids, num_query, metric):
    """CMC / AP / INP of the Market protocol, one query at a time, from float64 distances computed here."""
    q, g = feats[:num_query], feats[num_query:]
    if metric == "cosine":
        dist = 1 - (q / np.linalg.norm(q, axis=1, keepdims=True)) @ g.T
    else:
        dist = np.linalg.norm(q[:, None, :] - g[None, :, :], axis=2)
    g_pids, g_cams = np.array(pids[num_query:]), np.array(camids[num_query:])
    firsts, aps, inps = [], [], []
    for j in range(num_query):
        order = np.argsort(dist[j], kind="stable")
        assert order.tolist() == QUERIES[j][2]                      # the distances give the intended ranking
        kept = [i for i in order if not (g_pids[i] == pids[j] and g_cams[i] == camids[j])]
        ranks = [r for r, i in enumerate(kept, start=1) if g_pids[i] == pids[j]]
        if not ranks:
            continue
        firsts.append(ranks[0])
        aps.append(sum(n / r for n, r in enumerate(ranks, start=1)) / len(ranks))
        inps.append(len(ranks) / ranks[-1])
    rank = {f"rank{k}": sum(f <= k for f in firsts) / len(firsts) for k in (1, 5, 10)}
    return dict(rank, mAP=float(np.mean(aps)), mINP=float(np.mean(inps))), firsts


class Identity(torch.nn.Module):
    """The 'model': the image is the feature (one parameter so that a Trainer can read the dtype)."""

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, images, camids):
        return images


def handmade_test_set(feats, pids, camids, num_query):
    items = [(torch.tensor(f, dtype=torch.float32), p, c, i) for i, (f, p, c) in enumerate(zip(feats, pids, camids))]
    return TestSet("handmade", DataLoader(items, batch_size=3), num_query, 0)


def cfg_of(metric, feat_norm):
    return load_cfg("", ["TEST.METRIC", metric, "TEST.FEAT_NORM", str(feat_norm), "MODEL.DEVICE", "cpu",
                         "OUTPUT_DIR", ""])


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("feat_norm", [True, False])
def test_rank_k_map_minp_of_the_evaluation_path_equal_the_hand_built_ones(metric, feat_norm):
    feats, pids, camids = features()
    num_query = len(QUERIES)
    hand, firsts = hand_metrics(feats, pids, camids, num_query, metric)
    assert firsts == FIRST_MATCH                                    # query 4 skipped
    assert hand == pytest.approx(EXPECTED, abs=1e-12)
    cfg = cfg_of(metric, feat_norm)
    device = torch.device("cpu")
    test_sets = [handmade_test_set(feats, pids, camids, num_query)]
    (test_set, metrics, (f, p, c)), = evaluate_test_sets(cfg, Identity(), test_sets, device, resolve_amp("off", device))
    assert test_set.name == "handmade" and p.tolist() == pids and c.tolist() == camids
    assert torch.equal(f, torch.tensor(feats, dtype=torch.float32))
    assert set(metrics) == set(METRIC_KEYS)
    for key in METRIC_KEYS:
        assert metrics[key] == pytest.approx(EXPECTED[key], abs=1e-6), key


def test_trainer_reports_the_same_metrics():
    """``Trainer.evaluate``: what the trainer logs, compares for model_best and writes into results.json."""
    feats, pids, camids = features()
    cfg = cfg_of("euclidean", True)
    model = Identity()
    test_set = handmade_test_set(feats, pids, camids, len(QUERIES))
    trainer = Trainer(cfg, model, loss_fn=None, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                      scheduler=None, train_loader=None, val_loader=test_set.loader, num_query=len(QUERIES),
                      device=torch.device("cpu"), test_sets=[test_set])
    entry = trainer.evaluate(3)
    assert entry["epoch"] == 3 and trainer.latest is entry and trainer.best is entry
    for key in METRIC_KEYS:
        assert entry[key] == pytest.approx(EXPECTED[key], abs=1e-6), key
        assert entry["per_dataset"]["handmade"][key] == entry[key]
