"""Data loaders of training and evaluation: ``make_dataloader(cfg)`` (see docs/INTERFACES.md)."""
import logging
from collections import defaultdict
from typing import Callable, Dict, Iterable, Iterator, List, NamedTuple, Optional, Tuple, Union

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler
from yacs.config import CfgNode

from utils.misc import DATA_STREAM, epoch_seed

from .base import ImageRecord, ReIDDataset, TrainingUnion, split_statistics
from .errors import DatasetError
from .image_io import DEFAULT_DECODER, read_image
from .registry import build_dataset, check_dataset_names
from .samplers import (BalancedIdentitySampler, ContiguousShardSampler, RandomIdentitySampler, RandomShuffleSampler,
                       distributed_rank_and_size)
from .transforms import build_transforms

logger = logging.getLogger(__name__)

# What ImageDataset returns per index: (image, pid, camid, index); the image transformed when a transform is set.
Item = Tuple[Union[torch.Tensor, Image.Image], int, int, int]


class TestSet(NamedTuple):
    """One evaluated dataset of :class:`DataLoaders` (``DATASETS.TEST_NAMES``)."""

    name: str                         # the registered dataset name
    loader: "SeededDataLoader"        # query + gallery, in dataset order (queries first); the dataset's own
                                      # pids and camids (what the metrics compare)
    num_query: int                    # the first num_query items are the queries
    camera_offset: Optional[int]      # the model's camera id is camid + camera_offset (the dataset's offset in
                                      # the training union); None: not trained on, every image gets the mean
                                      # camera embedding (processor.inference.model_camera_ids)
    __test__ = False                  # not a pytest test class, wherever it is imported


class DataLoaders(NamedTuple):
    """What :func:`make_dataloader` returns (a ``NamedTuple``; its first five fields keep their order)."""

    train_loader: "SeededDataLoader"  # P x K training batches (images, pids, camids, indices), over the union
                                      # of DATASETS.NAMES (pids and camids offset per dataset)
    val_loader: "SeededDataLoader"    # the first test set's loader (test_sets[0].loader)
    num_query: int                    # the first test set's queries (test_sets[0].num_query)
    num_classes: int                  # training identities, summed over the datasets (the ID classifiers' size)
    num_cams: int                     # camera ids, summed over the training datasets (the camera embedding's size)
    test_sets: Tuple[TestSet, ...]    # every test set, in DATASETS.TEST_NAMES order
    fingerprints: Dict[str, Dict] = {}  # every dataset read -> ReIDDataset.fingerprint() (provenance.datasets)


class ImageDataset(Dataset):
    """Items ``(image, pid, camid, index)`` of a list of ``ImageRecord``s, the image transformed.

    An unreadable image raises ``DatasetError`` naming the file, unless ``skip_corrupt``: then the next
    readable image of the same pid (in record order) is used instead and a warning is logged once per file.
    """

    def __init__(self, records: Iterable[ImageRecord], transform: Optional[Callable] = None,
                 skip_corrupt: bool = False, decoder: str = DEFAULT_DECODER):
        self.records = list(records)
        self.transform = transform
        self.skip_corrupt = skip_corrupt
        self.decoder = decoder
        self._indices_of_pid: Optional[Dict[int, List[int]]] = None
        self._reported = set()

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Item:
        record = self.records[index]
        image = self.load_image(index)
        if self.transform is not None:
            image = self.transform(image)
        return image, record.pid, record.camid, index

    def load_image(self, index: int) -> Image.Image:
        """The decoded image of record ``index``, or with ``skip_corrupt`` a stand-in of the same pid."""
        path, pid = self.records[index].path, self.records[index].pid
        try:
            return read_image(path, self.decoder)
        except DatasetError as err:
            if not self.skip_corrupt:
                raise DatasetError(f"{err} (set DATALOADER.SKIP_CORRUPT True to skip unreadable images)") from None
            reason = err
        for other in self._same_pid_after(index):
            stand_in = self.records[other].path
            try:
                image = read_image(stand_in, self.decoder)
            except DatasetError:
                continue
            if path not in self._reported:
                self._reported.add(path)
                logger.warning("skipping unreadable image (%s); using %s of the same pid %s instead",
                               reason, stand_in, pid)
            return image
        raise DatasetError(f"{reason}; no other readable image of pid {pid} to use instead")

    def _same_pid_after(self, index: int) -> List[int]:
        """Other indices with the pid of ``index``, starting after it and wrapping around."""
        if self._indices_of_pid is None:
            groups = defaultdict(list)
            for i, record in enumerate(self.records):
                groups[record.pid].append(i)
            self._indices_of_pid = groups
        same = self._indices_of_pid[self.records[index].pid]
        at = same.index(index)
        return same[at + 1:] + same[:at]


