"""Person re-identification datasets, P x K sampling and augmentation.

``build_dataset(name, root, cfg)`` -> train/query/gallery records; ``make_dataloader(cfg)`` -> the
loaders of docs/INTERFACES.md; ``build_transforms(cfg, is_train)``. A new dataset is one module with a
``@register_dataset(name)`` class, imported below; the config's allowed ``DATASETS.NAMES`` are read
from the registry (``dataset_names()``).
"""
from . import csv_dataset, dukemtmcreid, market1501, msmt17, synthetic  # noqa: F401  (register the datasets)
from .base import ImageRecord, ReIDDataset
from .errors import DatasetError
from .image_io import read_image
from .loader import DataLoaders, ImageDataset, SeededDataLoader, build_train_sampler, make_dataloader
from .registry import DATASET_REGISTRY, build_dataset, dataset_names, register_dataset
from .samplers import ContiguousShardSampler, RandomIdentitySampler, RandomShuffleSampler
from .transforms import build_transforms

__all__ = [
    "ContiguousShardSampler", "DATASET_REGISTRY", "DataLoaders", "DatasetError", "ImageDataset", "ImageRecord",
    "RandomIdentitySampler", "RandomShuffleSampler", "ReIDDataset", "SeededDataLoader",
    "build_dataset", "build_train_sampler", "build_transforms", "dataset_names", "make_dataloader", "read_image",
    "register_dataset",
]
