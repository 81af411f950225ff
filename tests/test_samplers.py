"""P x K identity samplers (released 'identity' and 'balanced_identity'), plain shuffling and evaluation shards:
batch invariants, chunk accounting, the uniform draw of the released sampler, DDP slices, seeding, and the
number of batches per epoch on a Market-1501-sized list of identities."""
from collections import Counter

import numpy as np
import pytest

from configs import load_cfg
from datasets import ContiguousShardSampler, DatasetError, ImageRecord, RandomShuffleSampler, build_train_sampler
from datasets.samplers import BalancedIdentitySampler, RandomIdentitySampler

# 13 identities with 1..25 images each (several below K, several with many chunks), shuffled order
RNG = np.random.default_rng(0)
PIDS = RNG.permutation(np.repeat(np.arange(100, 113), [1, 2, 3, 25, 4, 9, 16, 5, 7, 12, 3, 20, 8])).tolist()
P, K = 6, 4
BOTH = [RandomIdentitySampler, BalancedIdentitySampler]
both = pytest.mark.parametrize("cls", BOTH, ids=["identity", "balanced_identity"])


def batches(sampler, per_batch):
    flat = list(sampler)
    assert len(flat) == len(sampler) and len(flat) % per_batch == 0
    return [flat[i:i + per_batch] for i in range(0, len(flat), per_batch)]


def chunks_of(batch):
    return [batch[i:i + K] for i in range(0, len(batch), K)]


def epoch_chunks(sampler, epoch):
    """The sampler's chunks of ``epoch`` (the first thing its ``default_rng([seed, epoch])`` draws)."""
    return sampler.epoch_chunks(np.random.default_rng([sampler.seed, epoch]))


@both
def test_batches_are_p_distinct_identities_of_k_images(cls):
    sampler = cls(PIDS, P * K, K, seed=3)
    for epoch in range(5):
        sampler.set_epoch(epoch)
        found = batches(sampler, P * K)
        assert found and len(found) == len(sampler.global_batches(epoch))           # full batches only
        for batch in found:
            chunk_pids = [{PIDS[j] for j in chunk} for chunk in chunks_of(batch)]
            assert all(len(s) == 1 for s in chunk_pids)                  # K images of one identity
            assert len({next(iter(s)) for s in chunk_pids}) == P         # P distinct identities


@both
def test_chunks_are_floor_n_over_k_shuffled_images_leftover_dropped(cls):
    sampler = cls(PIDS, P * K, K, seed=2)
    counts = Counter(PIDS)
    for epoch in (0, 1):
        chunks = epoch_chunks(sampler, epoch)
        assert len(chunks) == len(counts)
        for pid, pid_chunks in zip(sampler.pid_list, chunks):
            n = counts[pid]
            assert all(len(c) == K and {PIDS[i] for i in c} == {pid} for c in pid_chunks)
            if n < K:   # one chunk drawn with replacement from its images
                assert len(pid_chunks) == 1
            else:       # floor(n / K) chunks of distinct images; the n mod K leftover images are not in any
                used = sum(pid_chunks, [])
                assert len(pid_chunks) == n // K and len(set(used)) == len(used) == n // K * K
    # an identity with fewer than K images fills its K slots with repeats of its own images
    single = PIDS.index(100)
    assert epoch_chunks(sampler, 0)[sampler.pid_list.index(100)] == [[single] * K]


def test_released_sampler_uses_whole_chunks_and_drops_what_fewer_than_p_identities_have_left():
    sampler = RandomIdentitySampler(PIDS, P * K, K, seed=1)
    for epoch in range(6):
        chunks = epoch_chunks(sampler, epoch)
        owner = {tuple(c): i for i, pid_chunks in enumerate(chunks) for c in pid_chunks}
        found = sampler.global_batches(epoch)
        used = [tuple(c) for batch in found for c in batch]
        assert len(used) == len(found) * P and len(set(used)) == len(used)   # every chunk at most once
        assert set(used) <= set(owner)                                       # only the epoch's own chunks
        left = Counter({i: len(c) for i, c in enumerate(chunks)})
        left.subtract(owner[c] for c in used)
        # it stopped exactly when fewer than P identities had chunks left (and not before)
        assert sum(1 for v in left.values() if v > 0) < P
        total = sum(len(c) for c in chunks)
        assert len(found) <= total // P
        sampler.set_epoch(epoch)
        assert len(sampler) == len(found) * P * K


