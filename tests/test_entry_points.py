"""Every entry point ends a user error with one line ``<script>: error: <culprit>`` and a non-zero exit.

The scripts are discovered by globbing ``tools/*.py`` and ``benchmarks/*.py`` (plus ``train_net.py`` and
``test_net.py``), so a new script is tested without being listed here. Each runs as a subprocess on a bad
input and stops before any real work (a few seconds each).
"""
import glob
import os

import pytest
from torch.utils.data import DataLoader, Dataset

from datasets import DatasetError
from tests.test_cli import REPO, TINY, run_script
from utils.errors import (ConfigError, FusionReIDError, UsageError, cli_entry, exit_on_user_error, user_exit,
                          user_message)

SCRIPTS = ["train_net.py", "test_net.py"] + sorted(
    os.path.relpath(p, REPO) for pattern in ("tools/*.py", "benchmarks/*.py")
    for p in glob.glob(os.path.join(REPO, pattern)) if not os.path.basename(p).startswith("_"))

# Options a script requires before it reads its config (argparse checks them first).
REQUIRED_ARGS = {
    "tools/visualize.py": lambda tmp: ["--images", str(tmp), "--out", str(tmp / "vis")],
    "tools/extract_features.py": lambda tmp: ["--images", str(tmp), "--out", str(tmp / "f.npz")],
    "tools/reproduce.py": lambda tmp: ["--table", "2", "--dry-run"],
    "tools/mot_to_reid.py": lambda tmp: [str(tmp), "--out", str(tmp / "reid")],
}
# Scripts without KEY VALUE config overrides: argparse rejects the key itself (exit code 2).
NO_CONFIG = {"benchmarks/bench_eval.py", "tools/mot_to_reid.py"}


def assert_one_line_error(rc, stderr, script, *needles, code=1):
    """Exit code ``code``, no traceback, and a last stderr line ``<script>: error: ...`` naming ``needles``."""
    assert rc == code, (rc, stderr)
    assert "Traceback" not in stderr, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"{os.path.basename(script)}: error: "), last
    for needle in needles:
        assert needle in last, (needle, last)
    return last


def test_every_tool_and_benchmark_is_discovered():
    names = set(SCRIPTS)
    assert {"tools/model_stats.py", "tools/make_synthetic.py", "benchmarks/bench_train.py"} <= names
    assert set(REQUIRED_ARGS) | NO_CONFIG <= names  # no stale entries


@pytest.mark.parametrize("script", SCRIPTS)
def test_bad_config_key(tmp_path, script):
    args = REQUIRED_ARGS.get(script, lambda tmp: [])(tmp_path)
    rc, err = run_script(script, *args, "OUTPUT_DIR", str(tmp_path / "out"), "MODEL.NO_SUCH_KEY", "1")
    last = assert_one_line_error(rc, err, script, "MODEL.NO_SUCH_KEY", code=2 if script in NO_CONFIG else 1)
    if script in NO_CONFIG:
        assert "unrecognized arguments" in last


@pytest.mark.parametrize("script", ["tools/model_stats.py", "benchmarks/bench_train.py", "train_net.py"])
def test_model_that_cannot_be_built(tmp_path, script):
    """HTM layers (the default) with only a CNN branch: a ConfigError from the model naming the keys."""
    args = (["--config_file", TINY, "DATASETS.ROOT_DIR", str(tmp_path / "data"), "OUTPUT_DIR", str(tmp_path / "out")]
            if script == "train_net.py" else [])
    rc, err = run_script(script, *args, "MODEL.TRANSFORMER.NAME", "")
    assert_one_line_error(rc, err, script, "MODEL.FUSION.HTM_LAYERS", "MODEL.TRANSFORMER.NAME")


