"""Name -> dataset class, filled by the ``@register_dataset`` decorator of each dataset module.

The registry is the only list of dataset names: :func:`check_dataset_names` checks ``DATASETS.NAMES`` and
``DATASETS.TEST_NAMES`` against it when the data is built (``make_dataloader``), not when the config is loaded,
so a dataset registered by the user's code may be registered before or after ``configs.load_cfg``; the tests
parametrise over it. The built-in names appear once the dataset modules are imported (``import datasets``).
"""
from typing import Callable, Dict, Optional, Tuple, Type, TypeVar

from yacs.config import CfgNode

from configs.config import check_choice
from utils.errors import ConfigError

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


def check_dataset_names(cfg: CfgNode) -> None:
    """A ``ConfigError`` naming the key unless every name of ``DATASETS.NAMES`` and ``DATASETS.TEST_NAMES`` is
    registered now (``TEST_NAMES`` must not be empty: ``configs.load_cfg`` sets it to ``NAMES``)."""
    if not cfg.DATASETS.TEST_NAMES:
        raise ConfigError("DATASETS.TEST_NAMES is empty: load the config with configs.load_cfg, which sets it "
                          "to DATASETS.NAMES, or name the test datasets")
    for key, names in (("DATASETS.NAMES", cfg.DATASETS.NAMES), ("DATASETS.TEST_NAMES", cfg.DATASETS.TEST_NAMES)):
        check_choice(key, names, dataset_names(), what="the registered datasets")


def build_dataset(name: str, root: str, cfg: Optional[CfgNode] = None) -> ReIDDataset:
    """The dataset ``name`` found under the folder ``root`` (see each dataset class for its layout).

    Returns an object with ``train``, ``query``, ``gallery`` (lists of ``ImageRecord(path, pid, camid)``;
    camid 0-based, train pids relabelled 0..N-1 in sorted order), ``num_train_pids``, ``num_train_cams``
    and ``num_cams``. ``cfg`` is only read by datasets that need settings (``synthetic``).
    """
    if name not in DATASET_REGISTRY:
        raise DatasetError(f"unknown dataset {name!r}; known datasets: {', '.join(dataset_names())}")
    return DATASET_REGISTRY[name](root, cfg)
