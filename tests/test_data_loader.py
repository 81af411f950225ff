"""make_dataloader: batch format, evaluation order and sharding, seeded augmentation."""
import pytest
import torch

from datasets import DatasetError, make_dataloader
from tests.test_data_synthetic import tiny_cfg


def loader_cfg(root, **solver):
    cfg = tiny_cfg(root)
    cfg.INPUT.SIZE_TRAIN = cfg.INPUT.SIZE_TEST = [32, 16]
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.DATALOADER.NUM_INSTANCE = 2
    cfg.SOLVER.IMS_PER_BATCH = 4
    cfg.TEST.IMS_PER_BATCH = 5
    for key, value in solver.items():
        cfg.SOLVER[key] = value
    return cfg


def _same_batches(a, b):
    """Two passes gave the same, non-empty list of batches (``all`` over an empty zip proves nothing)."""
    assert len(a) == len(b) > 0
    return all(torch.equal(x, y) for x, y in zip(a, b))


def test_batches_and_counts(tmp_path):
    train, val, num_query, num_classes, num_cams, *_ = make_dataloader(loader_cfg(tmp_path))
    assert (num_query, num_classes, num_cams) == (6, 3, 3)
    records = train.dataset.records
    batches = list(train)
    assert len(batches) == len(train) > 0
    for images, pids, camids, indices in batches:
        assert images.shape == (4, 3, 32, 16) and images.dtype == torch.float32
        assert pids.dtype == camids.dtype == indices.dtype == torch.int64
        assert [records[i].pid for i in indices] == pids.tolist()
        assert [records[i].camid for i in indices] == camids.tolist()
        assert len(set(pids.tolist())) == 2
    assert hasattr(train.sampler, "set_epoch")
    seen = [batch[3] for batch in val]
    assert torch.cat(seen).tolist() == list(range(len(val.dataset)))       # query + gallery, in order
    assert val.dataset.records[:num_query] == sorted(val.dataset.records[:num_query])


def test_ddp_val_shards_and_per_rank_batch(tmp_path):
    cfg = loader_cfg(tmp_path)
    shards, per_rank = [], []
    for rank in range(2):
        train, val, *_ = make_dataloader(cfg, rank=rank, world_size=2)
        shards.append(torch.cat([b[3] for b in val]).tolist())
        per_rank.append([b[1] for b in train])
        assert all(b.shape == (2,) for b in per_rank[-1])                  # IMS_PER_BATCH / world_size
    assert shards[0] + shards[1] == list(range(len(val.dataset)))
    assert len(per_rank[0]) == len(per_rank[1]) > 0
    assert all(not set(a.tolist()) & set(b.tolist()) for a, b in zip(*per_rank))


def test_augmentation_depends_only_on_seed_and_epoch(tmp_path):
    cfg = loader_cfg(tmp_path)
    first, _, *_ = make_dataloader(cfg)
    second, _, *_ = make_dataloader(cfg)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    a = [b[0] for b in first]
    assert torch.equal(torch.get_rng_state(), before)        # the training's RNG is left alone
    torch.manual_seed(123)
    b = [b[0] for b in second]
    assert _same_batches(a, b)
    first.sampler.set_epoch(1)
    c = [b[0] for b in first]   # another epoch: other batches (under 'identity', maybe another number of them)
    assert c and (len(c) != len(a) or not _same_batches(a, c))


def test_augmentation_reproducible_with_a_worker(tmp_path):
    cfg = loader_cfg(tmp_path)
    cfg.DATALOADER.NUM_WORKERS = 1
    runs = []
    for _ in range(2):
        train, *_ = make_dataloader(cfg)
        train.sampler.set_epoch(2)
        runs.append([b[0] for b in train])
    assert _same_batches(*runs)


def test_batch_larger_than_the_identities(tmp_path):
    with pytest.raises(DatasetError, match="3 identities, fewer than the P = 4"):
        make_dataloader(loader_cfg(tmp_path, IMS_PER_BATCH=8))
