"""The one exception type of the data pipeline."""
from utils.errors import FusionReIDError


class DatasetError(FusionReIDError, ValueError):
    """A dataset that cannot be used as configured; the message says which file or folder and why.

    Raised for a missing root folder, a folder that does not have the expected layout, an empty split,
    an unreadable image, an unknown dataset name or sampler settings the dataset cannot satisfy.
    """
