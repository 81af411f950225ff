"""P x K identity sampler, plain shuffling and evaluation shards: invariants, DDP properties, seeding."""
from collections import Counter

import numpy as np
import pytest

from datasets import ContiguousShardSampler, DatasetError, RandomIdentitySampler, RandomShuffleSampler

# 13 identities with 1..25 images each (several below K, several with many chunks), shuffled order
RNG = np.random.default_rng(0)
PIDS = RNG.permutation(np.repeat(np.arange(100, 113), [1, 2, 3, 25, 4, 9, 16, 5, 7, 12, 3, 20, 8])).tolist()
P, K = 6, 4


def batches(sampler, per_batch):
    flat = list(sampler)
    assert len(flat) == len(sampler) and len(flat) % per_batch == 0
    return [flat[i:i + per_batch] for i in range(0, len(flat), per_batch)]


def test_batches_are_p_distinct_identities_of_k_images():
    sampler = RandomIdentitySampler(PIDS, P * K, K, seed=3)
    for epoch in range(5):
        sampler.set_epoch(epoch)
        for batch in batches(sampler, P * K):
            chunks = [batch[i:i + K] for i in range(0, P * K, K)]
            chunk_pids = [{PIDS[j] for j in chunk} for chunk in chunks]
            assert all(len(s) == 1 for s in chunk_pids)                  # K images of one identity
            assert len({next(iter(s)) for s in chunk_pids}) == P         # P distinct identities


def test_every_identity_every_epoch_and_replacement_for_small_ones():
    sampler = RandomIdentitySampler(PIDS, P * K, K, seed=1)
    counts = Counter(PIDS)
    for epoch in range(5):
        sampler.set_epoch(epoch)
        drawn = list(sampler)
        assert {PIDS[i] for i in drawn} == set(counts)
        per_pid = Counter(PIDS[i] for i in drawn)
        for pid, n in counts.items():
            assert per_pid[pid] >= (n // K) * K if n >= K else per_pid[pid] >= K
        # the 25-image identity contributes at least its 6 chunks of distinct images
        big = [i for i in drawn if PIDS[i] == 103]
        assert len(set(big)) >= 24
    # an identity with fewer than K images fills its K slots with repeats of its own images
    single = PIDS.index(100)
    sampler.set_epoch(0)
    flat = list(sampler)
    at = flat.index(single)
    assert flat[at - at % K: at - at % K + K] == [single] * K


def test_same_seed_and_epoch_same_batches_new_epoch_or_seed_differs():
    a = RandomIdentitySampler(PIDS, P * K, K, seed=7)
    b = RandomIdentitySampler(list(PIDS), P * K, K, seed=7)
    np.random.seed(123)  # global RNG state must not matter
    a.set_epoch(2)
    first = list(a)
    np.random.seed(999)
    list(RandomIdentitySampler(PIDS, P * K, K, seed=0))
    b.set_epoch(2)
    assert list(b) == first and list(a) == first
    a.set_epoch(3)
    assert list(a) != first
    c = RandomIdentitySampler(PIDS, P * K, K, seed=8)
    c.set_epoch(2)
    assert list(c) != first


@pytest.mark.parametrize("world_size", [2, 3])
def test_ddp_ranks_disjoint_identities_same_length_and_cover_the_global_batch(world_size):
    per_rank = P * K // world_size
    samplers = [RandomIdentitySampler(PIDS, P * K, K, seed=5, rank=r, world_size=world_size) for r in range(world_size)]
    single = RandomIdentitySampler(PIDS, P * K, K, seed=5, rank=0, world_size=1)
    for epoch in (0, 1):
        for s in samplers + [single]:
            s.set_epoch(epoch)
        per_rank_batches = [batches(s, per_rank) for s in samplers]
        assert len({len(b) for b in per_rank_batches}) == 1           # same number of batches on every rank
        for step, global_batch in enumerate(batches(single, P * K)):
            parts = [b[step] for b in per_rank_batches]
            pid_sets = [{PIDS[i] for i in part} for part in parts]
            assert sum(len(s) for s in pid_sets) == P                     # disjoint identity groups
            assert len(set().union(*pid_sets)) == P
            assert sum(parts, []) == global_batch                         # ranks split the same seeded batch


def test_invalid_sampler_settings():
    with pytest.raises(DatasetError, match="must be a multiple of K = 5"):
        RandomIdentitySampler(PIDS, 24, 5)
    with pytest.raises(DatasetError, match="must be divisible by the 4 processes"):
        RandomIdentitySampler(PIDS, 24, 4, rank=0, world_size=4)
    with pytest.raises(DatasetError, match="13 identities, fewer than the P = 16"):
        RandomIdentitySampler(PIDS, 64, 4)


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
