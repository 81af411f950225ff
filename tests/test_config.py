"""Config loading: _BASE_ inheritance, unknown keys and bad values named, plain data (list values are tuples,
a name list takes one name), every key read by the code."""
import ast
import os
import re

import pytest
import yaml

from configs import ConfigError, get_cfg_defaults, iter_keys, load_cfg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_defaults_are_the_papers_model():
    cfg = get_cfg_defaults()
    assert (cfg.MODEL.CNN.NAME, cfg.MODEL.TRANSFORMER.NAME) == ("resnet50", "vit_base_patch16_224")
    assert cfg.MODEL.TRANSFORMER.STRIDE_SIZE == (12, 12) and cfg.MODEL.TRANSFORMER.SIE_COE == 3.0
    assert (cfg.MODEL.FUSION.DIM, cfg.MODEL.FUSION.HTM_LAYERS, cfg.MODEL.FUSION.HTM_ORDER) == (768, 2, "seu_mfu")
    assert cfg.MODEL.FUSION.SHARE_SEU and not cfg.MODEL.FUSION.SHARE_MFU
    assert cfg.INPUT.SIZE_TRAIN == (256, 128) and cfg.SOLVER.IMS_PER_BATCH == 128
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


# ----------------------------------------------------------------------------- plain data
def _lists(cfg):
    """Every list-valued key of ``cfg`` -> its value."""
    values = {}
    for key in iter_keys(cfg):
        node = cfg
        for part in key.split("."):
            node = node[part]
        if isinstance(node, (list, tuple)):
            values[key] = node
    return values


def test_every_list_value_is_a_tuple_in_the_defaults_and_after_loading(tmp_path):
    listed = _lists(get_cfg_defaults())
    assert {"DATASETS.NAMES", "DATASETS.TEST_NAMES", "INPUT.SIZE_TRAIN", "INPUT.PIXEL_MEAN"} <= set(listed)
    assert all(isinstance(v, tuple) for v in listed.values()), listed
    path = _write(tmp_path / "lists.yml", "INPUT:\n  SIZE_TRAIN: [128, 64]\n  PIXEL_MEAN: [0.1, 0.2, 0.3]\n")
    cfg = load_cfg(path, ["INPUT.SIZE_TEST", "[128, 64]", "MODEL.TRANSFORMER.STRIDE_SIZE", "(16, 16)"])
    loaded = _lists(cfg)
    assert loaded.keys() == listed.keys() and all(isinstance(v, tuple) for v in loaded.values()), loaded
    assert (cfg.INPUT.SIZE_TRAIN, cfg.INPUT.SIZE_TEST, cfg.MODEL.TRANSFORMER.STRIDE_SIZE) == ((128, 64), (128, 64),
                                                                                             (16, 16))
    assert cfg.INPUT.PIXEL_MEAN == (0.1, 0.2, 0.3)


@pytest.mark.parametrize("yaml_text,opts,names,test_names", [
    ("DATASETS:\n  NAMES: market1501\n", [], ("market1501",), ("market1501",)),                  # YAML string
    ("DATASETS:\n  NAMES: [market1501, msmt17]\n  TEST_NAMES: dukemtmcreid\n", [],               # YAML list
     ("market1501", "msmt17"), ("dukemtmcreid",)),
    ("", ["DATASETS.NAMES", "market1501"], ("market1501",), ("market1501",)),                     # bare name
    ("", ["DATASETS.NAMES", "('market1501','dukemtmcreid')"],                                     # tuple
     ("market1501", "dukemtmcreid"), ("market1501", "dukemtmcreid")),
    ("", ["DATASETS.NAMES", "['msmt17']", "DATASETS.TEST_NAMES", "market1501"], ("msmt17",), ("market1501",)),
    ("DATASETS:\n  NAMES: [market1501, msmt17]\n  TEST_NAMES: [dukemtmcreid]\n",                 # the command
     ["DATASETS.NAMES", "synthetic", "DATASETS.TEST_NAMES", "[]"], ("synthetic",), ("synthetic",)),  # line wins
])
def test_name_lists_are_tuples_whatever_form_they_are_given_in(tmp_path, yaml_text, opts, names, test_names):
    path = _write(tmp_path / "names.yml", yaml_text) if yaml_text else ""
    cfg = load_cfg(path, opts)
    assert cfg.DATASETS.NAMES == names and type(cfg.DATASETS.NAMES) is tuple
    assert cfg.DATASETS.TEST_NAMES == test_names and type(cfg.DATASETS.TEST_NAMES) is tuple  # empty: NAMES
    # the saved config.yaml (cfg.dump()) is YAML lists, and reads back the same
    dumped = _write(tmp_path / "dumped.yml", cfg.dump())
    assert yaml.safe_load(open(dumped))["DATASETS"]["NAMES"] == list(names)
    assert load_cfg(dumped) == cfg