def test_corrupt_training_image_in_a_loader_worker(tmp_path):
    """The DatasetError raised in a DataLoader worker reaches the user as its own message."""
    from configs import load_cfg
    from datasets.synthetic import SYNTHETIC_FOLDER
    from datasets.synthetic_generator import SyntheticParams, ensure_generated

    data = tmp_path / "data"
    ensure_generated(str(data / SYNTHETIC_FOLDER), SyntheticParams.from_cfg(load_cfg(TINY)))
    train = data / SYNTHETIC_FOLDER / "bounding_box_train"
    for image in train.iterdir():  # every one: the first batch fails, whichever images it holds
        image.write_bytes(b"not an image")
    rc, err = run_script("train_net.py", "--config_file", TINY, "DATASETS.ROOT_DIR", str(data),
                         "OUTPUT_DIR", str(tmp_path / "out"), "DATALOADER.NUM_WORKERS", "1")
    last = assert_one_line_error(rc, err, "train_net.py", "cannot read image", str(train))
    assert "Caught" not in err and "Original Traceback" not in err and "worker" not in last, err
    # the worker's traceback is kept in the log, at debug level
    assert "Original Traceback" in (tmp_path / "out" / "train.log").read_text()


# ----------------------------------------------------------------------------- utils.errors itself
class _Failing(Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, index):
        try:
            raise OSError("decoder says no")
        except OSError as cause:  # a chained error: the worker's traceback holds two exception lines
            raise DatasetError(f"image {index} is unusable:\n  line two of the message") from cause


def test_worker_error_message_is_recovered():
    with pytest.raises(DatasetError) as info:
        next(iter(DataLoader(_Failing(), num_workers=1)))
    assert str(info.value).startswith("Caught DatasetError in DataLoader worker process 0")  # what PyTorch does
    assert user_message(info.value) == "image 0 is unusable: line two of the message"
    stop = user_exit(info.value, "x.py")
    assert stop.code == "x.py: error: image 0 is unusable: line two of the message"


def test_one_line_message_of_a_plain_error():
    assert user_message(ConfigError("bad\n  key")) == "bad key"
    assert user_message(FusionReIDError()) == "FusionReIDError"
    assert user_message(FileNotFoundError(2, "No such file", "/x/y")) == "[Errno 2] No such file: '/x/y'"


def test_user_errors_share_one_base_and_keep_their_builtin_base():
    from model.backbones.weights import WeightsError
    from processor.trainer import NonFiniteLossError
    from utils.checkpoint import CheckpointError

    for error, builtin in ((ConfigError, ValueError), (DatasetError, ValueError), (WeightsError, ValueError),
                           (UsageError, ValueError), (CheckpointError, RuntimeError),
                           (NonFiniteLossError, RuntimeError)):
        assert issubclass(error, FusionReIDError) and issubclass(error, builtin), error
    import configs
    assert configs.ConfigError is ConfigError


def test_cli_entry_stops_user_errors_and_lets_bugs_through():
    @cli_entry
    def main(error):
        raise error

    with pytest.raises(SystemExit) as info:
        main(DatasetError("folder /data/x is empty"))
    assert info.value.code == "test_entry_points.py: error: folder /data/x is empty"
    with pytest.raises(SystemExit, match="no such file"):
        main(FileNotFoundError("no such file"))
    with pytest.raises(KeyError):  # a bug keeps its traceback
        main(KeyError("oops"))
    with pytest.raises(ValueError, match="plain"):  # a ValueError that is not a user error is a bug too
        with exit_on_user_error("s.py"):
            raise ValueError("plain")


def test_model_construction_errors_are_config_errors():
    from model import FusionReID
    from tests.helpers import tiny_cfg

    with pytest.raises(ConfigError, match="MODEL.FUSION.HTM_LAYERS"):
        FusionReID.from_config(tiny_cfg("MODEL.TRANSFORMER.NAME", "''", "MODEL.FUSION.HTM_LAYERS", "1"), 4, 2)
    with pytest.raises(ConfigError, match="MODEL.CNN.LAST_STRIDE"):
        FusionReID.from_config(tiny_cfg("MODEL.TRANSFORMER.NAME", "''", "MODEL.FUSION.HTM_LAYERS", "0",
                                        "MODEL.CNN.LAST_STRIDE", "3"), 4, 2)
