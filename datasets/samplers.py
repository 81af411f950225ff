"""Samplers of dataset indices: P x K identity batches for training, contiguous shards for evaluation.

P x K training batches: :class:`RandomIdentitySampler` is the authors' released sampler (``DATALOADER.SAMPLER
'identity'``: identities drawn uniformly, the epoch's leftover chunks dropped); :class:`BalancedIdentitySampler`
(``'balanced_identity'``) shares its chunks but draws identities in proportion to their chunks left and uses
every chunk. :class:`RandomShuffleSampler` is plain shuffling (``'random'``).

Training samplers draw everything from ``numpy.random.default_rng([seed, epoch])``: the batches depend
only on the seed and the epoch (``set_epoch``), never on global random state, so they are the same in
one process, across restarts and on every rank.
"""
from collections import defaultdict
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch.distributed as dist
from torch.utils.data import Sampler

from .errors import DatasetError


def distributed_rank_and_size(rank: Optional[int] = None, world_size: Optional[int] = None) -> Tuple[int, int]:
    """``(rank, world_size)``: the given values, else torch.distributed's, else (0, 1)."""
    initialised = dist.is_available() and dist.is_initialized()
    if world_size is None:
        world_size = dist.get_world_size() if initialised else 1
    if rank is None:
        rank = dist.get_rank() if initialised else 0
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in 0..world_size-1 (world_size {world_size})")
    return rank, world_size


