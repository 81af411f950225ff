#!/usr/bin/env python
"""Open-set thresholds of a trained model: genuine and impostor similarity distributions of a query/gallery
set, TAR at FAR 1e-1 / 1e-2 / 1e-3, the equal error rate, and the threshold for a requested FAR.

    # saved features: test_net.py --save-features F, or tools/extract_features.py --query Q --gallery G --out F
    python tools/calibrate.py --features F.npz [--far 1e-3] [--out calib.json] [--figure calib.png]
    # a trained model on a test set (DATASETS.TEST_NAMES: any registered dataset, or the CSV dataset)
    python tools/calibrate.py --config_file C [--dataset NAME] [--far 1e-3] TEST.WEIGHT W [KEY VALUE ...]
    # ... and write the recommended threshold into an export's metadata (tools/export.py write_threshold)
    python tools/calibrate.py --features F.npz --far 1e-3 --write-to model.onnx

With a config the features are extracted as ``test_net.py`` extracts them (``make_dataloader``,
``processor.inference.evaluate_test_sets``: TEST.FEAT, TEST.NECK_FEAT, TEST.FLIP, the dataset's cameras) on the
test set ``--dataset`` (default: the first of DATASETS.TEST_NAMES; e.g. ``DATASETS.TEST_NAMES csv
DATASETS.CSV_DIR D`` for your own CSV dataset); its retrieval metrics are recorded too. Defaults: ``--out``
OUTPUT_DIR/calibration.json (with a config) or ``<F>_calibration.json`` beside the features; ``--figure`` the
JSON's name with ``.png``.

Similarity: the cosine similarity of the L2-normalised features (whatever TEST.METRIC), a float32 matrix
product as evaluation computes it. Decision rule: a pair is accepted ("same identity") when its similarity is
**strictly greater** than the threshold (thresholds are float32 values: compare in float32 or float64 alike).

Pairs: every query x gallery pair, where
  * genuine: same identity, **different camera**;
  * left out: same identity and same camera (the evaluator's junk: near-duplicate frames of one track that
    would inflate the TAR; a tracker links those by motion, the threshold is for re-identification);
  * impostor: different identities, **any cameras** (same-camera impostors share background and light,
    the hardest ones: the FAR, hence the threshold, guards against them too).
So the threshold is conservative both ways: its FAR counts every impostor, its TAR only cross-camera
matches. Images with a negative pid (Market-1501 junk, -1) are left out; Market's distractors (pid 0) are
impostors to everyone. When the features file has no cameras, every same-identity pair is genuine (a warning
says so). Identities may be integers or names (per-identity folders).

FAR(t) = impostor pairs with similarity > t / impostor pairs; TAR(t) = genuine pairs with similarity > t /
genuine pairs; FRR = 1 - TAR.

Threshold for a FAR f: with N impostor pairs, at most k = floor(f * N) of them may be accepted (f read as the
decimal written, so 0.29 * 100 is 29); the threshold is the (k + 1)-th largest impostor similarity: the
smallest threshold whose FAR is <= f, so the TAR there is the largest any threshold with FAR <= f reaches.
Impostors tied with it are rejected with it, so ties can only lower the FAR reached (``achieved_far``). When
k = 0 (N < 1/f) the FAR cannot be measured on this set: the entry says ``unreachable`` (threshold and TAR
null) and ``--write-to`` refuses it.

EER: among the observed similarities t (every genuine and impostor value), the one with the smallest
|FAR(t) - FRR(t)| (compared exactly in integers; the smaller t on a tie); EER = (FAR + FRR) / 2 there, and
FAR and FRR at it are reported (their gap says how finely the data resolve the crossing).

How (exact, in bounded memory): the similarity matrix is made ``--chunk-pairs`` pairs (whole query rows) at
a time and read twice. Each float32 similarity maps to a 32-bit key that sorts as the value does. Pass 1
keeps every genuine similarity (sorted: the genuine side of the ROC is an exact sort) and counts the
impostors per value of the key's upper 18 bits (a 2^18-bin histogram: exact impostor counts above any of its
boundaries); pass 2 counts, in the few upper-bit bins holding a wanted impostor order statistic or the EER
crossing, the impostors per lower 14 bits, which makes those exact: every figure equals that of a full sort
of all pairs (tests/test_calibrate.py checks them against a brute-force sweep). Memory bound, besides the
features and their L2-normalised copy: about 30 bytes per pair of a chunk (the default 2^22 pairs: ~120 MB;
measured: 101 MB numpy peak + the 16 MB float32 chunk), a few copies of the 2 MB histogram, and 4 bytes per
genuine pair (each query's true matches: MSMT17's 11,659 queries have well under a million), whatever the
number of impostor pairs. Keeping every pair instead would take 3.8 GB (4 bytes a pair) on MSMT17's
11,659 x 82,161 pairs. Time: two matrix products of the query and gallery features, as
evaluation makes one, plus a few numpy passes over each chunk.

``--write-to EXPORT_FILE``: the threshold for ``--far`` becomes ``recommended_threshold`` in the metadata of an
ONNX / TorchScript file of ``tools/export.py`` (its ``write_threshold``); the file is checked before any work,
an unreachable FAR is refused (the file is left as it was), and with a config a warning says when the export
was made from another checkpoint than TEST.WEIGHT. The export should give the calibrated feature (the same
TEST.FEAT / NECK_FEAT / FLIP); the tracker compares the cosine similarity of its features (L2-normalise them
if the export does not) with ``>``.

Outputs: the JSON (figures, pair counts and rules, distribution summaries, the source) and a PNG (both
distributions' histograms, each normalised to density, with the thresholds; the ROC, TAR against FAR on a log
axis, at the coarse-bin boundaries, where it is exact, with the reported points marked).
"""
import argparse
import json
import logging
import math
import os
import sys
import zipfile
from fractions import Fraction
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from utils.checkpoint import atomic_write_text  # noqa: E402
from utils.cli import ConfigArgumentParser  # noqa: E402
from utils.errors import UsageError, cli_entry  # noqa: E402

