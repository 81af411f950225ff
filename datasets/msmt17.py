"""MSMT17 (Wei et al., CVPR 2018), as released in V1 (``train/``, ``test/``) or V2 (``mask_train_v2/``,
``mask_test_v2/``).

Both versions list their images in ``list_train.txt``, ``list_val.txt``, ``list_query.txt`` and
``list_gallery.txt``, one ``<relative path> <pid>`` per line, e.g. ``0000/0000_000_01_0303morning_0015_0.jpg 0``.
The camera is the third underscore-separated field of the file name (1-based). Training uses the train
and val lists together.
"""
import os
import re
from typing import List, Optional, Tuple

from .base import ImageRecord, ReIDDataset
from .errors import DatasetError
from .registry import register_dataset

# version -> (training image folder, test image folder)
MSMT_VERSIONS = {"V1": ("train", "test"), "V2": ("mask_train_v2", "mask_test_v2")}
LIST_FILES = {"train": ("list_train.txt", "list_val.txt"), "query": ("list_query.txt",),
              "gallery": ("list_gallery.txt",)}


# <pid>_<index>_<camera (1-based)>_<date><time of day>_<frame>_...: 0000_000_01_0303morning_0015_0.jpg
MSMT_FILE_NAME = re.compile(r"^(\d+)_\d+_(\d+)_\d+[A-Za-z]+_")
MSMT_EXAMPLE_NAME = "0000_000_01_0303morning_0015_0.jpg"


def parse_msmt_name(file_name: str) -> Optional[Tuple[int, int]]:
    """``(pid, camid)`` of an MSMT17 file name like ``0000_000_01_0303morning_0015_0.jpg`` (the first and
    the third underscore-separated fields; camid 0-based), None for any other name. Only the base name
    is read, so a path may be given."""
    match = MSMT_FILE_NAME.match(os.path.basename(file_name))
    if match is None or int(match.group(2)) < 1:
        return None
    return int(match.group(1)), int(match.group(2)) - 1


def msmt_camera(file_name: str) -> int:
    """0-based camera of an MSMT17 file name (third underscore-separated field, 1-based)."""
    parsed = parse_msmt_name(file_name)
    if parsed is None:
        raise ValueError(f"{os.path.basename(file_name)!r} is not named like {MSMT_EXAMPLE_NAME} "
                         f"(camera number 1 or more in the third '_' field)")
    return parsed[1]


def parse_msmt_list(list_file: str, image_dir: Optional[str] = None) -> List[ImageRecord]:
    """The ``ImageRecord``s of one MSMT17 list file whose paths are relative to ``image_dir`` (default: the
    image folder beside the list, :func:`msmt_list_image_dir`)."""
    image_dir = msmt_list_image_dir(list_file) if image_dir is None else image_dir
    records = []
    with open(list_file, "r", encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rel_path, pid = line.split()
                records.append(ImageRecord(os.path.join(image_dir, rel_path), int(pid), msmt_camera(rel_path)))
            except ValueError as err:
                raise DatasetError(f"{list_file}, line {line_no}: expected '<relative path> <pid>' with a "
                                   f"file name like {MSMT_EXAMPLE_NAME}, got {line.strip()!r} "
                                   f"({err})") from None
    if records and not os.path.isfile(records[0].path):
        raise DatasetError(f"{list_file} names {records[0].path}, which does not exist "
                           f"(images of this list are expected under {image_dir}/)")
    return records


def msmt_version(path: str) -> Optional[str]:
    """'V1' or 'V2' by the image folders present in ``path``, or None."""
    for version, folders in MSMT_VERSIONS.items():
        if all(os.path.isdir(os.path.join(path, f)) for f in folders):
            return version
    return None


def msmt_list_image_dir(list_file: str) -> str:
    """The image folder of an MSMT17 list file: the training folder (``list_train.txt``, ``list_val.txt``) or
    the test folder (``list_query.txt``, ``list_gallery.txt``) of the version found beside the list."""
    path, name = os.path.split(list_file)
    names = [n for split_names in LIST_FILES.values() for n in split_names]
    version = msmt_version(path or ".")
    if name not in names or version is None:
        raise DatasetError(f"{list_file}: not an MSMT17 list file ({', '.join(names)}) beside the image folders "
                           f"train/ + test/ (V1) or mask_train_v2/ + mask_test_v2/ (V2)")
    train_dir, test_dir = MSMT_VERSIONS[version]
    return os.path.join(path, train_dir if name in LIST_FILES["train"] else test_dir)


@register_dataset("msmt17")
class MSMT17(ReIDDataset):
    """MSMT17: 1,041 training identities (train + val lists), 15 cameras."""

    folder_names = ("MSMT17_V1", "MSMT17_V2", "msmt17", "MSMT17")
    expected_tree = ("  <DATASETS.ROOT_DIR>/MSMT17_V1/   (or MSMT17_V2/, msmt17/)\n"
                     "      train/ test/                 (V2: mask_train_v2/ mask_test_v2/)\n"
                     "      list_train.txt list_val.txt list_query.txt list_gallery.txt\n"
                     "          lines: 0000/0000_000_01_0303morning_0015_0.jpg 0")
    release_name = "MSMT17 (train + val merged)"
    published = {
        "train": {"ids": 1041, "images": 32621, "cameras": 15},
        "query": {"images": 11659, "cameras": 15},
        "gallery": {"images": 82161, "cameras": 15},
    }

    def standard_split(self) -> Optional[str]:
        """'MSMT17 V1 (train + val merged)' or 'MSMT17 V2 (...)' (blurred faces) when the counts are the
        published ones; the paper's numbers are on V1."""
        if super().standard_split() is None:
            return None
        return f"MSMT17 {msmt_version(self.dataset_dir)} (train + val merged)"

    def layout_problem(self, path: str) -> Optional[str]:
        problems = []
        if msmt_version(path) is None:
            problems.append("missing image folders train/ + test/ (V1) or mask_train_v2/ + mask_test_v2/ (V2)")
        lists = [name for names in LIST_FILES.values() for name in names]
        missing = [n for n in lists if not os.path.isfile(os.path.join(path, n))]
        if missing:
            problems.append(f"missing list file(s) {', '.join(missing)}")
        return "; ".join(problems) or None

    def split_hint(self, split: str) -> str:
        return f" in {' + '.join(LIST_FILES[split])}"

    def load_splits(self, path: str) -> Tuple[List[ImageRecord], List[ImageRecord], List[ImageRecord]]:
        lists = {split: [os.path.join(path, name) for name in LIST_FILES[split]] for split in LIST_FILES}
        return tuple([record for list_file in lists[split] for record in parse_msmt_list(list_file)]
                     for split in ("train", "query", "gallery"))
