"""One argument parser for every entry point: ``--config_file`` + ``KEY VALUE`` overrides (utils.cli)."""
import ast
import os
import re
import subprocess
import sys

import pytest

from utils.cli import ConfigArgumentParser

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def entry_points():
    scripts = ["train_net.py", "test_net.py"]
    for folder in ("tools", "benchmarks"):
        scripts += [os.path.join(folder, f) for f in sorted(os.listdir(os.path.join(ROOT, folder))) if f.endswith(".py")]
    return scripts


def test_config_file_and_overrides():
    args = ConfigArgumentParser("x").parse_args(["--config_file", "a.yml", "SOLVER.SEED", "3", "OUTPUT_DIR", "o"])
    assert args.config_file == "a.yml" and args.opts == ["SOLVER.SEED", "3", "OUTPUT_DIR", "o"]
    args = ConfigArgumentParser("x", config_default="q.yml").parse_args([])
    assert args.config_file == "q.yml" and args.opts == []
    args = ConfigArgumentParser("x", config_file=False).parse_args(["A.B", "1"])
    assert not hasattr(args, "config_file") and args.opts == ["A.B", "1"]


def test_options_after_the_overrides_are_options():
    parser = ConfigArgumentParser("x")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--topk", type=int, default=10)
    args = parser.parse_args(["--config_file", "f", "A.B", "1", "--resume", "C.D", "2", "--topk", "3", "E", "4"])
    assert (args.config_file, args.resume, args.topk) == ("f", True, 3)
    assert args.opts == ["A.B", "1", "C.D", "2", "E", "4"]


def test_late_options_keep_required_repeated_and_exclusive_semantics():
    parser = ConfigArgumentParser("x")
    parser.add_argument("--out", required=True)
    parser.add_argument("--images", action="append")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--a", action="store_true")
    group.add_argument("--b", action="store_true")
    args = parser.parse_args(["--out", "o", "--images", "x", "K", "V", "--images", "y"])
    assert args.out == "o" and args.images == ["x", "y"] and args.opts == ["K", "V"]
    with pytest.raises(SystemExit):
        parser.parse_args(["--out", "o", "--a", "K", "V", "--b"])      # still mutually exclusive
    with pytest.raises(SystemExit):
        parser.parse_args(["K", "V", "--images", "y"])                  # --out still required
    with pytest.raises(SystemExit):
        parser.parse_args(["--out", "o", "K", "V", "--no-such-option"])  # unknown, even after the overrides


def test_entry_points_parse_through_the_shared_parser():
    import test_net
    import train_net
    from tools import extract_features, reproduce

    args = train_net.parse_args(["--config_file", "f.yml", "SOLVER.MAX_EPOCHS", "1", "--resume"])
    assert args.resume and args.opts == ["SOLVER.MAX_EPOCHS", "1"]
    args = test_net.parse_args(["TEST.WEIGHT", "w.pth", "--save-features", "f.npz"])
    assert args.save_features == "f.npz" and args.opts == ["TEST.WEIGHT", "w.pth"] and args.config_file == ""
    args = extract_features.parse_args(["--images", "d", "--out", "o.npz", "TEST.WEIGHT", "w", "--topk", "3"])
    assert args.topk == 3 and args.opts == ["TEST.WEIGHT", "w"]
    args = reproduce.parse_args(["--table", "2", "SOLVER.MAX_EPOCHS", "1", "--dry-run"])
    assert args.dry_run and args.opts == ["SOLVER.MAX_EPOCHS", "1"]


def test_no_entry_point_declares_its_own_config_arguments():
    """``--config_file`` and the REMAINDER overrides are declared once, in utils/cli.py."""
    own = re.compile(r"add_argument\(\s*[\"']--config_file|nargs\s*=\s*argparse\.REMAINDER")
    scripts = entry_points()
    assert {"train_net.py", "test_net.py", os.path.join("tools", "model_stats.py"),
            os.path.join("benchmarks", "bench_quickstart.py")} <= set(scripts)
    for script in scripts:
        with open(os.path.join(ROOT, script), encoding="utf-8") as f:
            source = f.read()
        usage = ast.get_docstring(ast.parse(source), clean=False) or ""
        source = source.replace(usage, "", 1)  # the usage text may show other scripts' command lines
        assert not own.search(source), script
        if "config_file" in source or "opts" in source:
            assert "ConfigArgumentParser" in source, script


def test_the_parser_module_does_not_import_torch():
    code = "import sys, utils.cli; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_build_trainer_lives_in_processor():
    import train_net
    from processor import build_trainer
    from processor.trainer import build_trainer as defined

    assert build_trainer is defined and train_net.build_trainer is defined
    assert defined.__module__ == "processor.trainer"
