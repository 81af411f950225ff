"""What every person re-identification dataset shares: finding its folder, relabelling the training
identities, checking the splits and logging their statistics.

A dataset module subclasses ``ReIDDataset``, sets ``folder_names``, ``expected_tree`` and ``published``,
implements ``layout_problem(path)`` and ``load_splits(path)``, and registers itself with
``@register_dataset(name)``. :class:`TrainingUnion` joins the training splits of several datasets
(``DATASETS.NAMES`` a list) with identities and cameras that never collide.
"""
import hashlib
import logging
import os
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

from yacs.config import CfgNode

from .errors import DatasetError

logger = logging.getLogger(__name__)


class ImageRecord(NamedTuple):
    """One image of a dataset; read it by field name (``record.path``, ``.pid``, ``.camid``)."""

    path: str   # the image file
    pid: int    # identity: the dataset's own id for query/gallery records, relabelled 0..N-1 for train records
    camid: int  # camera, 0-based


SPLITS = ("train", "query", "gallery")
# File endings read as images, here and by processor.feature_extractor.find_images (lower case).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def split_statistics(records: Sequence[ImageRecord]) -> Dict[str, int]:
    """``{'ids': ..., 'images': ..., 'cameras': ...}`` of a list of records."""
    return {
        "ids": len({r.pid for r in records}),
        "images": len(records),
        "cameras": len({r.camid for r in records}),
    }


def records_sha256(records: Sequence[ImageRecord], folder: str) -> str:
    """SHA-256 over the sorted ``relative path, pid, camid`` lines of ``records`` (paths relative to ``folder``,
    '/'-separated): the same list of images and labels gives the same hash on any machine and in any order."""
    lines = sorted(f"{os.path.relpath(r.path, folder).replace(os.sep, '/')},{r.pid},{r.camid}" for r in records)
    digest = hashlib.sha256()
    for line in lines:
        digest.update(line.encode("utf-8") + b"\n")
    return digest.hexdigest()


def relabel_pids(records: Sequence[ImageRecord]) -> List[ImageRecord]:
    """The records with pids mapped to 0..N-1 in sorted order of the original pids."""
    label_of = {pid: label for label, pid in enumerate(sorted({r.pid for r in records}))}
    return [r._replace(pid=label_of[r.pid]) for r in records]


def list_images(folder: str) -> List[str]:
    """Sorted file names of the images directly inside ``folder``."""
    return sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))