logger = logging.getLogger(__name__)

# FARs always reported (tar_at_far), and the default of --far.
REPORTED_FARS = (1e-1, 1e-2, 1e-3)
DEFAULT_FAR = 1e-3
CALIBRATION_FILE = "calibration.json"  # in OUTPUT_DIR, with a config and no --out
# (query, gallery) feature keys of the files written by test_net.py --save-features and tools/extract_features.py.
SAVED_FEATURE_KEYS = (("query_feats", "gallery_feats"), ("query_features", "gallery_features"))
SIMILARITY = "cosine similarity of the L2-normalised features (float32)"
DECISION_RULE = "same identity when similarity > threshold"
PAIR_RULE = ("query x gallery pairs: genuine = same identity, different camera; impostor = different identities "
             "(any cameras); same identity and same camera left out; negative pids left out")
PAIR_RULE_NO_CAMERAS = ("query x gallery pairs: genuine = same identity (cameras unknown: all of them); impostor = "
                        "different identities; negative pids left out")
THRESHOLD_RULE = ("threshold for FAR f: the (floor(f * N) + 1)-th largest of the N impostor similarities, the "
                  "smallest threshold whose FAR is <= f (tied impostors rejected with it); unreachable when N < 1/f")
EER_RULE = ("EER: the observed similarity t with the smallest |FAR(t) - FRR(t)| (smaller t on a tie); "
            "EER = (FAR + FRR) / 2 there")
CHUNK_PAIRS = 1 << 22  # similarities made at a time (whole query rows; at least one row)
FINE_BITS = 14         # a key = coarse bin (upper 32 - FINE_BITS bits) | position in it (lower FINE_BITS bits)
ROC_POINTS = 400
HISTOGRAM_BINS = 100

_SIGN = np.uint32(0x80000000)
_FINE_MASK = (1 << FINE_BITS) - 1


# ----------------------------------------------------------------------------- sortable keys of float32 values
def similarity_keys(values: np.ndarray) -> np.ndarray:
    """uint32 keys that sort as the float32 ``values`` do (-0.0 and 0.0 get one key): a positive value gets
    its bits with the sign bit set, a negative one its bits inverted."""
    keys = (np.asarray(values, dtype=np.float32) + np.float32(0.0)).view(np.uint32)  # + 0.0 turns -0.0 into 0.0
    flip = keys.view(np.int32) >> 31  # -1 (all bits) where negative, else 0
    flip.view(np.uint32)[...] |= _SIGN  # all bits, or the sign bit
    keys ^= flip.view(np.uint32)
    return keys


def key_values(keys: np.ndarray) -> np.ndarray:
    """The float32 values of :func:`similarity_keys`' keys."""
    keys = np.asarray(keys, dtype=np.uint32)
    return np.where(keys & _SIGN, keys ^ _SIGN, ~keys).astype(np.uint32).view(np.float32)


def key_value(key: int) -> float:
    return float(key_values(np.array([key], dtype=np.uint32))[0])


