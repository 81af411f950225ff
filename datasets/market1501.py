"""Market-1501 (Zheng et al., ICCV 2015) and the parser of its folder layout, shared by DukeMTMC-reID
and the synthetic dataset.

File names are ``<pid>_c<camera>...``: ``0002_c1s1_000451_03.jpg``. pid -1 (junk detections) is
ignored; pid 0 (distractors) is kept in the gallery. Cameras are 1-based in the names, 0-based here.
"""
import logging
import os
import re
from typing import List, Optional, Tuple

from .base import ImageRecord, ReIDDataset, list_images
from .registry import register_dataset

logger = logging.getLogger(__name__)

MARKET_FILE_NAME = re.compile(r"^(-?\d+)_c(\d+)")
JUNK_PID = -1


def parse_market_name(file_name: str) -> Optional[Tuple[int, int]]:
    """``(pid, camid)`` of a file named ``<pid>_c<camera>...`` (camid 0-based), None for any other name.

    Only the base name is read, so a path may be given. Junk (-1) is returned as it is.
    """
    match = MARKET_FILE_NAME.match(os.path.basename(file_name))
    if match is None or int(match.group(2)) < 1:
        return None
    return int(match.group(1)), int(match.group(2)) - 1


def parse_market_folder(folder: str) -> List[ImageRecord]:
    """The ``ImageRecord``s of the images in ``folder`` named ``<pid>_c<camera>...``; junk (-1) dropped.

    Image files whose names do not follow the pattern are skipped with a warning.
    """
    records, skipped = [], []
    for name in list_images(folder):
        parsed = parse_market_name(name)
        if parsed is None:
            skipped.append(name)
            continue
        pid, camid = parsed
        if pid == JUNK_PID:
            continue
        records.append(ImageRecord(os.path.join(folder, name), pid, camid))
    if skipped:
        logger.warning("%s: skipped %d image(s) not named <pid>_c<camera>..., e.g. %s",
                       folder, len(skipped), skipped[0])
    return records


class MarketLayoutDataset(ReIDDataset):
    """A dataset stored as three folders of ``<pid>_c<camera>...`` images (Market-1501 layout)."""

    split_folders = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
    example_name = "0002_c1s1_000451_03.jpg"

    @property
    def expected_tree(self) -> str:
        top = self.folder_names[0] if self.folder_names else self.name
        return "\n".join([f"  <DATASETS.ROOT_DIR>/{top}/"]
                         + [f"      {folder}/   {self.example_name}, ..." for folder in self.split_folders.values()])

    def layout_problem(self, path: str) -> Optional[str]:
        missing = [f for f in self.split_folders.values() if not os.path.isdir(os.path.join(path, f))]
        return f"missing folder(s) {', '.join(missing)}" if missing else None

    def split_hint(self, split: str) -> str:
        return f" named <pid>_c<camera>... in {self.split_folders[split]}/"

    def load_splits(self, path: str) -> Tuple[List[ImageRecord], List[ImageRecord], List[ImageRecord]]:
        folders = [os.path.join(path, self.split_folders[s]) for s in ("train", "query", "gallery")]
        return tuple(parse_market_folder(folder) for folder in folders)


@register_dataset("market1501")
class Market1501(MarketLayoutDataset):
    """Market-1501: 751 training identities, 6 cameras."""

    folder_names = ("Market-1501-v15.09.15", "market1501", "Market-1501")
    release_name = "Market-1501 v15.09.15"
    published = {
        "train": {"ids": 751, "images": 12936, "cameras": 6},
        "query": {"images": 3368, "cameras": 6},
        "gallery": {"images": 15913, "cameras": 6},
    }
