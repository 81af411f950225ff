"""A required option may come after the ``KEY VALUE`` overrides, as utils/cli.py promises: through the real
tools/extract_features.py main, and through the parser itself (required options and required groups)."""
import numpy as np
import pytest
import torch
from PIL import Image

from configs import load_cfg
from model import build_model
from tests.helpers import TINY_CONFIG
from tools import extract_features
from utils.cli import ConfigArgumentParser


@pytest.fixture(scope="module")
def weight_and_images(tmp_path_factory):
    """A tiny model of configs/Synthetic/tiny.yml saved as train_net saves it, and a folder of 3 images."""
    root = tmp_path_factory.mktemp("late")
    torch.manual_seed(0)
    model = build_model(load_cfg(TINY_CONFIG, ["MODEL.PRETRAIN_CHOICE", "none"]), 4, 3)
    torch.save({"model": model.state_dict(), "epoch": 1}, root / "w.pth")
    (root / "imgs").mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (48, 24, 3), dtype=np.uint8)).save(root / "imgs" / f"{i}.jpg")
    return str(root / "w.pth"), str(root / "imgs")


@pytest.mark.parametrize("late", [["--out", "{out}", "--images", "{imgs}"], ["--images", "{imgs}", "--out", "{out}"]])
def test_extract_features_takes_the_required_out_after_the_overrides(weight_and_images, tmp_path, late):
    weight, imgs = weight_and_images
    out = str(tmp_path / "f.npz")
    tail = [t.format(out=out, imgs=imgs) for t in late]
    if tail[0] == "--images":  # --images before the overrides, --out (required) only after them
        argv = ["--config_file", TINY_CONFIG, *tail[:2], "TEST.WEIGHT", weight, "MODEL.PRETRAIN_CHOICE", "none",
                *tail[2:]]
    else:                      # the command of the report: --config_file C TEST.WEIGHT W --out f.npz
        argv = ["--config_file", TINY_CONFIG, "TEST.WEIGHT", weight, *tail[:2], "MODEL.PRETRAIN_CHOICE", "none",
                *tail[2:]]
    extract_features.main(argv)
    with np.load(out) as arrays:
        assert arrays["features"].shape == (3, 896) and len(arrays["paths"]) == 3


def test_a_required_option_that_is_really_missing_is_still_reported(weight_and_images, capsys):
    weight, imgs = weight_and_images
    with pytest.raises(SystemExit) as e:
        extract_features.main(["--config_file", TINY_CONFIG, "TEST.WEIGHT", weight, "--images", imgs])
    assert e.value.code == 2 and "the following arguments are required: --out" in capsys.readouterr().err


def test_the_parser_takes_required_options_and_groups_after_the_overrides():
    parser = ConfigArgumentParser("x")
    parser.add_argument("--out", required=True)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--a", action="store_true")
    group.add_argument("--b", action="store_true")
    args = parser.parse_args(["--config_file", "c.yml", "K", "V", "--out", "o", "L", "W", "--b"])
    assert (args.config_file, args.out, args.a, args.b, args.opts) == ("c.yml", "o", False, True, ["K", "V", "L", "W"])
    with pytest.raises(SystemExit):
        parser.parse_args(["K", "V", "--out", "o"])  # the group is still required
    with pytest.raises(SystemExit):
        parser.parse_args(["K", "V", "--a", "--b", "--out", "o"])  # and still exclusive
    assert parser._option_string_actions["--out"].required  # the parser is left as it was
