"""DukeMTMC-reID (Zheng et al., ICCV 2017): Market-1501 layout, names like ``0001_c2_f0046182.jpg``."""
from .market1501 import MarketLayoutDataset
from .registry import register_dataset


@register_dataset("dukemtmcreid")
class DukeMTMCreID(MarketLayoutDataset):
    """DukeMTMC-reID: 702 training identities, 8 cameras."""

    folder_names = ("DukeMTMC-reID", "dukemtmcreid", "dukemtmc-reid")
    example_name = "0001_c2_f0046182.jpg"
    release_name = "DukeMTMC-reID"
    published = {
        "train": {"ids": 702, "images": 16522, "cameras": 8},
        "query": {"images": 2228, "cameras": 8},
        "gallery": {"images": 17661, "cameras": 8},
    }
