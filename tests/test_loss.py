"""Tests of loss/: hand-computed ID and triplet losses, the weighted sum (Eq. 12)."""
import math
from collections import OrderedDict

import pytest
import torch

from configs import get_cfg_defaults
from loss import CrossEntropyLabelSmooth, TripletLoss, build_loss, euclidean_dist, id_accuracy


def test_label_smoothing_hand_case():
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    log_p = logits - torch.logsumexp(logits, 1, keepdim=True)
    eps = 0.1
    target = torch.tensor([(1 - eps) + eps / 3, eps / 3, eps / 3])
    expected = -(target * log_p[0]).sum()
    got = CrossEntropyLabelSmooth(3, eps)(logits, torch.tensor([0]))
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    plain = CrossEntropyLabelSmooth(3, 0.0)(logits, torch.tensor([0]))
    assert plain.item() == pytest.approx(-log_p[0, 0].item(), rel=1e-6)
    with pytest.raises(ValueError):
        CrossEntropyLabelSmooth(4, eps)(logits, torch.tensor([0]))


def _line_batch():
    # 1-d points: id 0 at 0 and 1, id 1 at 3 and 10
    feat = torch.tensor([[0.0], [1.0], [3.0], [10.0]])
    pids = torch.tensor([0, 0, 1, 1])
    # hardest positive / negative per anchor
    d_ap = torch.tensor([1.0, 1.0, 7.0, 7.0])
    d_an = torch.tensor([3.0, 2.0, 2.0, 9.0])
    return feat, pids, d_ap, d_an


def test_euclidean_not_squared():
    d = euclidean_dist(torch.tensor([[0.0, 0.0], [3.0, 4.0]]))
    assert d[0, 1].item() == pytest.approx(5.0, rel=1e-5)


def test_euclidean_survives_a_large_common_component():
    """Features that share a vector of norm 100 and differ by ~0.2 (a drifting fused feature): the
    expansion |x|^2 + |y|^2 - 2x.y in float32 would be off by ~0.04 (~20%); centred, it is exact."""
    g = torch.Generator().manual_seed(0)
    common = torch.randn(1, 192, generator=g)
    x = common / common.norm() * 100 + 0.01 * torch.randn(32, 192, generator=g)
    reference = torch.cdist(x.double(), x.double())
    off_diagonal = ~torch.eye(32, dtype=torch.bool)
    error = (euclidean_dist(x).double() - reference)[off_diagonal].abs().max()
    assert error < 1e-5 * reference[off_diagonal].min(), error
    # and the triplet loss, which only sees distances, is unchanged by the shift
    pids = torch.arange(32) % 8
    assert torch.allclose(TripletLoss()(x, pids), TripletLoss()(x - x.mean(0), pids), atol=1e-6)


def test_soft_margin_batch_hard_hand_case():
    feat, pids, d_ap, d_an = _line_batch()
    expected = torch.log1p(torch.exp(d_ap - d_an)).mean()  # Eq. 11
    got = TripletLoss(0.0)(feat, pids)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def test_hinge_margin_hand_case():
    feat, pids, d_ap, d_an = _line_batch()
    expected = torch.clamp(d_ap - d_an + 0.3, min=0).mean()
    assert TripletLoss(0.3)(feat, pids).item() == pytest.approx(expected.item(), rel=1e-5)


def test_hard_mining_gradient_hits_only_hardest_pairs():
    """Hinge margin 0.3 on the line batch: anchor 0 (1 - 3 + 0.3), anchor 1 (1 - 2 + 0.3) and anchor 3
    (7 - 9 + 0.3) are inside the margin; only anchor 2 (at 3) counts: hardest positive the point at 10
    (7), hardest negative the point at 1 (2). So loss = (|x2 - x3| - |x2 - x1| + 0.3) / 4 and the
    gradient is exactly +1/4 on x1, -1/2 on x2, +1/4 on x3 and 0 on x0, which is in no active triplet
    (mining the easiest pairs, or a mean over all pairs, moves x0)."""
    feat, pids, _, _ = _line_batch()
    feat = feat.clone().requires_grad_(True)
    loss = TripletLoss(0.3)(feat, pids)
    assert loss.item() == pytest.approx(5.3 / 4, rel=1e-5)
    loss.backward()
    torch.testing.assert_close(feat.grad, torch.tensor([[0.0], [0.25], [-0.5], [0.25]]), rtol=0, atol=1e-5)


