"""Config loading: _BASE_ inheritance, unknown keys and bad values named, every key read by the code."""
import os
import re

import pytest

from configs import ConfigError, get_cfg_defaults, iter_keys, load_cfg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_defaults_are_the_papers_model():
    cfg = get_cfg_defaults()
    assert (cfg.MODEL.CNN.NAME, cfg.MODEL.TRANSFORMER.NAME) == ("resnet50", "vit_base_patch16_224")
    assert cfg.MODEL.TRANSFORMER.STRIDE_SIZE == [12, 12] and cfg.MODEL.TRANSFORMER.SIE_COE == 3.0
    assert (cfg.MODEL.FUSION.DIM, cfg.MODEL.FUSION.HTM_LAYERS, cfg.MODEL.FUSION.HTM_ORDER) == (768, 2, "seu_mfu")
    assert cfg.MODEL.FUSION.SHARE_SEU and not cfg.MODEL.FUSION.SHARE_MFU
    assert cfg.INPUT.SIZE_TRAIN == [256, 128] and cfg.SOLVER.IMS_PER_BATCH == 128
    assert cfg.DATALOADER.NUM_INSTANCE == 16 and cfg.SOLVER.MAX_EPOCHS == 180


def test_base_inheritance_is_relative_to_the_file_and_child_wins(tmp_path):
    (tmp_path / "sub").mkdir()
    _write(tmp_path / "base.yml", "MODEL:\n  FUSION:\n    DIM: 384\n    NUM_HEADS: 6\nSOLVER:\n  BASE_LR: 0.01\n")
    _write(tmp_path / "sub" / "mid.yml", "_BASE_: ../base.yml\nSOLVER:\n  BASE_LR: 0.02\n  MAX_EPOCHS: 5\n  WARMUP_EPOCHS: 1\n")
    child = _write(tmp_path / "sub" / "child.yml", "_BASE_: mid.yml\nSOLVER:\n  MAX_EPOCHS: 7\n")
    cfg = load_cfg(child, ["SOLVER.SEED", "3"])
    assert cfg.MODEL.FUSION.DIM == 384 and cfg.SOLVER.BASE_LR == 0.02
    assert cfg.SOLVER.MAX_EPOCHS == 7 and cfg.SOLVER.SEED == 3
    assert cfg.MODEL.CNN.NAME == "resnet50"  # untouched defaults stay


def test_base_errors_name_the_file(tmp_path):
    bad = _write(tmp_path / "a.yml", "_BASE_: missing.yml\n")
    with pytest.raises(ConfigError, match="missing.yml"):
        load_cfg(bad)
    cyc = _write(tmp_path / "b.yml", "_BASE_: c.yml\n")
    _write(tmp_path / "c.yml", "_BASE_: b.yml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_cfg(cyc)


@pytest.mark.parametrize("text,expected", [
    ("MODEL:\n  CNN:\n    NAM: resnet50\n", "MODEL.CNN.NAM"),
    ("MODEL:\n  FUSION:\n    DIM: big\n", "MODEL.FUSION.DIM"),
    ("MODEL:\n  FUSION:\n    HTM_ORDER: 2\n", "MODEL.FUSION.HTM_ORDER"),
    ("MODEL:\n  CNN:\n    NAME: resnet51\n", "resnet51"),
    ("MODEL:\n  FUSION:\n    DIM: 100\n", "NUM_HEADS"),
    ("INPUT:\n  SIZE_TRAIN: [256]\n", "INPUT.SIZE_TRAIN"),
    ("- a list\n", "mapping"),
    ("SOLVER:\n  WARMUP_EPOCHS: -1\n", "SOLVER.WARMUP_EPOCHS"),
    ("SOLVER:\n  MAX_EPOCHS: 0\n", "SOLVER.MAX_EPOCHS"),
    ("SOLVER:\n  EVAL_PERIOD: 0\n", "SOLVER.EVAL_PERIOD"),
    ("SOLVER:\n  CHECKPOINT_PERIOD: 0\n", "SOLVER.CHECKPOINT_PERIOD"),
])
def test_bad_yaml_values_name_the_key_and_file(tmp_path, text, expected):
    path = _write(tmp_path / "bad.yml", text)
    with pytest.raises(ConfigError) as e:
        load_cfg(path)
    assert expected in str(e.value) and "bad.yml" in str(e.value)


def test_warmup_longer_than_the_run_is_accepted():
    # the scheduler clips it (tests/test_short_runs.py); the loader keeps the value asked for
    cfg = load_cfg("", ["SOLVER.MAX_EPOCHS", "1", "SOLVER.WARMUP_EPOCHS", "10"])
    assert (cfg.SOLVER.MAX_EPOCHS, cfg.SOLVER.WARMUP_EPOCHS) == (1, 10)


def test_bad_command_line_overrides():
    with pytest.raises(ConfigError, match="MODEL.NOPE"):
        load_cfg("", ["MODEL.NOPE", "1"])
    with pytest.raises(ConfigError, match="TEST.NECK_FEAT"):
        load_cfg("", ["TEST.NECK_FEAT", "middle"])
    with pytest.raises(ConfigError, match="pairs"):
        load_cfg("", ["MODEL.FUSION.DIM"])
    with pytest.raises(ConfigError, match="at least one branch"):
        load_cfg("", ["MODEL.CNN.NAME", "''", "MODEL.TRANSFORMER.NAME", "''"])


def test_config_is_frozen_and_values_are_typed():
    cfg = load_cfg("", ["MODEL.FUSION.LRU", "False", "TEST.FEAT_NORM", "False"])
    assert cfg.MODEL.FUSION.LRU is False and cfg.TEST.FEAT_NORM is False
    with pytest.raises(AttributeError):
        cfg.MODEL.FUSION.DIM = 3


def _python_sources():
    skip = {os.path.join(ROOT, "configs", "defaults.py")}
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in ("tests", "__pycache__", "output", "data")]
        for f in files:
            path = os.path.join(folder, f)
            if f.endswith(".py") and path not in skip:
                with open(path, encoding="utf-8") as fh:
                    yield fh.read()


def _is_read(key, code):
    """``cfg.A.B.C`` appears, or a node is aliased (``s = cfg.A.B``) and read through it (``s.C``)."""
    if re.search(r"cfg\." + re.escape(key) + r"\b", code):
        return True
    parent, leaf = key.rsplit(".", 1) if "." in key else ("", key)
    for alias in re.findall(r"(\w+) = cfg\." + re.escape(parent) + r"\s*$", code, flags=re.M):
        if re.search(r"\b" + alias + r"\." + leaf + r"\b", code):
            return True
    return False


def test_every_default_key_is_read_by_the_code():
    """No config key that nothing reads: each key is accessed by its dotted path somewhere."""
    code = "\n".join(_python_sources())
    unread = [k for k in iter_keys(get_cfg_defaults()) if not _is_read(k, code)]
    assert unread == []
