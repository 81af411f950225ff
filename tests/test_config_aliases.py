"""Renamed config keys: the old names are still read (with a warning naming both), and never disagree silently."""
import logging
import os

import pytest
import yaml

from configs import ConfigError, get_cfg_defaults, iter_keys, load_cfg
from configs import config as config_module
from configs.config import RENAMED_KEYS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOGGER = config_module.logger.name


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


def _warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == LOGGER]


def test_the_renames():
    assert RENAMED_KEYS == {"INPUT.PROB": "INPUT.FLIP_PROB", "MODEL.POOLING": "MODEL.FUSION.POOLING"}
    keys = set(iter_keys(get_cfg_defaults()))
    assert set(RENAMED_KEYS.values()) <= keys
    assert not set(RENAMED_KEYS) & keys  # the old names are aliases only


def test_old_keys_in_a_yaml_file_are_read_with_a_warning_naming_both(tmp_path, caplog):
    path = _write(tmp_path / "old.yml", "INPUT:\n  PROB: 0.25\nMODEL:\n  POOLING: avg\n")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        cfg = load_cfg(path)
    assert cfg.INPUT.FLIP_PROB == 0.25 and cfg.MODEL.FUSION.POOLING == "avg"
    messages = _warnings(caplog)
    for old, new in RENAMED_KEYS.items():
        assert any(old in m and new in m and "deprecated" in m and "old.yml" in m for m in messages), messages


def test_old_keys_on_the_command_line_are_read_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        cfg = load_cfg("", ["INPUT.PROB", "0.0", "MODEL.POOLING", "avg"])
    assert cfg.INPUT.FLIP_PROB == 0.0 and cfg.MODEL.FUSION.POOLING == "avg"
    messages = _warnings(caplog)
    assert any("INPUT.PROB" in m and "INPUT.FLIP_PROB" in m and "command line" in m for m in messages), messages
    assert any("MODEL.POOLING" in m and "MODEL.FUSION.POOLING" in m for m in messages), messages


def test_new_keys_give_no_warning(tmp_path, caplog):
    path = _write(tmp_path / "new.yml", "INPUT:\n  FLIP_PROB: 0.3\nMODEL:\n  FUSION:\n    POOLING: avg\n")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        cfg = load_cfg(path, ["INPUT.FLIP_PROB", "0.4"])
    assert cfg.INPUT.FLIP_PROB == 0.4 and cfg.MODEL.FUSION.POOLING == "avg"
    assert _warnings(caplog) == []


def test_old_and_new_key_with_different_values_in_one_file_is_an_error(tmp_path):
    path = _write(tmp_path / "both.yml", "MODEL:\n  POOLING: avg\n  FUSION:\n    POOLING: gem\n")
    with pytest.raises(ConfigError) as e:
        load_cfg(path)
    assert all(s in str(e.value) for s in ("MODEL.POOLING", "MODEL.FUSION.POOLING", "both.yml")), str(e.value)


def test_old_and_new_key_with_different_values_on_the_command_line_is_an_error():
    for opts in (["INPUT.PROB", "0.1", "INPUT.FLIP_PROB", "0.2"], ["INPUT.FLIP_PROB", "0.2", "INPUT.PROB", "0.1"]):
        with pytest.raises(ConfigError) as e:
            load_cfg("", opts)
        assert "INPUT.PROB" in str(e.value) and "INPUT.FLIP_PROB" in str(e.value)


def test_old_and_new_key_with_the_same_value_are_accepted(tmp_path):
    path = _write(tmp_path / "same.yml", "INPUT:\n  PROB: 0.2\n  FLIP_PROB: 0.2\n")
    assert load_cfg(path).INPUT.FLIP_PROB == 0.2
    assert load_cfg("", ["INPUT.PROB", "0.2", "INPUT.FLIP_PROB", "0.20"]).INPUT.FLIP_PROB == 0.2


def test_a_file_overrides_its_base_whichever_name_either_uses(tmp_path):
    _write(tmp_path / "base_new.yml", "MODEL:\n  FUSION:\n    POOLING: gem\n")
    _write(tmp_path / "base_old.yml", "MODEL:\n  POOLING: gem\n")
    old_child = _write(tmp_path / "old_child.yml", "_BASE_: base_new.yml\nMODEL:\n  POOLING: avg\n")
    new_child = _write(tmp_path / "new_child.yml", "_BASE_: base_old.yml\nMODEL:\n  FUSION:\n    POOLING: avg\n")
    assert load_cfg(old_child).MODEL.FUSION.POOLING == "avg"
    assert load_cfg(new_child).MODEL.FUSION.POOLING == "avg"


def test_the_command_line_overrides_the_file_whichever_name_it_uses(tmp_path):
    path = _write(tmp_path / "f.yml", "INPUT:\n  FLIP_PROB: 0.3\n")
    assert load_cfg(path, ["INPUT.PROB", "0.7"]).INPUT.FLIP_PROB == 0.7


def test_old_keys_still_fail_on_bad_values(tmp_path):
    with pytest.raises(ConfigError, match="MODEL.FUSION.POOLING"):
        load_cfg("", ["MODEL.POOLING", "max"])  # 'max' is a CNN pooling, not one of the fusion's


def test_the_new_keys_reach_the_code():
    from datasets.transforms import build_transforms
    from model.pooling import AveragePooling
    from tests.helpers import tiny_cfg

    flips = [t for t in build_transforms(load_cfg("", ["INPUT.FLIP_PROB", "0.125"])).transforms
             if type(t).__name__ == "RandomHorizontalFlip"]
    assert [t.p for t in flips] == [0.125]
    from model import build_model

    model = build_model(tiny_cfg("MODEL.FUSION.POOLING", "avg"), 4, 2)
    assert all(isinstance(p, AveragePooling) for p in model.pool_lru.values()) and len(model.pool_lru) == 2
    assert type(model.pool_cnn).__name__ == "GeneralizedMeanPooling"  # MODEL.CNN.POOLING is another key


def _yaml_files():
    for folder, _, files in os.walk(os.path.join(ROOT, "configs")):
        for name in files:
            if name.endswith((".yml", ".yaml")):
                yield os.path.join(folder, name)


def _flat_keys(mapping, prefix=""):
    for key, value in mapping.items():
        if isinstance(value, dict):
            yield from _flat_keys(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def test_shipped_files_and_docs_use_the_new_names():
    files = list(_yaml_files())
    assert len(files) > 40
    for path in files:
        with open(path, encoding="utf-8") as f:
            keys = set(_flat_keys(yaml.safe_load(f) or {}))
        assert not keys & set(RENAMED_KEYS), path
    with open(os.path.join(ROOT, "docs", "CONFIGURATION.md"), encoding="utf-8") as f:
        table = [line for line in f if line.startswith("| `")]
    cells = " ".join(line.split(" | ")[0] for line in table)
    assert "`INPUT.FLIP_PROB`" in cells and "`MODEL.FUSION.POOLING`" in cells
    assert "`INPUT.PROB`" not in cells and "`MODEL.POOLING`" not in cells