def _hardest_by_hand(feat, pids):
    """Per anchor, by looping over the pairs: the farthest same-id item and the nearest other-id item."""
    positives, negatives = [], []
    for a in range(len(feat)):
        dist = [float((feat[a] - feat[j]).norm()) for j in range(len(feat))]
        same = [j for j in range(len(feat)) if pids[j] == pids[a]]
        other = [j for j in range(len(feat)) if pids[j] != pids[a]]
        positives.append(max(same, key=lambda j: dist[j]))
        negatives.append(min(other, key=lambda j: dist[j]))
    return positives, negatives


def test_soft_margin_gradient_equals_the_hand_mined_triplets():
    """Soft margin on random 2-d features: the gradient equals that of Eq. 11 written out over the
    (anchor, hardest positive, hardest negative) triplets found by hand, and no other pairs."""
    g = torch.Generator().manual_seed(0)
    feat = torch.randn(9, 2, generator=g, dtype=torch.float64)
    pids = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
    pos, neg = _hardest_by_hand(feat, pids)
    anchors = torch.arange(9)
    x = feat.clone().requires_grad_(True)
    gap = (x[anchors] - x[pos]).norm(dim=1) - (x[anchors] - x[neg]).norm(dim=1)
    torch.nn.functional.softplus(gap).mean().backward()
    y = feat.float().requires_grad_(True)
    TripletLoss(0.0)(y, pids).backward()
    torch.testing.assert_close(y.grad.double(), x.grad, rtol=1e-4, atol=1e-5)


def test_soft_margin_no_overflow():
    # d_ap - d_an ~ 1000: the naive log(1 + exp(.)) overflows to inf
    feat = torch.tensor([[0.0], [1000.0], [1.0], [2.0]])
    pids = torch.tensor([0, 0, 1, 1])
    loss = TripletLoss(0.0)(feat.requires_grad_(True), pids)
    gaps = torch.tensor([1000.0 - 1.0, 1000.0 - 998.0, 1.0 - 1.0, 1.0 - 2.0], dtype=torch.float64)
    expected = (torch.clamp(gaps, min=0) + torch.log1p(torch.exp(-gaps.abs()))).mean()
    assert torch.isfinite(loss) and loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert torch.isfinite(feat.grad).all()


def test_triplet_runs_in_float32_under_autocast():
    feat = torch.randn(8, 4).to(torch.bfloat16)
    pids = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = TripletLoss(0.0)(feat, pids)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(TripletLoss(0.0)(feat.float(), pids).item(), rel=1e-5)


def test_no_negative_gives_zero():
    loss = TripletLoss(0.0)(torch.randn(4, 3), torch.zeros(4, dtype=torch.long))
    assert loss.item() == 0.0


def test_build_loss_sums_weighted_terms():
    cfg = get_cfg_defaults()
    cfg.MODEL.ID_LOSS_WEIGHT = 0.5
    cfg.MODEL.TRIPLET_LOSS_WEIGHT = 2.0
    torch.manual_seed(0)
    pids = torch.tensor([0, 0, 1, 1, 2, 2])
    outputs = OrderedDict((n, (torch.randn(6, 5), torch.randn(6, 7))) for n in ("cnn", "transformer", "htm_cnn"))
    total, terms = build_loss(cfg, 5)(outputs, pids)
    assert list(terms) == ["cnn/id", "cnn/triplet", "transformer/id", "transformer/triplet",
                           "htm_cnn/id", "htm_cnn/triplet"]
    ce, tri = CrossEntropyLabelSmooth(5, 0.1), TripletLoss(0.0)
    for n, (logits, feat) in outputs.items():
        assert terms[f"{n}/id"].item() == pytest.approx(0.5 * ce(logits, pids).item(), rel=1e-6)
        assert terms[f"{n}/triplet"].item() == pytest.approx(2.0 * tri(feat, pids).item(), rel=1e-6)
    assert total.item() == pytest.approx(sum(t.item() for t in terms.values()), rel=1e-6)  # Eq. 12


def test_id_accuracy():
    pids = torch.tensor([0, 1])
    outputs = {"a": (torch.tensor([[1.0, 0.0], [0.0, 1.0]]), None),
               "b": (torch.tensor([[1.0, 0.0], [1.0, 0.0]]), None)}
    assert id_accuracy(outputs, pids, "a") == 1.0
    assert id_accuracy(outputs, pids) == pytest.approx(0.75)
    assert math.isclose(id_accuracy(outputs, pids, "b"), 0.5)