def test_balanced_sampler_uses_every_chunk_and_fills_only_the_last_batches():
    sampler = BalancedIdentitySampler(PIDS, P * K, K, seed=1)
    counts = Counter(PIDS)
    for epoch in range(6):
        chunks = epoch_chunks(sampler, epoch)
        found = sampler.global_batches(epoch)
        # in batch order, a chunk is the epoch's own while that chunk is still unused (a filler can repeat the
        # one chunk of an identity below K images, but only after that chunk was used)
        unused = Counter(tuple(c) for pid_chunks in chunks for c in pid_chunks)
        real, fillers = [], []
        for batch in found:
            real.append([])
            for c in map(tuple, batch):
                if unused[c] > 0:
                    unused[c] -= 1
                    real[-1].append(c)
                else:
                    fillers.append(c)
        assert +unused == Counter()                                         # every chunk used exactly once
        total = sum(len(c) for c in chunks)
        assert len(found) >= -(-total // P)
        # fillers (fresh chunks of identities without chunks left) appear only once fewer than P have chunks left
        filled = [i for i, r in enumerate(real) if len(r) < P]
        assert filled == list(range(len(found) - len(filled), len(found)))
        for chunk in fillers:                                               # K images of one identity
            pid = PIDS[chunk[0]]
            assert {PIDS[i] for i in chunk} == {pid}
            assert len(set(chunk)) == K or counts[pid] < K                  # distinct images when it has K
        assert len(fillers) == len(found) * P - total
        sampler.set_epoch(epoch)
        drawn = list(sampler)
        assert {PIDS[i] for i in drawn} == set(counts)                      # every identity every epoch


def test_released_sampler_draws_identities_uniformly_not_by_chunks_left():
    """One identity with 30 chunks among 19 with one: drawn uniformly it is in the first batch with probability
    P / 20 = 0.3; drawn in proportion to the chunks left (30 of 49) it would be there almost always."""
    pids = [0] * (30 * K) + [pid for pid in range(1, 20) for _ in range(K)]
    p = 6
    first_batch_hits = 0
    trials = 300
    for seed in range(trials):
        sampler = RandomIdentitySampler(pids, p * K, K, seed=seed)
        first = sampler.global_batches(0)[0]
        first_batch_hits += any(pids[c[0]] == 0 for c in first)
    rate = first_batch_hits / trials
    assert abs(rate - p / 20) < 0.1, rate          # sd of the estimate: 0.026
    # 5 or 6 of the 19 one-chunk identities go into each batch and it stops below 6 identities with chunks:
    # always 3 batches, at least 27 of the heavy identity's chunks dropped
    for seed in range(20):
        assert len(RandomIdentitySampler(pids, p * K, K, seed=seed).global_batches(0)) == 3


@both
def test_same_seed_and_epoch_same_batches_new_epoch_or_seed_differs(cls):
    a = cls(PIDS, P * K, K, seed=7)
    b = cls(list(PIDS), P * K, K, seed=7)
    np.random.seed(123)  # global RNG state must not matter
    a.set_epoch(2)
    first = list(a)
    np.random.seed(999)
    list(cls(PIDS, P * K, K, seed=0))
    b.set_epoch(2)
    assert list(b) == first and list(a) == first
    a.set_epoch(3)
    assert list(a) != first
    a.set_epoch(2)
    assert list(a) == first
    c = cls(PIDS, P * K, K, seed=8)
    c.set_epoch(2)
    assert list(c) != first


def test_the_two_samplers_share_chunks_but_not_batches():
    released, balanced = RandomIdentitySampler(PIDS, P * K, K, seed=4), BalancedIdentitySampler(PIDS, P * K, K, seed=4)
    assert epoch_chunks(released, 1) == epoch_chunks(balanced, 1)
    assert released.global_batches(1) != balanced.global_batches(1)


@both
@pytest.mark.parametrize("world_size", [2, 3])
def test_ddp_ranks_disjoint_identities_same_length_and_cover_the_global_batch(cls, world_size):
    per_rank = P * K // world_size
    samplers = [cls(PIDS, P * K, K, seed=5, rank=r, world_size=world_size) for r in range(world_size)]
    single = cls(PIDS, P * K, K, seed=5, rank=0, world_size=1)
    for epoch in (0, 1):
        for s in samplers + [single]:
            s.set_epoch(epoch)
        per_rank_batches = [batches(s, per_rank) for s in samplers]
        assert len({len(b) for b in per_rank_batches}) == 1           # same number of batches on every rank
        assert len(per_rank_batches[0]) == len(single.global_batches(epoch))
        for step, global_batch in enumerate(batches(single, P * K)):
            parts = [b[step] for b in per_rank_batches]
            pid_sets = [{PIDS[i] for i in part} for part in parts]
            assert sum(len(s) for s in pid_sets) == P                     # disjoint identity groups
            assert len(set().union(*pid_sets)) == P
            assert sum(parts, []) == global_batch                         # ranks split the same seeded batch


@both
def test_invalid_sampler_settings(cls):
    with pytest.raises(DatasetError, match="must be a multiple of K = 5"):
        cls(PIDS, 24, 5)
    with pytest.raises(DatasetError, match="must be divisible by the 4 processes"):
        cls(PIDS, 24, 4, rank=0, world_size=4)
    with pytest.raises(DatasetError, match="13 identities, fewer than the P = 16"):
        cls(PIDS, 64, 4)


@pytest.mark.parametrize("name, cls", [("identity", RandomIdentitySampler),
                                       ("balanced_identity", BalancedIdentitySampler),
                                       ("random", RandomShuffleSampler)])
def test_config_names_the_sampler(name, cls):
    cfg = load_cfg("", ["DATALOADER.SAMPLER", name, "SOLVER.IMS_PER_BATCH", str(P * K),
                        "DATALOADER.NUM_INSTANCE", str(K), "SOLVER.SEED", "9"])
    sampler = build_train_sampler(cfg, [ImageRecord(f"{i}.jpg", pid, 0) for i, pid in enumerate(PIDS)], 0, 1)
    assert type(sampler) is cls and sampler.seed == 9


# ----------------------------------------------------------------------------- a Market-1501-sized list
def market_sized_counts(num_ids=751, num_images=12936, low=2, high=72, seed=1501):
    """Images per identity like Market-1501's training split: 751 identities, 12,936 images (17.2 a person),
    a skewed spread (log-normal, median 15, 2..72 clipped), adjusted by single images to the exact total."""
    rng = np.random.default_rng(seed)
    counts = np.clip(np.rint(rng.lognormal(np.log(12.0), 0.6, num_ids)), low, high).astype(int)
    while counts.sum() != num_images:
        i = rng.integers(num_ids)
        step = 1 if counts.sum() < num_images else -1
        if low <= counts[i] + step <= high:
            counts[i] += step
    return counts


MARKET_SEEDS = range(8)


def test_batches_per_epoch_on_a_market_sized_list():
    """Market-1501 with the paper's batch (SOLVER.IMS_PER_BATCH 128, K = 16: P = 8). This list has 828 chunks
    (397 identities below 16 images give one each): the released sampler makes 102-103 batches an epoch
    (at most floor(828 / 8) = 103: leftovers dropped; 103 for these seeds, 102 for
    a few others), the balanced one 104 = ceil(828 / 8) (every chunk)."""
    counts = market_sized_counts()
    assert (len(counts), counts.sum(), counts.min(), counts.max()) == (751, 12936, 3, 72)
    assert np.median(counts) == 15
    pids = np.random.default_rng(0).permutation(np.repeat(np.arange(751), counts)).tolist()
    p, k = 8, 16
    total = int(sum(max(1, n // k) for n in counts))
    assert total == 828
    found = {}
    for cls in BOTH:
        found[cls] = []
        for seed in MARKET_SEEDS:
            sampler = cls(pids, p * k, k, seed=seed)
            for epoch in (1, 2):
                sampler.set_epoch(epoch)
                found[cls].append(len(sampler) // (p * k))
    released, balanced = found[RandomIdentitySampler], found[BalancedIdentitySampler]
    print("batches per epoch (min / median / max): identity %d / %g / %d, balanced_identity %d / %g / %d"
          % (min(released), np.median(released), max(released), min(balanced), np.median(balanced), max(balanced)))
    assert all(100 <= n <= total // p for n in released), released
    assert all(n == -(-total // p) for n in balanced), balanced
    assert all(r < b for r, b in zip(released, balanced))


# ----------------------------------------------------------------------------- shuffling and evaluation shards
def test_random_sampler_is_a_seeded_permutation_split_over_ranks():
    n = 103
    whole = RandomShuffleSampler(n, seed=2, rank=0, world_size=1)
    order = list(whole)
    assert sorted(order) == list(range(n)) and order != list(range(n))
    assert list(RandomShuffleSampler(n, seed=2, rank=0, world_size=1)) == order
    whole.set_epoch(1)
    assert list(whole) != order
    shards = [list(RandomShuffleSampler(n, seed=2, rank=r, world_size=2)) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == n // 2
    assert not set(shards[0]) & set(shards[1])


@pytest.mark.parametrize("n, world_size", [(10, 1), (10, 3), (2, 4), (1001, 8)])
def test_contiguous_shards_restore_dataset_order(n, world_size):
    shards = [list(ContiguousShardSampler(n, rank=r, world_size=world_size)) for r in range(world_size)]
    assert sum(shards, []) == list(range(n))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert all(len(ContiguousShardSampler(n, r, world_size)) == len(s) for r, s in enumerate(shards))
