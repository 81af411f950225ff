"""Name -> dataset class, filled by the ``@register_dataset`` decorator of each dataset module."""
from .errors import DatasetError

DATASET_REGISTRY = {}


def register_dataset(name):
    """Class decorator: make the dataset class available to ``build_dataset(name, ...)``."""
    def add(cls):
        if name in DATASET_REGISTRY:
            raise ValueError(f"dataset name {name!r} is registered twice "
                             f"({DATASET_REGISTRY[name].__name__} and {cls.__name__})")
        cls.name = name
        DATASET_REGISTRY[name] = cls
        return cls
    return add


def build_dataset(name, root, cfg=None):
    """The dataset ``name`` found under the folder ``root`` (see each dataset class for its layout).

    Returns an object with ``train``, ``query``, ``gallery`` (lists of ``ImageRecord(path, pid, camid)``;
    camid 0-based, train pids relabelled 0..N-1 in sorted order), ``num_train_pids``, ``num_train_cams``
    and ``num_cams``. ``cfg`` is only read by datasets that need settings (``synthetic``).
    """
    if name not in DATASET_REGISTRY:
        raise DatasetError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(DATASET_REGISTRY))}")
    return DATASET_REGISTRY[name](root, cfg)
