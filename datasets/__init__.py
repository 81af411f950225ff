"""Person re-identification datasets, P x K sampling and augmentation.

``build_dataset(name, root, cfg)`` -> train/query/gallery records; ``make_dataloader(cfg)`` -> the
loaders of docs/INTERFACES.md; ``build_transforms(cfg, is_train)``. A new dataset is one module with a
``@register_dataset(name)`` class, imported below (or in the user's own code, before or after
``configs.load_cfg``); ``make_dataloader`` checks ``DATASETS.NAMES`` / ``TEST_NAMES`` against the registry
(``check_dataset_names(cfg)``; ``dataset_names()`` lists the registered names).
"""
from . import csv_dataset, dukemtmcreid, market1501, msmt17, synthetic  # noqa: F401  (register the datasets)
from .base import ImageRecord, ReIDDataset
from .errors import DatasetError
from .image_io import read_image
from .loader import DataLoaders, ImageDataset, SeededDataLoader, build_train_sampler, make_dataloader
from .registry import DATASET_REGISTRY, build_dataset, check_dataset_names, dataset_names, register_dataset
from .samplers import ContiguousShardSampler, RandomIdentitySampler, RandomShuffleSampler
from .transforms import build_transforms

__all__ = [
    "ContiguousShardSampler", "DATASET_REGISTRY", "DataLoaders", "DatasetError", "ImageDataset", "ImageRecord",
    "RandomIdentitySampler", "RandomShuffleSampler", "ReIDDataset", "SeededDataLoader",
    "build_dataset", "build_train_sampler", "build_transforms", "check_dataset_names", "dataset_names",
    "make_dataloader", "read_image",
    "register_dataset",
]