class ReIDDataset:
    """Train / query / gallery splits of one dataset found under a root folder.

    Attributes: ``train``, ``query``, ``gallery`` (lists of ``ImageRecord``), ``num_train_pids``,
    ``num_train_cams`` (cameras seen in training), ``num_cams`` (1 + the largest camid of any split, the
    size a camera embedding needs), ``dataset_dir`` (the folder that was read).
    """

    name = None            # set by @register_dataset
    folder_names = ()      # folder names looked for under the root, in order of preference
    expected_tree = ""     # shown when no folder with the right layout is found
    published = {}         # split -> {'ids'/'images'/'cameras': count}; compared with what was read
    release_name = None    # the standard split whose counts ``published`` gives (e.g. 'Market-1501 v15.09.15')

    def __init__(self, root: str, cfg: Optional[CfgNode] = None):
        self.root = root
        self.cfg = cfg
        self.dataset_dir = self.find_dataset_dir(root)
        train, query, gallery = self.load_splits(self.dataset_dir)
        for split, records in zip(SPLITS, (train, query, gallery)):
            if not records:
                raise DatasetError(f"{self.name}: the {split} split in {self.dataset_dir} is empty "
                                   f"(no images found{self.split_hint(split)})")
        self.train = relabel_pids(train)
        self.query = query
        self.gallery = gallery
        self.num_train_pids = len({r.pid for r in self.train})
        self.num_train_cams = len({r.camid for r in self.train})
        self.num_cams = 1 + max(r.camid for records in (self.train, query, gallery) for r in records)
        self._fingerprint = None
        self.log_statistics()

    # ------------------------------------------------------------------ to implement per dataset
    def layout_problem(self, path: str) -> Optional[str]:
        """None if ``path`` has this dataset's layout, else a short description of what is wrong."""
        raise NotImplementedError

    def load_splits(self, path: str) -> Tuple[List[ImageRecord], List[ImageRecord], List[ImageRecord]]:
        """``(train, query, gallery)`` lists of ``ImageRecord`` with the dataset's own pids."""
        raise NotImplementedError

    def split_hint(self, split: str) -> str:
        """Where the images of ``split`` were expected (for the empty-split message)."""
        return ""

    # ------------------------------------------------------------------ shared
    def find_dataset_dir(self, root: str) -> str:
        """The first of ``root/<folder_names...>`` and ``root`` itself that has the expected layout."""
        if not os.path.isdir(root):
            raise DatasetError(f"{self.name}: dataset root {root!r} does not exist or is not a folder "
                               f"(set DATASETS.ROOT_DIR)")
        candidates = [os.path.join(root, n) for n in self.folder_names] + [root]
        problems = []
        for path in candidates:
            if not os.path.isdir(path):
                continue
            problem = self.layout_problem(path)
            if problem is None:
                return path
            problems.append(f"  {path}: {problem}")
        looked = ", ".join(self.folder_names)
        found = "\n".join(problems) if problems else "  none of them exists"
        raise DatasetError(f"{self.name}: no dataset folder with the expected layout under {root!r}.\n"
                           f"Looked for {looked} (or the root itself):\n{found}\n"
                           f"Expected layout:\n{self.expected_tree}")

    def statistics(self) -> Dict[str, Dict[str, int]]:
        """``{split: {'ids', 'images', 'cameras'}}`` of the loaded splits."""
        return {split: split_statistics(getattr(self, split)) for split in SPLITS}

    def standard_split(self) -> Optional[str]:
        """The name of the standard split these splits are (their counts are the published ones), or None."""
        if not self.published or not self.release_name:
            return None
        stats = self.statistics()
        matches = all(stats[split][key] == value for split, counts in self.published.items()
                      for key, value in counts.items())
        return self.release_name if matches else None

    def fingerprint(self) -> Dict[str, object]:
        """What was read, as ``provenance.datasets.<name>`` records it: ``fingerprint`` (SHA-256 over the three
        splits' hashes), ``standard_split`` (None: matches no standard split), ``folder`` and per split
        ``{'images', 'ids', 'cameras', 'sha256'}`` (:func:`records_sha256`, paths relative to the folder)."""
        if self._fingerprint is None:
            stats = self.statistics()
            splits = {split: {"images": stats[split]["images"], "ids": stats[split]["ids"],
                              "cameras": stats[split]["cameras"],
                              "sha256": records_sha256(getattr(self, split), self.dataset_dir)} for split in SPLITS}
            whole = hashlib.sha256("".join(splits[split]["sha256"] for split in SPLITS).encode("ascii")).hexdigest()
            self._fingerprint = {"fingerprint": whole, "standard_split": self.standard_split(),
                                 "folder": os.path.abspath(self.dataset_dir), "splits": splits}
        return self._fingerprint

    def log_statistics(self) -> None:
        """Log the statistics table and the fingerprint, a warning for every count that differs from the published
        one, and one warning when the splits of a standard dataset match no standard split."""
        stats = self.statistics()
        lines = [f"{self.name} ({self.dataset_dir})",
                 f"  {'split':<8} | {'ids':>6} | {'images':>7} | {'cameras':>7}",
                 "  " + "-" * 36]
        for split in SPLITS:
            s = stats[split]
            lines.append(f"  {split:<8} | {s['ids']:>6} | {s['images']:>7} | {s['cameras']:>7}")
        logger.info("\n".join(lines))
        for split, expected in self.published.items():
            for key, value in expected.items():
                if stats[split][key] != value:
                    logger.warning("%s: the %s split has %d %s, the published count is %d",
                                   self.name, split, stats[split][key], key, value)
        fp = self.fingerprint()
        logger.info("%s: fingerprint %s (%s)", self.name, fp["fingerprint"][:16],
                    fp["standard_split"] or "not a standard split")
        if self.release_name and fp["standard_split"] is None:
            logger.warning("%s: these splits match no standard split (%s has the published counts): another "
                           "version or an already-split copy gives results that are not the paper's",
                           self.name, self.release_name)


class Offsets(NamedTuple):
    """What a dataset's ids are shifted by in a :class:`TrainingUnion`."""

    pid: int    # added to its relabelled training pids
    camid: int  # added to its camids: the first row of its cameras in the camera embedding


class TrainingUnion:
    """The training splits of several datasets as one, in the order given.

    Dataset i's relabelled pids are shifted by the training identities of the datasets before it and its
    camids by their ``num_cams``, so no two datasets share an identity or a camera: ``num_train_pids``
    (the ID classifiers' size) and ``num_cams`` (the camera embedding's size) are the sums over the
    datasets. ``offsets[name]`` says where each dataset's ids start; one dataset alone keeps its ids.
    """

    def __init__(self, datasets: Sequence[ReIDDataset]):
        if not datasets:
            raise DatasetError("no training dataset (DATASETS.NAMES is empty)")
        self.datasets = list(datasets)
        self.train: List[ImageRecord] = []
        self.offsets: Dict[str, Offsets] = {}
        pid_offset = cam_offset = 0
        for dataset in self.datasets:
            self.offsets[dataset.name] = Offsets(pid_offset, cam_offset)
            self.train += [r._replace(pid=r.pid + pid_offset, camid=r.camid + cam_offset) for r in dataset.train]
            pid_offset += dataset.num_train_pids
            cam_offset += dataset.num_cams
        self.num_train_pids = pid_offset
        self.num_cams = cam_offset
        if len(self.datasets) > 1:
            self.log_statistics()

    def log_statistics(self) -> None:
        """One line per dataset (training ids, images, cameras and their offsets) and one for the union."""
        lines = ["training on the union of " + ", ".join(d.name for d in self.datasets),
                 f"  {'dataset':<14} | {'ids':>6} | {'images':>7} | {'cameras':>7} | {'pid offset':>10} | "
                 f"{'camid offset':>12}",
                 "  " + "-" * 72]
        for dataset in self.datasets:
            offsets = self.offsets[dataset.name]
            lines.append(f"  {dataset.name:<14} | {dataset.num_train_pids:>6} | {len(dataset.train):>7} | "
                         f"{dataset.num_cams:>7} | {offsets.pid:>10} | {offsets.camid:>12}")
        lines.append(f"  {'union':<14} | {self.num_train_pids:>6} | {len(self.train):>7} | {self.num_cams:>7} |")
        logger.info("\n".join(lines))
