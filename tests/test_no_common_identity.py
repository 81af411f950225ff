"""A gallery with no identity in common with its query (or only under the query's own camera) is a clear error
that counts the queries without a match and says what the evaluator needs: through utils.metrics.evaluate /
eval_rank, and through test_net.py on a CSV dataset whose query and gallery share no identity."""
import numpy as np
import pytest
import torch

from configs import load_cfg
from datasets import make_dataloader
from model import build_model
from tests.test_cli import TINY, assert_clean_failure, run_script
from tests.test_csv_dataset import ROWS, make_csv_dir
from utils.errors import UsageError
from utils.metrics import NoMatchError, eval_rank, evaluate, matchable_queries

FEATS = np.random.default_rng(0).standard_normal((10, 8)).astype(np.float32)


def _evaluate(q_pids, g_pids, q_camids, g_camids):
    nq = len(q_pids)
    return evaluate(FEATS[:nq], FEATS[nq:nq + len(g_pids)], np.array(q_pids), np.array(g_pids), np.array(q_camids),
                    np.array(g_camids))


def test_a_gallery_without_the_query_identities_is_a_usage_error_that_counts_them():
    with pytest.raises(NoMatchError) as e:
        _evaluate([1, 2, 2], [5, 6, 6, 0], [0, 1, 0], [0, 1, 2, 0])
    assert isinstance(e.value, UsageError) and isinstance(e.value, ValueError)  # one line at the entry points
    assert str(e.value) == (
        "no query has a matching gallery item: the evaluator (CMC/mAP/mINP, Market-1501 protocol) needs at least one "
        "query whose identity is in the gallery seen by another camera; of the 3 queries, 3 have an identity that "
        "is not in the gallery (4 items; 0 identities in common with the queries) and 0 have it there only under "
        "their own camera")


def test_identities_only_under_the_query_s_own_camera_are_counted_apart():
    q, g = ([1, 2, 3], [0, 1, 0]), ([1, 2, 9, 1], [0, 1, 1, 0])
    with pytest.raises(NoMatchError, match=r"of the 3 queries, 1 have an identity that is not in the gallery \(4 "
                                           r"items; 2 identities in common with the queries\) and 2 have it there "
                                           r"only under their own camera"):
        _evaluate(q[0], g[0], q[1], g[1])
    with pytest.raises(NoMatchError, match="of the 3 queries, 1 have"):  # eval_rank too
        eval_rank(np.random.rand(3, 4), q[0], g[0], q[1], g[1])
    out = _evaluate(q[0], g[0] + [2], q[1], g[1] + [3])  # one query with a match: evaluated, the others skipped
    assert 0 < out["mAP"] <= 1


@pytest.mark.parametrize("seed", range(4))
def test_matchable_queries_is_the_protocol_s_valid_query(seed):
    rng = np.random.default_rng(seed)
    q_pids, q_cams = rng.integers(0, 8, 30), rng.integers(0, 3, 30)
    g_pids, g_cams = rng.integers(0, 8, 20), rng.integers(0, 3, 20)
    present, matchable = matchable_queries(*(torch.from_numpy(x) for x in (q_pids, g_pids, q_cams, g_cams)))
    expected = [bool(((g_pids == p) & (g_cams != c)).any()) for p, c in zip(q_pids, q_cams)]
    assert matchable.tolist() == expected and present.tolist() == [p in g_pids for p in q_pids]


def test_test_net_ends_with_one_line_naming_the_test_set(tmp_path):
    rows = dict(ROWS, gallery=[("images/g_0.png", 5, 0), ("images/g_1.png", 6, 1), ("images/g_2.png", 0, 1)])
    folder = make_csv_dir(tmp_path / "disjoint", rows)  # queries: identities 12 and 40
    opts = ["DATASETS.NAMES", "csv", "DATASETS.CSV_DIR", folder, "DATALOADER.NUM_WORKERS", "0",
            "SOLVER.IMS_PER_BATCH", "4", "DATALOADER.NUM_INSTANCE", "2"]  # 4 training images
    cfg = load_cfg(TINY, opts + ["MODEL.PRETRAIN_CHOICE", "none"])
    data = make_dataloader(cfg)
    torch.manual_seed(0)
    weight = tmp_path / "w.pth"
    torch.save({"model": build_model(cfg, data.num_classes, data.num_cams).state_dict(), "epoch": 1}, weight)
    rc, err = run_script("test_net.py", "--config_file", TINY, "OUTPUT_DIR", str(tmp_path / "out"), *opts,
                         "TEST.WEIGHT", str(weight))
    assert_clean_failure(rc, err, "test set 'csv' (DATASETS.TEST_NAMES): no query has a matching gallery item",
                         "of the 2 queries, 2 have an identity that is not in the gallery (3 items; 0 identities "
                         "in common with the queries)")