# ----------------------------------------------------------------------------- the two passes over all pairs
def _codes(q_pids: np.ndarray, g_pids: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Identities of both sides as integer codes (names or numbers; equal codes = equal identities)."""
    _, inverse = np.unique(np.concatenate([q_pids, g_pids]), return_inverse=True)
    inverse = inverse.reshape(-1).astype(np.int64)
    return inverse[:len(q_pids)], inverse[len(q_pids):]


def _not_junk(pids: np.ndarray) -> np.ndarray:
    """True where the pid is not Market-1501 junk (a negative integer, or a name like ``-1``)."""
    if np.issubdtype(pids.dtype, np.integer):
        return pids >= 0
    return np.array([not (str(p).startswith("-") and str(p)[1:].isdigit()) for p in pids], dtype=bool)


class _Pairs:
    """The query x gallery similarities, ``rows`` queries at a time, with each pair's kind."""

    def __init__(self, qf, gf, q_pids, g_pids, q_camids, g_camids, chunk_pairs: int, device):
        import torch
        import torch.nn.functional as F

        from utils.distance import default_device, to_tensor

        q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
        keep_q, keep_g = _not_junk(q_pids), _not_junk(g_pids)
        self.cameras = q_camids is not None and g_camids is not None
        self.qp, self.gp = _codes(q_pids[keep_q], g_pids[keep_g])
        self.qc = np.asarray(q_camids, dtype=np.int64)[keep_q] if self.cameras else None
        self.gc = np.asarray(g_camids, dtype=np.int64)[keep_g] if self.cameras else None
        device = torch.device(device) if device is not None else default_device(qf)
        with torch.no_grad():
            self.q = F.normalize(to_tensor(qf, device, torch.float32)[torch.as_tensor(keep_q, device=device)], dim=1)
            self.g = F.normalize(to_tensor(gf, device, torch.float32)[torch.as_tensor(keep_g, device=device)], dim=1)
        self.rows = max(1, int(chunk_pairs) // max(1, len(self.gp)))
        self.junk = (int((~keep_q).sum()), int((~keep_g).sum()))

    def __iter__(self) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        """``(genuine, impostor)`` similarities (float32) of each chunk of queries."""
        import torch

        for start in range(0, len(self.qp), self.rows):
            stop = start + self.rows
            with torch.no_grad():
                sim = (self.q[start:stop] @ self.g.t()).cpu().numpy()
            same = self.qp[start:stop, None] == self.gp[None, :]
            genuine = sim[same & (self.qc[start:stop, None] != self.gc[None, :]) if self.cameras else same]
            np.logical_not(same, out=same)
            yield genuine, sim[same]


class PairScores:
    """What the two passes keep: the genuine keys (sorted), the impostor histograms, the pair counts.

    ``coarse[b]``: impostors whose key's upper bits are b; ``fine[b][l]``: those of them whose lower bits are
    l (only for the resolved bins b); ``above[b]``: impostors in the bins after b.
    """

    def __init__(self, genuine: np.ndarray, coarse: np.ndarray, counts: Dict[str, Any]):
        self.genuine = genuine  # uint32 keys, ascending
        self.coarse = coarse
        self.above = np.concatenate([np.cumsum(coarse[::-1])[::-1][1:], [0]]).astype(np.int64)
        self.num_genuine, self.num_impostor = len(genuine), int(coarse.sum())
        self.fine: Dict[int, np.ndarray] = {}
        self.counts = counts
        self.impostor_summary: Dict[str, Any] = {}
        self.histogram_edges = np.zeros(0)
        self.impostor_histogram = np.zeros(0)

    # exact counts at a key (its coarse bin must be resolved, or the key the last of its bin)
    def impostors_above(self, key: int) -> int:
        """Impostor pairs with a key > ``key``."""
        b, low = key >> FINE_BITS, key & _FINE_MASK
        if low == _FINE_MASK:
            return int(self.above[b])
        return int(self.above[b] + self.fine[b][low + 1:].sum())

    def genuine_above(self, key: int) -> int:
        """Genuine pairs with a key > ``key``."""
        return int(self.num_genuine - np.searchsorted(self.genuine, np.uint32(key), side="right"))

    def impostor_rank_bin(self, rank: int) -> int:
        """The coarse bin of the ``rank``-th largest impostor (1-based)."""
        including = self.above + self.coarse  # impostors in bin b and after, non-increasing
        return int(np.searchsorted(-including, -rank, side="right")) - 1

    def impostor_rank_key(self, rank: int) -> int:
        """The key of the ``rank``-th largest impostor (1-based; its bin resolved)."""
        b = self.impostor_rank_bin(rank)
        if b not in self.fine:
            raise ValueError(f"the impostor of rank {rank} lies in a bin pair_scores did not resolve: pass its FAR "
                             f"in pair_scores' fars")
        fine_including = np.cumsum(self.fine[b][::-1])[::-1]  # in bin b at position l and after
        low = int(np.searchsorted(-fine_including, -(rank - self.above[b]), side="right")) - 1
        return (b << FINE_BITS) | low

    def bin_end_rates(self) -> Tuple[np.ndarray, np.ndarray]:
        """(impostors, genuine) accepted at the last key of every coarse bin (exact, vectorised)."""
        ends = (np.arange(len(self.coarse), dtype=np.uint64) << np.uint64(FINE_BITS)) | np.uint64(_FINE_MASK)
        genuine = self.num_genuine - np.searchsorted(self.genuine, ends.astype(np.uint32), side="right")
        return self.above, genuine.astype(np.int64)


def allowed_impostors(far: float, num_impostor: int) -> int:
    """floor(far * N), ``far`` taken as the decimal written (``Fraction(repr(far))``): no rounding surprises."""
    return math.floor(Fraction(repr(float(far))) * num_impostor)


def _gap(impostors: np.ndarray, genuine: np.ndarray, n_imp: int, n_gen: int) -> np.ndarray:
    """(FAR - FRR) * n_imp * n_gen, exact in integers (never increasing with the threshold)."""
    return np.asarray(impostors, dtype=np.int64) * n_gen - (n_gen - np.asarray(genuine, dtype=np.int64)) * n_imp


def _eer_bins(scores: PairScores) -> Tuple[int, Optional[int]]:
    """The coarse bin holding the first observed value with FAR <= FRR, and the last bin before it holding an
    impostor (None if none): the EER's candidates lie there (or are genuine values, known exactly)."""
    imp, gen = scores.bin_end_rates()
    crossing = int(np.argmax(_gap(imp, gen, scores.num_impostor, scores.num_genuine) <= 0))  # the last bin has FAR 0
    below = np.flatnonzero(scores.coarse[:crossing])
    return crossing, (int(below[-1]) if len(below) else None)


def pair_scores(qf, gf, q_pids: Sequence, g_pids: Sequence, q_camids: Optional[Sequence] = None,
                g_camids: Optional[Sequence] = None, fars: Sequence[float] = REPORTED_FARS,
                chunk_pairs: int = CHUNK_PAIRS, device=None) -> PairScores:
    """Everything :func:`calibrate` needs of every query x gallery pair (see the module docstring), with the
    thresholds of ``fars`` resolved exactly. Similarities ``normalize(q) @ normalize(g)^T`` in float32 on
    ``device`` (default: the features' device, for numpy CUDA when available, as evaluation does)."""
    pairs = _Pairs(qf, gf, q_pids, g_pids, q_camids, g_camids, chunk_pairs, device)
    coarse = np.zeros(1 << (32 - FINE_BITS), dtype=np.int64)
    genuine: List[np.ndarray] = []
    total = total_sq = 0.0
    low = high = None
    for gen, imp in pairs:  # pass 1
        genuine.append(similarity_keys(gen))
        if len(imp):
            wide = imp.astype(np.float64)
            total, total_sq = total + wide.sum(), total_sq + np.dot(wide, wide)
            del wide
            keys = similarity_keys(imp)
            low = keys.min() if low is None else min(low, keys.min())
            high = keys.max() if high is None else max(high, keys.max())
            keys >>= FINE_BITS
            coarse += np.bincount(keys, minlength=len(coarse))
    genuine_keys = np.sort(np.concatenate(genuine)) if genuine else np.zeros(0, np.uint32)
    counts = {"rule": PAIR_RULE if pairs.cameras else PAIR_RULE_NO_CAMERAS, "queries": len(pairs.qp),
              "gallery": len(pairs.gp), "genuine": int(len(genuine_keys)), "impostor": int(coarse.sum()),
              "junk_queries_left_out": pairs.junk[0], "junk_gallery_left_out": pairs.junk[1],
              "cameras_known": pairs.cameras}
    counts["same_identity_same_camera_left_out"] = (counts["queries"] * counts["gallery"] - counts["genuine"]
                                                    - counts["impostor"])
    scores = PairScores(genuine_keys, coarse, counts)
    for side in ("genuine", "impostor"):
        if counts[side] == 0:
            raise UsageError(f"no {side} pair ({counts['rule']}): {counts['queries']} queries, {counts['gallery']} "
                             f"gallery images; cannot calibrate")
    n = scores.num_impostor
    mean = total / n
    scores.impostor_summary = {"count": n, "mean": mean, "std": math.sqrt(max(total_sq / n - mean * mean, 0.0)),
                               "min": key_value(int(low)), "max": key_value(int(high))}

    # pass 2: the lower bits in the bins of the wanted impostor order statistics and of the EER crossing
    wanted = {scores.impostor_rank_bin(k + 1) for k in (allowed_impostors(f, n) for f in fars) if k > 0}
    wanted.update(b for b in _eer_bins(scores) if b is not None)
    bins = np.array(sorted(wanted), dtype=np.uint32)
    scores.fine = {int(b): np.zeros(1 << FINE_BITS, dtype=np.int64) for b in bins}
    lo_value = min(scores.impostor_summary["min"], key_value(int(genuine_keys[0])))
    hi_value = max(scores.impostor_summary["max"], key_value(int(genuine_keys[-1])))
    value_range = (lo_value, hi_value if hi_value > lo_value else lo_value + 1e-6)
    histogram = np.zeros(HISTOGRAM_BINS, dtype=np.int64)
    for _, imp in pairs:
        histogram += np.histogram(imp, bins=HISTOGRAM_BINS, range=value_range)[0]
        keys = similarity_keys(imp)
        upper = keys >> FINE_BITS
        chosen = np.isin(upper, bins)
        if chosen.any():
            sel_upper, sel_low = upper[chosen], keys[chosen] & _FINE_MASK
            for b in np.unique(sel_upper):
                scores.fine[int(b)] += np.bincount(sel_low[sel_upper == b], minlength=1 << FINE_BITS)
    scores.histogram_edges = np.linspace(value_range[0], value_range[1], HISTOGRAM_BINS + 1)
    scores.impostor_histogram = histogram
    return scores


# ----------------------------------------------------------------------------- rates and thresholds
def far_label(far: float) -> str:
    """``1e-3`` for 0.001, ``2.5e-4`` for 0.00025 (the JSON key spelling)."""
    mantissa, exponent = f"{far:.6e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def threshold_at_far(scores: PairScores, far: float) -> Dict[str, Any]:
    """The entry of one FAR: threshold, TAR, achieved FAR and counts, or why there is none (see the module
    docstring for how the threshold is chosen)."""
    n = scores.num_impostor
    k = allowed_impostors(far, n)
    entry: Dict[str, Any] = {"far": float(far)}
    if k == 0:
        entry.update(threshold=None, tar=None,
                     unreachable=f"{n} impostor pairs < 1/FAR = {math.ceil(1 / Fraction(repr(float(far))))}: "
                                 f"FAR {far_label(far)} cannot be measured on this set")
        return entry
    key = scores.impostor_rank_key(k + 1)
    imp_acc, gen_acc = scores.impostors_above(key), scores.genuine_above(key)
    entry.update(threshold=key_value(key), tar=gen_acc / scores.num_genuine, achieved_far=imp_acc / n,
                 impostors_accepted=imp_acc, impostors_allowed=k, genuine_accepted=gen_acc)
    return entry


def equal_error_rate(scores: PairScores) -> Dict[str, Any]:
    """The EER, its threshold and the FAR and FRR there (see the module docstring)."""
    n_imp, n_gen = scores.num_impostor, scores.num_genuine
    crossing, before = _eer_bins(scores)
    # every key of the crossing bin: impostors and genuine above it, and whether it is an observed value
    keys = np.uint32(crossing << FINE_BITS) + np.arange(1 << FINE_BITS, dtype=np.uint32)
    fine = scores.fine[crossing]
    imp_above = scores.above[crossing] + np.concatenate([np.cumsum(fine[::-1])[::-1][1:], [0]])
    gen_above = n_gen - np.searchsorted(scores.genuine, keys, side="right")
    gen_here = np.searchsorted(scores.genuine, keys, side="right") - np.searchsorted(scores.genuine, keys, side="left")
    gap = _gap(imp_above, gen_above, n_imp, n_gen)
    observed = (fine > 0) | (gen_here > 0)
    upper = int(np.flatnonzero(observed & (gap <= 0))[0])
    best_key, best_imp, best_gen = int(keys[upper]), int(imp_above[upper]), int(gen_above[upper])
    # the observed value before it: in the crossing bin, or the largest genuine / impostor value below the bin
    earlier = np.flatnonzero(observed[:upper])
    if len(earlier):
        lower: Optional[int] = int(keys[earlier[-1]])
    else:
        candidates = []
        g_below = int(np.searchsorted(scores.genuine, np.uint32(crossing << FINE_BITS), side="left"))
        if g_below:
            candidates.append(int(scores.genuine[g_below - 1]))
        if before is not None:
            candidates.append((before << FINE_BITS) | int(np.flatnonzero(scores.fine[before])[-1]))
        lower = max(candidates) if candidates else None
    if lower is not None:  # nothing observed between it and the upper value: its counts follow from the upper's
        lower_imp = best_imp + int(fine[upper])
        lower_gen = best_gen + int(gen_here[upper])
        if int(_gap(lower_imp, lower_gen, n_imp, n_gen)) <= -int(gap[upper]):
            best_key, best_imp, best_gen = lower, lower_imp, lower_gen
    far, frr = best_imp / n_imp, 1.0 - best_gen / n_gen
    return {"eer": (far + frr) / 2, "threshold": key_value(best_key), "far": far, "frr": frr}


def summary_of_keys(keys: np.ndarray) -> Dict[str, Any]:
    values = key_values(keys).astype(np.float64)
    return {"count": int(len(values)), "mean": float(values.mean()), "std": float(values.std()),
            "min": float(values[0]), "max": float(values[-1])}


def calibrate(scores: PairScores, far: float = DEFAULT_FAR, fars: Sequence[float] = REPORTED_FARS) -> Dict[str, Any]:
    """The JSON dict of :func:`pair_scores`' result (made with ``fars`` and ``far`` among its FARs): rates at
    ``fars``, EER, the threshold for ``far`` (``recommended_threshold``, None when unreachable)."""
    requested = threshold_at_far(scores, far)
    return {"similarity": SIMILARITY, "decision_rule": DECISION_RULE, "pair_rule": scores.counts["rule"],
            "threshold_rule": THRESHOLD_RULE, "eer_rule": EER_RULE, "pairs": scores.counts,
            "genuine": summary_of_keys(scores.genuine), "impostor": scores.impostor_summary,
            "tar_at_far": {far_label(f): threshold_at_far(scores, f) for f in fars},
            "eer": equal_error_rate(scores), "requested_far": requested,
            "recommended_threshold": requested["threshold"]}


# ----------------------------------------------------------------------------- figure
def roc_points(scores: PairScores, points: int = ROC_POINTS) -> Tuple[np.ndarray, np.ndarray]:
    """(FAR, TAR) at the coarse-bin boundaries (exact there), at most ``points`` of them, log-evenly in FAR."""
    imp, gen = scores.bin_end_rates()
    far, tar = imp / scores.num_impostor, gen / scores.num_genuine
    changed = np.flatnonzero((far > 0) & (np.diff(far, append=-1.0) != 0))  # the last bin end of each FAR value
    far, tar = far[changed], tar[changed]
    if len(far) > points:
        wanted = np.logspace(np.log10(far.min()), np.log10(far.max()), points)
        far_ascending = far[::-1]
        at = np.unique(np.clip(np.searchsorted(far_ascending, wanted), 0, len(far) - 1))
        far, tar = far_ascending[at], tar[::-1][at]
    return far, tar


def plot_calibration(scores: PairScores, result: Dict[str, Any], path: str) -> None:
    """Histograms of both distributions with the thresholds, and the ROC on a log-FAR axis (PNG)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    edges = scores.histogram_edges
    genuine = np.histogram(key_values(scores.genuine), bins=edges)[0]
    fig, (hist, roc) = plt.subplots(1, 2, figsize=(12, 4.5))
    for counts, name, colour in ((scores.impostor_histogram, "impostor", "tab:red"), (genuine, "genuine", "tab:green")):
        hist.stairs(counts / counts.sum() / np.diff(edges), edges, fill=True, alpha=0.4, color=colour,
                    label=f"{name} ({counts.sum()} pairs)")
    thresholds = [(f"FAR {label}", e["threshold"]) for label, e in result["tar_at_far"].items()
                  if e["threshold"] is not None] + [("EER", result["eer"]["threshold"])]
    for (name, t), style in zip(thresholds, ("--", "-.", ":", "-")):
        hist.axvline(t, color="black", linestyle=style, linewidth=1, label=f"{name}: {t:.4f}")
    hist.set_xlabel("cosine similarity (L2-normalised features)")
    hist.set_ylabel("density")
    hist.set_title("genuine and impostor pairs")
    hist.legend(fontsize=8)
    far, tar = roc_points(scores)
    if len(far):
        roc.plot(far, tar, color="tab:blue", label="ROC")
    for label, entry in result["tar_at_far"].items():
        if entry["threshold"] is not None and entry["achieved_far"] > 0:
            roc.plot(entry["achieved_far"], entry["tar"], "o", label=f"FAR {label}: TAR {entry['tar']:.3f}")
    eer = result["eer"]
    if eer["far"] > 0:
        roc.plot(eer["far"], 1 - eer["frr"], "s", color="black", label=f"EER {eer['eer']:.3f}")
    roc.set_xscale("log")
    roc.set_xlim(1.0 / scores.num_impostor, 1.0)
    roc.set_ylim(0, 1.01)
    roc.set_xlabel("FAR (impostor pairs accepted)")
    roc.set_ylabel("TAR (genuine pairs accepted)")
    roc.set_title("ROC")
    roc.grid(True, which="both", alpha=0.3)
    roc.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


# ----------------------------------------------------------------------------- inputs
def _array(data, key: str, path: str) -> np.ndarray:
    try:
        return data[key]
    except ValueError as exc:  # an object array (needs pickle): not what the tools write
        raise UsageError(f"--features {path}: {key} cannot be read without pickle ({exc})") from None


def read_saved_features(path: str) -> Dict[str, Any]:
    """Query/gallery features, pids and camids (None when absent) of a file written by ``test_net.py
    --save-features`` (query_feats, ...) or ``tools/extract_features.py --query --gallery`` (query_features, ...)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--features {path}: file not found")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise UsageError(f"--features {path}: not a .npz file of numpy arrays ({exc})") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise UsageError(f"--features {path}: a single array (.npy), expected a .npz file with query and gallery "
                         f"features, pids and camids")
    with data:
        keys = set(data.files)
        pair = next((p for p in SAVED_FEATURE_KEYS if set(p) <= keys), None)
        if pair is None:
            hint = (" (one image set, from tools/extract_features.py --images: use --query and --gallery)"
                    if "features" in keys else "")
            raise UsageError(f"--features {path}: expected the keys {' + '.join(SAVED_FEATURE_KEYS[0])} "
                             f"(test_net.py --save-features) or {' + '.join(SAVED_FEATURE_KEYS[1])} "
                             f"(tools/extract_features.py --query --gallery); found {sorted(keys)}{hint}")
        out = {"qf": _array(data, pair[0], path), "gf": _array(data, pair[1], path)}
        for side in ("query", "gallery"):
            if f"{side}_pids" not in keys:
                raise UsageError(f"--features {path}: no key {side}_pids: identities are needed to tell genuine from "
                                 f"impostor pairs (name the images Market-style, by identity folder or in a CSV file)")
            out[f"{side}_pids"] = _array(data, f"{side}_pids", path)
            out[f"{side}_camids"] = _array(data, f"{side}_camids", path) if f"{side}_camids" in keys else None
    for side, key, feats in (("query", pair[0], out["qf"]), ("gallery", pair[1], out["gf"])):
        if feats.ndim != 2 or not np.issubdtype(feats.dtype, np.floating) or not len(feats):
            raise UsageError(f"--features {path}: {key} must be a non-empty float array [N, d], got "
                             f"{feats.dtype} {feats.shape}")
        if not np.isfinite(feats).all():
            raise UsageError(f"--features {path}: {key} holds NaN or infinite values")
        for labels in (f"{side}_pids", f"{side}_camids"):
            if out[labels] is not None and out[labels].shape != (len(feats),):
                raise UsageError(f"--features {path}: {labels} has shape {out[labels].shape}, expected "
                                 f"({len(feats)},) like {key}")
        camids = out[f"{side}_camids"]
        if camids is not None and not np.issubdtype(camids.dtype, np.integer):
            raise UsageError(f"--features {path}: {side}_camids must be integers, got {camids.dtype}")
    if out["qf"].shape[1] != out["gf"].shape[1]:
        raise UsageError(f"--features {path}: {pair[0]} have {out['qf'].shape[1]} dimensions, {pair[1]} "
                         f"{out['gf'].shape[1]}")
    if (out["query_camids"] is None) != (out["gallery_camids"] is None):
        logger.warning("%s: cameras known on one side only: they are not used", path)
        out["query_camids"] = out["gallery_camids"] = None
    if out["query_camids"] is None:
        logger.warning("%s: no cameras: every same-identity pair counts as genuine (same-camera ones included)", path)
    return out


def features_of_model(args) -> Tuple[Dict[str, Any], Dict[str, Any], Any]:
    """Features of the chosen test set extracted as test_net.py extracts them; returns (features, source, cfg)."""
    from processor.cli import RunContext

    with RunContext(args.config_file, args.opts, "calibrate.log", overrides=["MODEL.PRETRAIN_CHOICE", "none"]) as ctx:
        from processor.evaluation import Evaluator, data_and_trained_model
        from utils.misc import resolve_amp

        cfg, device = ctx.cfg, ctx.device
        data, model = data_and_trained_model(cfg, device)
        names = [t.name for t in data.test_sets]
        name = args.dataset or names[0]
        if name not in names:
            raise UsageError(f"--dataset {name} is not one of the test sets DATASETS.TEST_NAMES = {names}")
        test_set = data.test_sets[names.index(name)]
        kept = {}
        evaluation = Evaluator(cfg, [test_set], device, resolve_amp(cfg.SOLVER.AMP, device)).evaluate(
            model, label="calibrate", on_features=lambda _, features: kept.update(features=features))
        feats, pids, camids = kept["features"]
        metrics = evaluation.metrics
        nq = test_set.num_query
        features = {"qf": feats[:nq], "gf": feats[nq:], "query_pids": pids[:nq].numpy(),
                    "gallery_pids": pids[nq:].numpy(), "query_camids": camids[:nq].numpy(),
                    "gallery_camids": camids[nq:].numpy()}
        source = {"config": args.config_file, "weight": cfg.TEST.WEIGHT, "dataset": name,
                  "feature": f"TEST.FEAT {cfg.TEST.FEAT}, TEST.NECK_FEAT {cfg.TEST.NECK_FEAT}, TEST.FLIP {cfg.TEST.FLIP}",
                  "retrieval": dict(metrics)}
        return features, source, cfg


# ----------------------------------------------------------------------------- command line
def parse_args(argv=None):
    parser = ConfigArgumentParser(__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                  config_help="YAML config of the trained model (not with --features)",
                                  opts_help="KEY VALUE overrides, e.g. TEST.WEIGHT path (not with --features)")
    parser.add_argument("--features", metavar="F.npz", help="saved query/gallery features instead of a model")
    parser.add_argument("--dataset", metavar="NAME", help="the test set to calibrate on (default: the first of "
                                                          "DATASETS.TEST_NAMES)")
    parser.add_argument("--far", default=repr(DEFAULT_FAR), metavar="F",
                        help=f"the FAR of the recommended threshold, in (0, 1) (default {DEFAULT_FAR:g})")
    parser.add_argument("--out", metavar="FILE.json", help="the JSON (default: see above)")
    parser.add_argument("--figure", metavar="FILE.png", help="the PNG (default: the JSON's name with .png)")
    parser.add_argument("--write-to", metavar="EXPORT_FILE",
                        help="an ONNX / TorchScript file of tools/export.py: the threshold for --far becomes its "
                             "metadata's recommended_threshold (tools.export.write_threshold)")
    parser.add_argument("--chunk-pairs", type=int, default=CHUNK_PAIRS, metavar="N",
                        help=f"similarities made at a time (memory: ~30 bytes each; default {CHUNK_PAIRS})")
    return parser.parse_args(argv)


def requested_far(text: str) -> float:
    try:
        far = float(text)
    except ValueError:
        far = float("nan")
    if not 0 < far < 1:
        raise UsageError(f"--far {text}: expected a number between 0 and 1 (exclusive), e.g. 1e-3")
    return far


@cli_entry
def main(argv=None) -> Dict[str, Any]:
    args = parse_args(argv)
    far = requested_far(args.far)
    if args.chunk_pairs < 1:
        raise UsageError(f"--chunk-pairs {args.chunk_pairs}: expected a positive number of pairs")
    export_metadata = None
    if args.write_to:  # before the features are made: an export that cannot take the threshold fails first
        from tracking.exported import read_metadata

        if not os.path.isfile(args.write_to):
            raise FileNotFoundError(f"--write-to {args.write_to}: file not found")
        export_metadata = read_metadata(args.write_to)
    if args.features:
        if args.config_file or args.opts or args.dataset:
            raise UsageError("--features reads saved features: --config_file, --dataset and KEY VALUE overrides "
                             "are not used with it")
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        features = read_saved_features(args.features)
        source = {"features": args.features}
        out = args.out or os.path.splitext(args.features)[0] + "_" + CALIBRATION_FILE
    elif args.config_file or args.opts:
        features, source, cfg = features_of_model(args)
        out = args.out or os.path.join(cfg.OUTPUT_DIR, CALIBRATION_FILE)
    else:
        raise UsageError("give --features F.npz, or --config_file C with TEST.WEIGHT W")
    scores = pair_scores(features["qf"], features["gf"], features["query_pids"], features["gallery_pids"],
                         features["query_camids"], features["gallery_camids"], fars=REPORTED_FARS + (far,),
                         chunk_pairs=args.chunk_pairs)
    figure = args.figure or os.path.splitext(out)[0] + ".png"
    result = {"source": source}
    result.update(calibrate(scores, far))
    result["figure"] = figure
    plot_calibration(scores, result, figure)
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    print(report(result))
    print(f"written: {out}, {figure}")
    if args.write_to:
        write_to_export(args.write_to, export_metadata, result)
    return result


def write_to_export(path: str, metadata: Dict[str, Any], result: Dict[str, Any]) -> None:
    """The recommended threshold into the export's metadata (``recommended_threshold``); refused when the
    requested FAR is unreachable. A warning when the export was made from another checkpoint than the one
    calibrated (model mode: SHA-256 of TEST.WEIGHT against the export's provenance)."""
    from tracking.exported import write_threshold

    requested = result["requested_far"]
    if requested["threshold"] is None:
        raise UsageError(f"--write-to {path}: no threshold for --far {far_label(requested['far'])} "
                         f"({requested['unreachable']}); the file is left as it was")
    weight = result["source"].get("weight")
    exported_from = ((metadata.get("provenance") or {}).get("checkpoint") or {}).get("sha256")
    if weight and exported_from:
        from utils.protocol import sha256_file

        if sha256_file(weight) != exported_from:
            logger.warning("--write-to %s was exported from another checkpoint (SHA-256 %s) than TEST.WEIGHT %s",
                           path, exported_from, weight)
    write_threshold(path, requested["threshold"], calibration={
        "far": requested["far"], "achieved_far": requested.get("achieved_far"), "tar": requested.get("tar"),
        "decision_rule": DECISION_RULE, "similarity": SIMILARITY, "pair_rule": result["pair_rule"],
        "pairs": {k: result["pairs"][k] for k in ("genuine", "impostor") if k in result["pairs"]},
        "source": result["source"]})
    print(f"recommended_threshold {requested['threshold']!r} (FAR {far_label(requested['far'])}, "
          f"{DECISION_RULE}) written into {path}")


def report(result: Dict[str, Any]) -> str:
    """The printed summary: pairs, TAR at each FAR, EER, the recommended threshold."""
    pairs = result["pairs"]
    lines = [f"pairs: {pairs['genuine']} genuine, {pairs['impostor']} impostor ({pairs['queries']} queries x "
             f"{pairs['gallery']} gallery images; {SIMILARITY}; {DECISION_RULE})"]
    requested = ("requested " + far_label(result["requested_far"]["far"]), result["requested_far"])
    for label, entry in list(result["tar_at_far"].items()) + [requested]:
        if entry["threshold"] is None:
            lines.append(f"  FAR {label}: {entry['unreachable']}")
        else:
            lines.append(f"  FAR {label}: TAR {entry['tar']:.4f} at threshold {entry['threshold']:.6f} "
                         f"(achieved FAR {entry['achieved_far']:.2e})")
    eer = result["eer"]
    lines.append(f"  EER {eer['eer']:.4f} at threshold {eer['threshold']:.6f} (FAR {eer['far']:.4f}, "
                 f"FRR {eer['frr']:.4f})")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
