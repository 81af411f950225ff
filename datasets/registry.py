"""Name -> dataset class, filled by the ``@register_dataset`` decorator of each dataset module.

The registry is the only list of dataset names: ``configs/config.py`` reads the allowed values of
``DATASETS.NAMES`` from :func:`dataset_names`, and the tests parametrise over it. The names appear
once the dataset modules are imported (``import datasets``).
"""
from typing import Callable, Dict, Optional, Tuple, Type, TypeVar

from yacs.config import CfgNode

from .base import ReIDDataset
from .errors import DatasetError

DATASET_REGISTRY: Dict[str, Type[ReIDDataset]] = {}

T = TypeVar("T", bound=type)


def register_dataset(name: str) -> Callable[[T], T]:
    """Class decorator: make the dataset class available to ``build_dataset(name, ...)``."""
    def add(cls: T) -> T:
        if name in DATASET_REGISTRY:
            raise ValueError(f"dataset name {name!r} is registered twice "
                             f"({DATASET_REGISTRY[name].__name__} and {cls.__name__})")
        cls.name = name
        DATASET_REGISTRY[name] = cls
        return cls
    return add


def dataset_names() -> Tuple[str, ...]:
    """The registered dataset names, sorted."""
    return tuple(sorted(DATASET_REGISTRY))


def build_dataset(name: str, root: str, cfg: Optional[CfgNode] = None) -> ReIDDataset:
    """The dataset ``name`` found under the folder ``root`` (see each dataset class for its layout).

    Returns an object with ``train``, ``query``, ``gallery`` (lists of ``ImageRecord(path, pid, camid)``;
    camid 0-based, train pids relabelled 0..N-1 in sorted order), ``num_train_pids``, ``num_train_cams``
    and ``num_cams``. ``cfg`` is only read by datasets that need settings (``synthetic``).
    """
    if name not in DATASET_REGISTRY:
        raise DatasetError(f"unknown dataset {name!r}; known datasets: {', '.join(dataset_names())}")
    return DATASET_REGISTRY[name](root, cfg)