class SeededDataLoader(DataLoader):
    """A ``DataLoader`` whose random augmentation depends only on (seed, rank, sampler epoch).

    Before each pass its generator is re-seeded from ``epoch_seed(seed, sampler.epoch, rank, DATA_STREAM)``: worker
    processes take their torch/numpy/random seeds from it. Without workers the transforms run on a
    private torch RNG state, so augmentation neither disturbs nor depends on the training's own RNG.
    ``persistent_workers`` must stay off (workers are re-seeded at every pass).
    """

    def __init__(self, dataset: Dataset, *, seed: int, rank: int = 0, **kwargs):
        self.seed, self.rank = int(seed), int(rank)
        super().__init__(dataset, generator=torch.Generator(), **kwargs)

    def __iter__(self) -> Iterator:
        seed = epoch_seed(self.seed, getattr(self.sampler, "epoch", 0), self.rank, DATA_STREAM)
        self.generator.manual_seed(seed)
        if self.num_workers > 0:
            return super().__iter__()
        return self._iter_in_main_process(super().__iter__(), seed)

    @staticmethod
    def _iter_in_main_process(batches, seed):
        """Fetch each batch on a private torch RNG state and with one intra-op thread (as in a worker:
        per-image tensor ops split over threads can be many times slower on a busy CPU), restoring the
        caller's RNG state and thread count after each batch."""
        state = torch.Generator().manual_seed(seed).get_state()
        while True:
            outer_state, outer_threads = torch.get_rng_state(), torch.get_num_threads()
            torch.set_rng_state(state)
            torch.set_num_threads(1)
            try:
                batch = next(batches)
            except StopIteration:
                return
            finally:
                state = torch.get_rng_state()
                torch.set_rng_state(outer_state)
                torch.set_num_threads(outer_threads)
            yield batch


def build_train_sampler(cfg: CfgNode, train_records: List[ImageRecord], rank: Optional[int] = None,
                        world_size: Optional[int] = None) -> Sampler:
    """The training sampler of ``DATALOADER.SAMPLER``: 'identity' ``RandomIdentitySampler`` (P x K, as released),
    'balanced_identity' ``BalancedIdentitySampler`` (P x K, every chunk used) or 'random' ``RandomShuffleSampler``."""
    identity_samplers = {"identity": RandomIdentitySampler, "balanced_identity": BalancedIdentitySampler}
    if cfg.DATALOADER.SAMPLER in identity_samplers:
        return identity_samplers[cfg.DATALOADER.SAMPLER](
            [r.pid for r in train_records], cfg.SOLVER.IMS_PER_BATCH, cfg.DATALOADER.NUM_INSTANCE,
            seed=cfg.SOLVER.SEED, rank=rank, world_size=world_size)
    if cfg.DATALOADER.SAMPLER != "random":
        raise DatasetError(f"DATALOADER.SAMPLER = {cfg.DATALOADER.SAMPLER!r} is not one of 'identity', "
                           f"'balanced_identity', 'random'")
    return RandomShuffleSampler(len(train_records), seed=cfg.SOLVER.SEED, rank=rank, world_size=world_size)


