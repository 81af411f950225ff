"""Your own dataset without code: three CSV files in the folder ``DATASETS.CSV_DIR``, used as the dataset
named ``csv`` (``DATASETS.NAMES csv``).

    <DATASETS.CSV_DIR>/
        train.csv  query.csv  gallery.csv

    path,pid,camid
    images/0001_a.jpg,1,0
    images/0001_b.jpg,1,2

* The header names exactly the three columns ``path``, ``pid`` and ``camid``, in any order (spaces around
  the names are ignored); a missing, repeated or unknown column is an error.
* ``path``: an image file, relative to the folder of the CSV file (an absolute path is used as it is).
* ``pid``: the identity, an integer >= 0. Training pids are relabelled 0..N-1 in sorted order (as for
  every dataset); query and gallery pids are kept as written and compared with each other. ``-1`` marks
  a junk image (as in Market-1501): the row is skipped, in any split.
* ``camid``: the camera, an integer >= 0, used as written (0-based, as ``ImageRecord.camid``); cameras
  need not be contiguous. The camera embedding gets 1 + the largest camid of any split.
* Empty lines are skipped; the files are read as UTF-8 (an Excel byte-order mark is accepted).

A relative ``DATASETS.CSV_DIR`` is relative to the current working directory (as ``DATASETS.ROOT_DIR``);
``DATASETS.ROOT_DIR`` is not read. Every problem is one ``DatasetError`` naming the file and line
(``ConfigError`` for an empty ``DATASETS.CSV_DIR``). ``tools/make_csv.py`` writes these files for any
registered dataset.
"""
import csv
import logging
import os
import re
from typing import Dict, List, Optional, Tuple

from yacs.config import CfgNode

from utils.errors import ConfigError

from .base import SPLITS, ImageRecord, ReIDDataset
from .errors import DatasetError
from .market1501 import JUNK_PID
from .registry import register_dataset

logger = logging.getLogger(__name__)

CSV_COLUMNS = ("path", "pid", "camid")
CSV_DIR_KEY = "DATASETS.CSV_DIR"
INTEGER = re.compile(r"[+-]?\d+")  # decimal digits only (int() would also take "1_0")


def csv_file_name(split: str) -> str:
    """``train.csv``, ``query.csv`` or ``gallery.csv``."""
    return f"{split}.csv"


def _column_index(header: List[str], csv_file: str) -> Dict[str, int]:
    """Column name -> position, from the header row; an error unless it holds exactly :data:`CSV_COLUMNS`."""
    names = [name.strip() for name in header]
    expected = ",".join(CSV_COLUMNS)
    repeated = sorted({n for n in names if names.count(n) > 1})
    unknown = [n for n in names if n not in CSV_COLUMNS]
    missing = [c for c in CSV_COLUMNS if c not in names]
    for problem, columns in (("repeated", repeated), ("unknown", unknown), ("missing", missing)):
        if columns:
            raise DatasetError(f"{csv_file}, line 1: {problem} column(s) {', '.join(repr(c) for c in columns)} in "
                               f"the header {','.join(header)!r}; the header must be {expected} (in any order)")
    return {name: names.index(name) for name in CSV_COLUMNS}


def _integer(value: str, column: str, where: str, minimum: int, allowed: str) -> int:
    """``value`` as an integer >= ``minimum``, else an error naming ``where`` (file and line), the column,
    the value and what is ``allowed``."""
    number = int(value) if INTEGER.fullmatch(value.strip()) else None
    if number is None or number < minimum:
        raise DatasetError(f"{where}: {column} must be {allowed}, got {value!r}")
    return number


