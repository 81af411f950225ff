"""The sampler as the trainer uses it: a real ``Trainer`` (processor.trainer.build_trainer, tiny config, CPU) trains
2 epochs on a small CSV dataset whose identities have 1 to 12 images, under DATALOADER.SAMPLER 'identity' (the
released sampler) and 'balanced_identity'. Observed from inside the run: the identities of every batch the
loss saw (the trainer's loss function wrapped) and the optimizer steps of every epoch (a step post-hook).

The epoch's optimizer steps equal its number of sampler batches, every batch trained on is P distinct
identities x K images, and the batches are exactly the sampler's, in order. The identities' sizes make the
two samplers differ: 29 chunks of K = 2 for P = 4 identities a batch; the released sampler makes at most
floor(29 / 4) = 7 batches an epoch (leftovers dropped), the balanced one at least 8 (every chunk used).
"""
import os
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from configs import load_cfg
from datasets.samplers import BalancedIdentitySampler, RandomIdentitySampler
from processor.trainer import build_trainer
from tests.helpers import TINY_CONFIG

K, P = 2, 4
TRAIN_COUNTS = [1, 2, 3, 5, 7, 9, 12, 2, 4, 6, 3, 8]          # images per training identity
CHUNKS = sum(max(1, n // K) for n in TRAIN_COUNTS)              # 29
EPOCHS = 2


def write_split(folder, split, rows):
    """``split``.csv of ``rows`` (pid, camid), with a small distinct image for every row."""
    lines = ["path,pid,camid"]
    for i, (pid, camid) in enumerate(rows):
        path = f"{split}/{pid}_{camid}_{i}.png"
        os.makedirs(os.path.join(folder, split), exist_ok=True)
        value = np.random.default_rng([pid, camid, i]).integers(0, 256, (16, 8, 3), dtype=np.uint8)
        Image.fromarray(value).save(os.path.join(folder, path))
        lines.append(f"{path},{pid},{camid}")
    with open(os.path.join(folder, f"{split}.csv"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def csv_dir(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("csv"))
    write_split(folder, "train", [(pid, i % 3) for pid, n in enumerate(TRAIN_COUNTS) for i in range(n)])
    write_split(folder, "query", [(pid, 0) for pid in range(100, 104)])
    write_split(folder, "gallery", [(pid, cam) for pid in range(100, 104) for cam in (1, 2)])
    return folder


def train_and_observe(csv_dir, sampler_name):
    """(trainer, {epoch: [pids of each batch the loss saw]}, {epoch: optimizer steps}) of a 2-epoch run."""
    cfg = load_cfg(TINY_CONFIG, ["DATASETS.NAMES", "csv", "DATASETS.CSV_DIR", csv_dir, "OUTPUT_DIR", "",
                                 "MODEL.DEVICE", "cpu", "DATALOADER.SAMPLER", sampler_name,
                                 "DATALOADER.NUM_INSTANCE", str(K), "SOLVER.IMS_PER_BATCH", str(P * K),
                                 "SOLVER.MAX_EPOCHS", str(EPOCHS), "SOLVER.EVAL_PERIOD", str(EPOCHS),
                                 "SOLVER.CHECKPOINT_PERIOD", str(EPOCHS), "SOLVER.LOG_PERIOD", "0"])
    trainer = build_trainer(cfg, torch.device("cpu"))
    pids_seen, steps, current = {}, Counter(), {}
    train_one_epoch, loss_fn = trainer.train_one_epoch, trainer.loss_fn

    def one_epoch(epoch):
        current["epoch"] = epoch
        pids_seen[epoch] = []
        return train_one_epoch(epoch)

    def loss(outputs, pids):
        pids_seen[current["epoch"]].append(pids.tolist())
        return loss_fn(outputs, pids)

    trainer.train_one_epoch, trainer.loss_fn = one_epoch, loss
    trainer.optimizer.register_step_post_hook(lambda *_: steps.update([current["epoch"]]))
    summary = trainer.train()
    assert [e["epoch"] for e in summary["epochs"]] == list(range(1, EPOCHS + 1))
    return trainer, pids_seen, steps


@pytest.fixture(scope="module")
def runs(csv_dir):
    return {name: train_and_observe(csv_dir, name) for name in ("identity", "balanced_identity")}


@pytest.mark.parametrize("name, cls", [("identity", RandomIdentitySampler),
                                       ("balanced_identity", BalancedIdentitySampler)])
def test_steps_are_sampler_batches_of_p_identities_by_k_images(runs, name, cls):
    trainer, pids_seen, steps = runs[name]
    sampler = trainer.train_loader.sampler
    assert type(sampler) is cls
    records = trainer.train_loader.dataset.records
    assert Counter(Counter(r.pid for r in records).values()) == Counter(TRAIN_COUNTS)
    for epoch in range(1, EPOCHS + 1):
        expected = sampler.global_batches(epoch)
        # one optimizer step per sampler batch, and the trainer's own count of iterations agrees
        assert steps[epoch] == len(expected) == len(pids_seen[epoch])
        sampler.set_epoch(epoch)
        assert len(trainer.train_loader) == len(expected)
        # each batch trained on: P distinct identities, K images each, the sampler's batch in order
        for batch in pids_seen[epoch]:
            assert len(batch) == P * K
            assert sorted(Counter(batch).values()) == [K] * P
        assert pids_seen[epoch] == [[records[i].pid for chunk in batch for i in chunk] for batch in expected]
        if name == "identity":
            assert len(expected) <= CHUNKS // P            # leftovers dropped
        else:
            assert len(expected) >= -(-CHUNKS // P)        # every chunk used
    assert sum(steps.values()) == sum(len(v) for v in pids_seen.values())


def test_the_two_samplers_train_different_numbers_of_steps(runs):
    released, balanced = runs["identity"][2], runs["balanced_identity"][2]
    print("optimizer steps per epoch: identity", dict(released), "balanced_identity", dict(balanced))
    assert all(released[e] < balanced[e] for e in range(1, EPOCHS + 1))