def make_dataloader(cfg: CfgNode, rank: Optional[int] = None, world_size: Optional[int] = None) -> DataLoaders:
    """``DataLoaders(train_loader, val_loader, num_query, num_classes, num_cams, test_sets)`` of the config.

    Training is on the union of ``DATASETS.NAMES`` (:class:`datasets.base.TrainingUnion`: pids and camids
    offset per dataset, ``num_classes`` and ``num_cams`` summed). Train batches: ``(images, pids, camids,
    indices)`` of ``SOLVER.IMS_PER_BATCH / world_size`` images per rank; the sampler has ``set_epoch``.
    One :class:`TestSet` per name of ``DATASETS.TEST_NAMES`` (``load_cfg`` sets it to the training datasets when
    empty): batches the same over its query + gallery (first ``num_query`` items are queries), each rank a
    contiguous in-order shard. A dataset in both lists is read once. ``rank``/``world_size`` default to
    torch.distributed's (0/1 without it). Every name must be registered by now (:func:`check_dataset_names`).
    """
    check_dataset_names(cfg)
    rank, world_size = distributed_rank_and_size(rank, world_size)
    datasets: Dict[str, ReIDDataset] = {}
    for name in cfg.DATASETS.NAMES + cfg.DATASETS.TEST_NAMES:
        if name not in datasets:
            datasets[name] = build_dataset(name, cfg.DATASETS.ROOT_DIR, cfg)
    union = TrainingUnion([datasets[name] for name in cfg.DATASETS.NAMES])
    if cfg.SOLVER.IMS_PER_BATCH % world_size:
        raise DatasetError(f"SOLVER.IMS_PER_BATCH = {cfg.SOLVER.IMS_PER_BATCH} (the global batch) must be "
                           f"divisible by the {world_size} processes")
    per_rank_batch = cfg.SOLVER.IMS_PER_BATCH // world_size
    # page-locked batches where the model runs on CUDA (non_blocking copies then overlap the step). Workers are
    # not persistent: SeededDataLoader re-seeds them at every pass, which is what makes a resumed run exact.
    pin = cfg.MODEL.DEVICE != "cpu" and torch.cuda.is_available()
    skip = cfg.DATALOADER.SKIP_CORRUPT
    train_set = ImageDataset(union.train, build_transforms(cfg, is_train=True), skip_corrupt=skip)
    if len(train_set) < cfg.SOLVER.IMS_PER_BATCH:
        raise DatasetError(f"the training split has {len(train_set)} images, fewer than one batch "
                           f"(SOLVER.IMS_PER_BATCH = {cfg.SOLVER.IMS_PER_BATCH})")
    train_loader = SeededDataLoader(
        train_set, seed=cfg.SOLVER.SEED, rank=rank, batch_size=per_rank_batch,
        sampler=build_train_sampler(cfg, union.train, rank, world_size), drop_last=True,
        num_workers=cfg.DATALOADER.NUM_WORKERS, pin_memory=pin)
    test_sets = []
    for name in cfg.DATASETS.TEST_NAMES:
        dataset = datasets[name]
        val_set = ImageDataset(dataset.query + dataset.gallery, build_transforms(cfg, is_train=False),
                               skip_corrupt=skip)
        val_loader = SeededDataLoader(val_set, seed=cfg.SOLVER.SEED, rank=rank, batch_size=cfg.TEST.IMS_PER_BATCH,
                                      sampler=ContiguousShardSampler(len(val_set), rank, world_size),
                                      num_workers=cfg.DATALOADER.NUM_WORKERS, pin_memory=pin)
        offsets = union.offsets.get(name)
        if offsets is None:
            logger.info("test set %s is not among the training datasets (DATASETS.NAMES): the model does not know "
                        "its %d cameras, its images get the mean of the trained camera embeddings", name,
                        split_statistics(dataset.query + dataset.gallery)["cameras"])
        test_sets.append(TestSet(name, val_loader, len(dataset.query), None if offsets is None else offsets.camid))
    first = test_sets[0]
    return DataLoaders(train_loader=train_loader, val_loader=first.loader, num_query=first.num_query,
                       num_classes=union.num_train_pids, num_cams=union.num_cams, test_sets=tuple(test_sets),
                       fingerprints={name: dataset.fingerprint() for name, dataset in datasets.items()})