def read_csv_split(csv_file: str) -> List[ImageRecord]:
    """The ``ImageRecord``s of one CSV file (``path,pid,camid``; see the module docstring), in file order.

    Paths are joined to the CSV file's folder; junk rows (pid -1) are skipped. Raises ``DatasetError``
    naming the file and line for a bad header, a row of the wrong length, a pid or camid that is not an
    integer in range, an empty path or an image file that does not exist.
    """
    if not os.path.isfile(csv_file):
        raise DatasetError(f"CSV file not found: {csv_file}")
    folder = os.path.dirname(csv_file)
    records, junk = [], 0
    with open(csv_file, "r", encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise DatasetError(f"{csv_file}, line 1: the file is empty; the header must be {','.join(CSV_COLUMNS)}")
        column = _column_index(header, csv_file)
        for row in reader:
            if not any(field.strip() for field in row):
                continue
            where = f"{csv_file}, line {reader.line_num}"
            if len(row) != len(CSV_COLUMNS):
                raise DatasetError(f"{where}: expected {len(CSV_COLUMNS)} fields ({','.join(header)}), got "
                                   f"{len(row)}: {','.join(row)!r}")
            pid = _integer(row[column["pid"]], "pid", where, JUNK_PID,
                           f"an integer >= 0 (or {JUNK_PID} for a junk image, skipped)")
            camid = _integer(row[column["camid"]], "camid", where, 0, "an integer >= 0 (0-based camera)")
            if pid == JUNK_PID:
                junk += 1
                continue
            rel_path = row[column["path"]].strip()
            if not rel_path:
                raise DatasetError(f"{where}: the path is empty")
            path = os.path.join(folder, rel_path)
            if not os.path.isfile(path):
                raise DatasetError(f"{where}: image {rel_path!r} not found ({path}; paths are relative to the "
                                   f"CSV file's folder)")
            records.append(ImageRecord(path, pid, camid))
    if junk:
        logger.info("%s: skipped %d junk row(s) (pid %d)", csv_file, junk, JUNK_PID)
    return records


@register_dataset("csv")
class CSVDataset(ReIDDataset):
    """The splits listed in ``train.csv``, ``query.csv`` and ``gallery.csv`` in the folder ``DATASETS.CSV_DIR``."""

    expected_tree = ("  <DATASETS.CSV_DIR>/\n"
                     "      train.csv query.csv gallery.csv   (header path,pid,camid; paths relative to the folder)")

    def __init__(self, root: str, cfg: Optional[CfgNode] = None):
        self.csv_dir = cfg.DATASETS.CSV_DIR if cfg is not None else ""
        if not self.csv_dir:
            # the key that names it: the training datasets, else the test datasets (load_cfg copies NAMES there)
            lists = cfg.DATASETS if cfg is not None else {}
            key = next((f"DATASETS.{k}" for k in ("NAMES", "TEST_NAMES") if self.name in lists.get(k, ())), None)
            named = f"{key} names the dataset {self.name!r}" if key else f"the dataset {self.name!r} is read"
            raise ConfigError(f"{named} but {CSV_DIR_KEY} is empty: set it to the folder holding train.csv, "
                              f"query.csv and gallery.csv")
        super().__init__(root, cfg)

    def find_dataset_dir(self, root: str) -> str:
        # DATASETS.CSV_DIR, not the root: the CSV files name their own images
        if not os.path.isdir(self.csv_dir):
            raise DatasetError(f"{self.name}: {CSV_DIR_KEY} = {self.csv_dir!r} does not exist or is not a folder")
        problem = self.layout_problem(self.csv_dir)
        if problem is not None:
            raise DatasetError(f"{self.name}: {CSV_DIR_KEY} = {self.csv_dir!r}: {problem}.\n"
                               f"Expected layout:\n{self.expected_tree}")
        return self.csv_dir

    def layout_problem(self, path: str) -> Optional[str]:
        missing = [os.path.join(path, csv_file_name(s)) for s in SPLITS
                   if not os.path.isfile(os.path.join(path, csv_file_name(s)))]
        return f"missing file(s) {', '.join(missing)}" if missing else None

    def split_hint(self, split: str) -> str:
        return f": {csv_file_name(split)} has a header and no rows (other than junk, pid {JUNK_PID})"

    def load_splits(self, path: str) -> Tuple[List[ImageRecord], List[ImageRecord], List[ImageRecord]]:
        return tuple(read_csv_split(os.path.join(path, csv_file_name(split))) for split in SPLITS)


def write_csv_split(records: List[ImageRecord], csv_file: str) -> None:
    """Write ``records`` as a CSV file readable by :func:`read_csv_split` (paths relative to its folder)."""
    folder = os.path.dirname(os.path.abspath(csv_file))
    os.makedirs(folder, exist_ok=True)
    with open(csv_file, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for record in records:
            path = os.path.relpath(os.path.abspath(record.path), folder).replace(os.sep, "/")
            writer.writerow((path, record.pid, record.camid))