class RandomIdentitySampler(Sampler):
    """P identities x K images per batch, as the authors' released sampler (``DATALOADER.SAMPLER = 'identity'``).

    ``batch_size`` is the *global* batch (all ranks together, ``SOLVER.IMS_PER_BATCH``) = P x K with
    K = ``num_instances``; every rank yields ``batch_size / world_size`` indices per batch (P / world_size
    identities x K), so P must be divisible by ``world_size``. Use it with a ``DataLoader`` whose
    ``batch_size`` is that per-rank size and ``drop_last=True``.

    One epoch, as released: every identity's images are shuffled and cut into chunks of K (an identity
    with fewer than K images gives one chunk of K drawn with replacement; a leftover of fewer than K
    images is dropped). Then, while at least P identities have chunks left, P distinct identities are
    drawn *uniformly* among them and one chunk of each is taken; the chunks left when fewer than P
    identities remain are dropped. Every batch is full. (Unlike the released code, ``len()`` is exact and
    the randomness comes only from ``numpy.random.default_rng([seed, epoch])``.)

    All ranks compute the same global batches from ``(seed, epoch)`` and take their own slice of
    identities (rank r: identities ``r * P / world_size`` to ``(r + 1) * P / world_size - 1`` of each
    batch), so they yield the same number of batches. :class:`BalancedIdentitySampler` draws differently.
    """

    def __init__(self, pids: Sequence[int], batch_size: int, num_instances: int, seed: int = 0,
                 rank: Optional[int] = None, world_size: Optional[int] = None):
        self.rank, self.world_size = distributed_rank_and_size(rank, world_size)
        if num_instances < 1 or batch_size % num_instances:
            raise DatasetError(f"batch size {batch_size} (SOLVER.IMS_PER_BATCH) must be a multiple of "
                               f"K = {num_instances} (DATALOADER.NUM_INSTANCE)")
        self.num_instances = num_instances
        self.num_pids_per_batch = batch_size // num_instances
        if self.num_pids_per_batch % self.world_size:
            raise DatasetError(f"P = {self.num_pids_per_batch} identities per batch (SOLVER.IMS_PER_BATCH / "
                               f"DATALOADER.NUM_INSTANCE) must be divisible by the {self.world_size} processes")
        self.pids_per_rank = self.num_pids_per_batch // self.world_size
        indices_of = defaultdict(list)
        for index, pid in enumerate(pids):
            indices_of[pid].append(index)
        self.pid_list = sorted(indices_of)
        self.indices_of = [np.asarray(indices_of[pid]) for pid in self.pid_list]
        if len(self.pid_list) < self.num_pids_per_batch:
            raise DatasetError(f"the training split has {len(self.pid_list)} identities, fewer than the "
                               f"P = {self.num_pids_per_batch} identities per batch (SOLVER.IMS_PER_BATCH / "
                               f"DATALOADER.NUM_INSTANCE)")
        self.seed = int(seed)
        self.epoch = 0
        self._cached = None   # (epoch, batches)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches ``__iter__`` yields."""
        self.epoch = int(epoch)

    def epoch_chunks(self, rng) -> List[List[List[int]]]:
        """Per identity (in ``pid_list`` order), its chunks of K dataset indices for one epoch: its images
        shuffled and cut into ``floor(n / K)`` chunks, the leftover dropped; one chunk of K drawn with
        replacement when it has fewer than K images."""
        k = self.num_instances
        chunks = []
        for idx in self.indices_of:
            idx = rng.choice(idx, k, replace=True) if len(idx) < k else rng.permutation(idx)
            chunks.append([idx[j * k:(j + 1) * k].tolist() for j in range(len(idx) // k)])
        return chunks

    def draw_batches(self, rng, chunks: List[List[List[int]]]) -> List[List[List[int]]]:
        """The released draw: P distinct identities uniformly among those with chunks left, one chunk of
        each, while at least P have chunks left; what remains is dropped."""
        p = self.num_pids_per_batch
        left = np.array([len(c) for c in chunks])
        batches = []
        while np.count_nonzero(left) >= p:
            chosen = rng.choice(np.flatnonzero(left), p, replace=False)
            left[chosen] -= 1
            batches.append([chunks[i][left[i]] for i in chosen])
        return batches

    def global_batches(self, epoch: int) -> List[List[List[int]]]:
        """The epoch's batches: lists of P chunks (one per distinct identity) of K dataset indices."""
        if self._cached is None or self._cached[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._cached = (epoch, self.draw_batches(rng, self.epoch_chunks(rng)))
        return self._cached[1]

    def __iter__(self) -> Iterator[int]:
        lo, hi = self.rank * self.pids_per_rank, (self.rank + 1) * self.pids_per_rank
        for batch in self.global_batches(self.epoch):
            for chunk in batch[lo:hi]:
                yield from chunk

    def __len__(self) -> int:
        return len(self.global_batches(self.epoch)) * self.pids_per_rank * self.num_instances


class BalancedIdentitySampler(RandomIdentitySampler):
    """P x K batches that use every chunk (``DATALOADER.SAMPLER = 'balanced_identity'``; not the released one).

    The chunks are those of :class:`RandomIdentitySampler` (shuffled images cut into chunks of K, leftovers
    below K dropped, identities below K images drawn with replacement), but P distinct identities are
    drawn with probabilities proportional to the chunks they have left, until every chunk is used. When
    fewer than P identities have chunks left, the batch is completed with fresh chunks of other
    identities (drawn uniformly), so every chunk, hence every identity, appears in every epoch and every
    batch is full. Seeding, DDP slicing and ``len()`` are as for :class:`RandomIdentitySampler`.
    """

    def _chunk(self, rng, i):
        """K indices of identity number ``i`` (with replacement if it has fewer than K images)."""
        idx = self.indices_of[i]
        return rng.choice(idx, self.num_instances, replace=len(idx) < self.num_instances).tolist()

    def draw_batches(self, rng, chunks: List[List[List[int]]]) -> List[List[List[int]]]:
        """Proportional draw until every chunk is used; the last batches completed with fresh chunks."""
        p = self.num_pids_per_batch
        left = np.array([len(c) for c in chunks])
        everyone = np.arange(len(chunks))
        batches = []
        while left.sum() > 0:
            available = np.flatnonzero(left)
            if len(available) >= p:
                chosen = rng.choice(available, p, replace=False, p=left[available] / left[available].sum())
            else:
                fillers = rng.choice(np.setdiff1d(everyone, available), p - len(available), replace=False)
                chosen = rng.permutation(np.concatenate([available, fillers]))
            batch = []
            for i in chosen:
                if left[i] > 0:
                    left[i] -= 1
                    batch.append(chunks[i][left[i]])
                else:
                    batch.append(self._chunk(rng, i))
            batches.append(batch)
        return batches


class RandomShuffleSampler(Sampler):
    """Plain shuffling (``DATALOADER.SAMPLER = 'random'``), seeded by (seed, epoch), sharded over ranks.

    Each epoch is one permutation of the dataset, truncated to a multiple of ``world_size``; rank r
    takes every ``world_size``-th index starting at r, so ranks are disjoint and the same length.
    """

    def __init__(self, num_samples: int, seed: int = 0, rank: Optional[int] = None, world_size: Optional[int] = None):
        self.rank, self.world_size = distributed_rank_and_size(rank, world_size)
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.num_samples)
        usable = len(self) * self.world_size
        return iter(order[self.rank:usable:self.world_size].tolist())

    def __len__(self) -> int:
        return self.num_samples // self.world_size


class ContiguousShardSampler(Sampler):
    """Indices ``[start, end)`` of this rank, in order: shards of sizes differing by at most one, no
    padding and no duplicates, so concatenating the ranks' outputs in rank order gives 0..n-1."""

    def __init__(self, num_samples: int, rank: Optional[int] = None, world_size: Optional[int] = None):
        self.rank, self.world_size = distributed_rank_and_size(rank, world_size)
        self.start = num_samples * self.rank // self.world_size
        self.end = num_samples * (self.rank + 1) // self.world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.end))

    def __len__(self) -> int:
        return self.end - self.start