@pytest.mark.parametrize("opts,message", [
    (["DATASETS.NAMES", "[]"], "command line: DATASETS.NAMES is empty"),
    (["DATASETS.NAMES", "['synthetic','synthetic']"],
     r"DATASETS.NAMES = \('synthetic', 'synthetic'\) names 'synthetic' more than once"),
    (["DATASETS.TEST_NAMES", "[1, 2]"],
     r"command line: DATASETS.TEST_NAMES must be a name or a list of names, got \[1, 2\]"),
    (["DATASETS.NAMES", "3"], "DATASETS.NAMES must be a name or a list of names, got 3"),
])
def test_bad_name_lists_name_their_key(opts, message):
    with pytest.raises(ConfigError, match=message):
        load_cfg("", opts)


def test_bad_name_list_in_a_file_names_the_file(tmp_path):
    path = _write(tmp_path / "bad.yml", "DATASETS:\n  TEST_NAMES: {a: 1}\n")
    with pytest.raises(ConfigError, match=r"bad.yml: DATASETS.TEST_NAMES must be a name or a list of names"):
        load_cfg(path)


def test_warmup_longer_than_the_run_is_accepted():
    # the scheduler keeps or clips it by SOLVER.SCHEDULE (tests/test_short_runs.py); the loader keeps the value
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


# Keys that no ``cfg.A.B`` expression names because the code reads them through a name held in a
# variable (``cfg.SOLVER[key]``): key -> where and why. None today; the test fails when a listed key
# does not exist or is read statically after all, so the list cannot go stale.
READ_DYNAMICALLY = {}

_KEY_PART = re.compile(r"[A-Z][A-Z0-9_]*$")
_SKIP_DIRS = ("tests", "__pycache__", "output", "data")


def _python_files():
    skip = {os.path.join(ROOT, "configs", "defaults.py")}
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _SKIP_DIRS)
        for f in sorted(files):
            path = os.path.join(folder, f)
            if f.endswith(".py") and path not in skip:
                yield path


def _chain(node):
    """``(base, parts)`` of ``base.A.B["C"]``: the name it starts from (None for a call or other
    expression) and the attribute names and string subscripts after it, in order."""
    parts = []
    while True:
        if isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) \
                and isinstance(node.slice.value, str):
            parts.append(node.slice.value)
            node = node.value
        else:
            return (node.id if isinstance(node, ast.Name) else None), parts[::-1]


def _key_suffix(parts):
    """The longest tail of ``parts`` made of config-key names (upper case), as a list."""
    tail = []
    for part in reversed(parts):
        if not _KEY_PART.match(part):
            break
        tail.insert(0, part)
    return tail


