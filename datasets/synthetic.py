"""The repository's own dataset, generated on first use under ``DATASETS.ROOT_DIR/synthetic`` in
Market-1501 format (see ``synthetic_generator``) and read by the Market-1501 parser."""
import os
from typing import Optional

from yacs.config import CfgNode

from configs import get_cfg_defaults

from .market1501 import MarketLayoutDataset
from .registry import register_dataset
from .synthetic_generator import SyntheticParams, ensure_generated

SYNTHETIC_FOLDER = "synthetic"


@register_dataset("synthetic")
class SyntheticReID(MarketLayoutDataset):
    """Generated people and cameras; sizes and seed from ``DATASETS.SYNTHETIC.*`` (regenerated when they change)."""

    folder_names = (SYNTHETIC_FOLDER,)

    def __init__(self, root: str, cfg: Optional[CfgNode] = None):
        self.params = SyntheticParams.from_cfg(cfg if cfg is not None else get_cfg_defaults())
        ensure_generated(os.path.join(root, SYNTHETIC_FOLDER), self.params)
        self.published = self.params.expected_statistics()
        self.release_name = f"synthetic (generated, seed {self.params.seed})"
        super().__init__(root, cfg)

    def find_dataset_dir(self, root: str) -> str:
        # only the generated folder, never the root itself (it may hold other datasets)
        return os.path.join(root, SYNTHETIC_FOLDER)