def config_reads(source):
    """Dotted config paths an expression of ``source`` reads: ``cfg.MODEL.CNN.NAME``,
    ``self.cfg.SOLVER["BASE_LR"]``, and through an alias (``s = cfg.SOLVER`` then ``s.BASE_LR``).
    Found in the syntax tree, so comments, docstrings and other strings never count."""
    tree = ast.parse(source)
    aliases = {}  # name -> the config nodes it was assigned from
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, (ast.Attribute, ast.Subscript)):
            suffix = _key_suffix(_chain(node.value)[1])
            if suffix:
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        aliases.setdefault(target.id, set()).add(".".join(suffix))
    reads = set()
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Attribute, ast.Subscript)) or not isinstance(node.ctx, ast.Load):
            continue  # ``cfg.A.B = value`` writes the key, it does not read it
        base, parts = _chain(node)
        suffix = _key_suffix(parts)
        if not suffix:
            continue
        reads.add(".".join(suffix))
        if len(suffix) == len(parts) and base in aliases:  # alias.KEY: nothing between them
            reads.update(f"{prefix}.{'.'.join(suffix)}" for prefix in aliases[base])
    return reads


def test_the_key_scan_reads_code_not_comments():
    source = '''"""cfg.MODEL.IN_DOCSTRING"""
# cfg.MODEL.IN_COMMENT
text = "cfg.MODEL.IN_STRING"
a = cfg.MODEL.CNN.NAME.lower()
b = self.cfg.SOLVER["BASE_LR"]
s = cfg.TEST
c = s.FEAT_NORM, other.lower
cfg.MODEL.WRITTEN = 1
'''
    reads = config_reads(source)
    assert {"MODEL.CNN.NAME", "SOLVER.BASE_LR", "TEST.FEAT_NORM"} <= reads
    assert not {r for r in reads if "IN_" in r or "WRITTEN" in r}


def _spec_keys():
    """The config keys named by the fields of every ``model.spec.ConfigSpec`` and ``model.spec.BRANCH_KEYS`` (the
    model's construction and retrieval policy read their keys that way, not by attribute)."""
    import model.retrieval  # noqa: F401  -- defines RetrievalPolicy
    from model.spec import BRANCH_KEYS, ConfigSpec

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    return set(BRANCH_KEYS) | {key for spec in subclasses(ConfigSpec) for key in spec.config_keys().values() if key}


def test_every_default_key_is_read_by_the_code():
    """No config key that nothing reads: each key is read by its dotted path somewhere, or is listed in
    READ_DYNAMICALLY with the reason."""
    reads = set()
    for path in _python_files():
        with open(path, encoding="utf-8") as f:
            source = f.read()
        reads |= config_reads(source)
        reads |= set(re.findall(r"config_value\(\w+, \"([A-Z0-9_.]+)\"\)", source))  # model.spec's reader
    keys = list(iter_keys(get_cfg_defaults()))
    spec_keys = _spec_keys()  # read by ConfigSpec.from_config through the fields that name them
    assert sorted(spec_keys - set(keys)) == []                             # and each of those keys exists
    reads |= spec_keys
    assert sorted(set(READ_DYNAMICALLY) - set(keys)) == []                 # listed keys exist
    assert sorted(k for k in READ_DYNAMICALLY if k in reads) == []         # and are not read statically
    assert [k for k in keys if k not in reads and k not in READ_DYNAMICALLY] == []


def test_one_reader_of_dotted_keys():
    """utils.dotted.get_dotted reads a CfgNode and plain nested dicts (a checkpoint's stored config) alike."""
    from utils.dotted import get_dotted

    cfg = load_cfg("", ["MODEL.FUSION.DIM", "48"])
    assert get_dotted(cfg, "MODEL.FUSION.DIM") == 48
    stored = {"MODEL": {"FUSION": {"DIM": 32}}}
    assert get_dotted(stored, "MODEL.FUSION.DIM") == 32
    absent = object()
    assert get_dotted(stored, "MODEL.CNN.NAME", absent) is absent
    assert get_dotted(stored, "MODEL.FUSION.DIM.X", None) is None  # a value, not a mapping, on the way
    with pytest.raises(KeyError, match="MODEL.CNN.NAME"):
        get_dotted(stored, "MODEL.CNN.NAME")
