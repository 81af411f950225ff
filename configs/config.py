"""Loading a configuration: defaults <- YAML file (with ``_BASE_`` inheritance) <- command-line overrides.

Every failure names the file and key at fault: an unknown key, a value of the wrong type, a value
outside a key's allowed names, or a missing/cyclic ``_BASE_`` file.

Renamed keys (:data:`RENAMED_KEYS`) are still accepted under their old names, in a YAML file or on the
command line: the value goes to the new key and a deprecation warning naming both is logged. Giving the
old and the new name with different values in one file (or both on the command line) is an error.
"""
import logging
import os
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import yaml
from yacs.config import CfgNode as CN

from model.fusion import HTM_ORDERS
from utils.errors import ConfigError  # defined with the other user errors; exported as configs.ConfigError

from .defaults import get_cfg_defaults

logger = logging.getLogger(__name__)

BASE_KEY = "_BASE_"

# Old key -> new key. The old names are deprecated aliases: accepted with a warning.
RENAMED_KEYS = {
    "INPUT.PROB": "INPUT.FLIP_PROB",              # it is the probability of the horizontal flip
    "MODEL.POOLING": "MODEL.FUSION.POOLING",      # pooling of the LRU maps; MODEL.CNN.POOLING is the CNN's
}


def _registered_backbones(kind: str) -> Callable[[], Tuple[str, ...]]:
    """'' (the branch off) and the backbone names of ``kind`` registered in ``model.backbones``."""
    def names() -> Tuple[str, ...]:
        from model.backbones import backbone_names
        return ("",) + backbone_names(kind)
    return names


def _registered_datasets() -> Tuple[str, ...]:
    """The dataset names registered in ``datasets`` (imported here, not at the top: datasets import configs)."""
    from datasets import dataset_names
    return dataset_names()


# Keys whose value must be one of a fixed set of names. A callable gives the names of a registry, read
# when a config is checked: backbones and datasets are named where they are defined, nowhere else.
CHOICES = {
    "MODEL.DEVICE": ("auto", "cuda", "cpu"),
    "MODEL.PRETRAIN_CHOICE": ("imagenet", "self", "none"),
    "MODEL.CNN.NAME": _registered_backbones("cnn"),
    "MODEL.CNN.POOLING": ("gem", "avg", "max"),
    "MODEL.TRANSFORMER.NAME": _registered_backbones("transformer"),
    "MODEL.TRANSFORMER.T2T_ATTN_SCALE": ("head_dim", "embed_dim"),
    "MODEL.TRANSFORMER.T2T_POS_EMBED": ("checkpoint", "sinusoid"),
    "MODEL.FUSION.HTM_ORDER": HTM_ORDERS,
    "MODEL.FUSION.POOLING": ("gem", "avg"),
    "DATASETS.NAMES": _registered_datasets,
    "DATASETS.TEST_NAMES": _registered_datasets,
    "MODEL.FUSION.INIT": ("pytorch", "trunc_normal"),
    "MODEL.TRIPLET_BATCH": ("global", "per_process"),
    "DATALOADER.SAMPLER": ("identity", "balanced_identity", "random"),
    "SOLVER.SCHEDULE": ("release", "paper_text"),
    "SOLVER.WEIGHT_DECAY_ON": ("all", "weights"),
    "SOLVER.OPTIMIZER_NAME": ("SGD", "AdamW"),
    "SOLVER.AMP": ("auto", "fp16", "bf16", "off"),
    "TEST.FEAT": ("all", "cnn", "transformer", "lru_cnn", "lru_transformer", "htm_cnn", "htm_transformer"),
    "TEST.NECK_FEAT": ("before", "after"),
    "TEST.METRIC": ("euclidean", "cosine"),
}


# Keys naming datasets: one name or a list of names (YAML list, or "['a','b']" on the command line), each
# checked against CHOICES. yacs would refuse a list where the default is a string (and the reverse), so
# their values are checked and set here (_take_dataset_lists), never by yacs's merge. A key whose default
# is a string keeps a single name as a string (existing readers of e.g. DATASETS.NAMES see no change);
# read them as lists with train_dataset_names / evaluated_dataset_names.
DATASET_LIST_KEYS = ("DATASETS.NAMES", "DATASETS.TEST_NAMES")
# Keys that must name at least one dataset (TEST_NAMES may be empty: the training datasets).
_NONEMPTY_LIST_KEYS = ("DATASETS.NAMES",)

_MISSING = object()


def _pop_dotted(mapping: Dict[str, Any], key: str) -> Any:
    """Remove and return ``mapping[A][B][C]`` for ``key`` 'A.B.C'; ``_MISSING`` when absent."""
    *parents, leaf = key.split(".")
    node = mapping
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
    return node.pop(leaf, _MISSING) if isinstance(node, dict) else _MISSING


def _get_dotted(mapping: Dict[str, Any], key: str) -> Any:
    *parents, leaf = key.split(".")
    node = mapping
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
    return node.get(leaf, _MISSING) if isinstance(node, dict) else _MISSING


def _set_dotted(mapping: Dict[str, Any], key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    node = mapping
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):  # e.g. 'INPUT: 3'; yacs names the bad section when merging
            return
    node[leaf] = value


def _warn_renamed(source: str, old: str, new: str) -> None:
    logger.warning("%s: config key %s is deprecated, read as %s (rename it)", source, old, new)


def rename_keys_in_mapping(mapping: Dict[str, Any], source: str) -> Dict[str, Any]:
    """``mapping`` (one YAML file's keys, nested) with every old key of :data:`RENAMED_KEYS` moved to
    its new name, in place. Old and new name with different values: a ``ConfigError`` naming both."""
    for old, new in RENAMED_KEYS.items():
        value = _pop_dotted(mapping, old)
        if value is _MISSING:
            continue
        _warn_renamed(source, old, new)
        current = _get_dotted(mapping, new)
        if current is not _MISSING and current != value:
            raise ConfigError(f"{source}: {old} (deprecated) = {value!r} and {new} = {current!r} are the same "
                              f"setting with different values; keep only {new}")
        _set_dotted(mapping, new, value)
    return mapping


def rename_override_keys(opts: Sequence[str], source: str = "command line") -> List[str]:
    """KEY VALUE overrides with every old key of :data:`RENAMED_KEYS` replaced by its new name.

    The old and the new name both given with different values is a ``ConfigError`` naming both; with
    the same value, both are accepted.
    """
    out: List[str] = []
    given: Dict[str, Any] = {}  # new key -> (name as given, decoded value)
    for key, value in zip(opts[0::2], opts[1::2]):
        new = RENAMED_KEYS.get(key)
        if new is not None:
            _warn_renamed(source, key, new)
        target = new or key
        if target in RENAMED_KEYS.values():
            decoded = CN._decode_cfg_value(value)
            if target in given and given[target][0] != key and given[target][1] != decoded:
                first, first_value = given[target]
                raise ConfigError(f"{source}: {first} {first_value!r} and {key} {decoded!r} are the same setting "
                                  f"({target}) with different values; give it once, as {target}")
            given[target] = (key, decoded)
        out += [target, value]
    return out


def _read_yaml(path, chain=()):
    """The mapping of a YAML file with its ``_BASE_`` chain merged underneath (paths relative to the file).

    Each file's renamed keys are moved to their new names before the merge, so a file overrides its base
    whichever name either uses."""
    path = os.path.abspath(path)
    if path in chain:
        raise ConfigError(f"{BASE_KEY} cycle: {' -> '.join(chain + (path,))}")
    if not os.path.isfile(path):
        where = f" (named by {BASE_KEY} in {chain[-1]})" if chain else ""
        raise ConfigError(f"config file not found: {path}{where}")
    with open(path, "r", encoding="utf-8") as f:
        try:
            data = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys at the top level, got {type(data).__name__}")
    base = data.pop(BASE_KEY, None)
    rename_keys_in_mapping(data, path)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{path}: {BASE_KEY} must be a relative path string, got {base!r}")
    merged = _read_yaml(os.path.join(os.path.dirname(path), base), chain + (path,))
    _deep_update(merged, data)
    return merged


def _deep_update(dst, src):
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _deep_update(dst[k], v)
        else:
            dst[k] = v


def names_of(value: Union[str, Sequence[str]]) -> List[str]:
    """The value of a key of :data:`DATASET_LIST_KEYS` (a name or a list of names) as a list of names."""
    return [value] if isinstance(value, str) else list(value)


def train_dataset_names(cfg: CN) -> List[str]:
    """``DATASETS.NAMES`` as a list: the datasets trained on (their union), in order."""
    return names_of(cfg.DATASETS.NAMES)


def evaluated_dataset_names(cfg: CN) -> List[str]:
    """``DATASETS.TEST_NAMES`` as a list, or the training datasets when it is empty.

    Each is evaluated separately; the first one's metrics are the top level of results.json and choose
    the best checkpoint (``model_best.pth``)."""
    return names_of(cfg.DATASETS.TEST_NAMES) or train_dataset_names(cfg)


def _dataset_list_value(key: str, value: Any, source: str) -> Union[str, List[str]]:
    """``value`` of the dataset-list ``key`` as stored in the config: a list of names, or a single name as a
    string where the key's default is a string. A ``ConfigError`` naming the key for any other type, an
    empty list where a dataset is needed, or a name given twice."""
    listed = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
    if not (isinstance(value, str) or listed):
        raise ConfigError(f"{source}: {key} must be a dataset name or a list of names, got {value!r}")
    names = names_of(value)
    if not names and key in _NONEMPTY_LIST_KEYS:
        raise ConfigError(f"{source}: {key} is empty; name at least one dataset")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"{source}: {key} = {names!r} names {', '.join(map(repr, repeated))} more than once")
    single = isinstance(_get_dotted(get_cfg_defaults(), key), str) and len(names) == 1
    return names[0] if single else names


def _take_dataset_lists(cfg: CN, mapping: Dict[str, Any], source: str) -> None:
    """Set the keys of :data:`DATASET_LIST_KEYS` found in ``mapping`` (nested) on ``cfg`` and remove them
    from ``mapping``, so that yacs's merge, which wants the default's type, never sees them."""
    for key in DATASET_LIST_KEYS:
        value = _pop_dotted(mapping, key)
        if value is not _MISSING:
            _set_dotted(cfg, key, _dataset_list_value(key, value, source))


def _take_dataset_list_opts(cfg: CN, opts: Sequence[Any], source: str) -> List[Any]:
    """:func:`_take_dataset_lists` for KEY VALUE overrides (a value decoded as yacs does: "['a','b']" is a
    list, ``a`` a string); returns the other overrides."""
    rest: List[Any] = []
    for key, value in zip(opts[0::2], opts[1::2]):
        if key in DATASET_LIST_KEYS:
            _set_dotted(cfg, key, _dataset_list_value(key, CN._decode_cfg_value(value), source))
        else:
            rest += [key, value]
    return rest


def _merge(cfg, mapping, source):
    _take_dataset_lists(cfg, mapping, source)
    try:
        cfg.merge_from_other_cfg(CN(mapping))
    except KeyError as e:
        # yacs: "Non-existent config key: MODEL.FOO"
        raise ConfigError(f"{source}: {e.args[0]} (see configs/defaults.py for the known keys)") from None
    except ValueError as e:
        raise ConfigError(f"{source}: {e}") from None


def allowed_values(key: str) -> Tuple[Any, ...]:
    """The values ``key`` of :data:`CHOICES` may take (a registry's names as registered now)."""
    allowed = CHOICES[key]
    return tuple(allowed()) if callable(allowed) else tuple(allowed)


def _check_choices(cfg, source):
    for key in CHOICES:
        allowed = allowed_values(key)
        value = _get_dotted(cfg, key)
        listed = key in DATASET_LIST_KEYS and not isinstance(value, str)
        bad = [v for v in value if v not in allowed] if listed else [] if value in allowed else [value]
        if bad:
            given = f"{list(value)!r}: {bad[0]!r}" if listed else repr(value)
            raise ConfigError(f"{source}: {key} = {given} is not one of {', '.join(repr(a) for a in allowed)}")


def _check_values(cfg, source):
    def fail(key, msg):
        raise ConfigError(f"{source}: {key} {msg}")

    for key in ("INPUT.SIZE_TRAIN", "INPUT.SIZE_TEST", "MODEL.TRANSFORMER.STRIDE_SIZE", "DATASETS.SYNTHETIC.IMAGE_SIZE"):
        sec, *rest = key.split(".")
        node = cfg[sec]
        for part in rest:
            node = node[part]
        if len(node) != 2 or any((not isinstance(v, int)) or v <= 0 for v in node):
            fail(key, f"must be two positive integers [height, width], got {list(node)}")
    if not cfg.MODEL.CNN.NAME and not cfg.MODEL.TRANSFORMER.NAME:
        fail("MODEL.CNN.NAME / MODEL.TRANSFORMER.NAME", "are both '': at least one branch is needed")
    if cfg.MODEL.FUSION.HTM_LAYERS < 0:
        fail("MODEL.FUSION.HTM_LAYERS", f"must be >= 0, got {cfg.MODEL.FUSION.HTM_LAYERS}")
    if cfg.MODEL.FUSION.DIM % cfg.MODEL.FUSION.NUM_HEADS:
        fail("MODEL.FUSION.DIM", f"({cfg.MODEL.FUSION.DIM}) must be divisible by MODEL.FUSION.NUM_HEADS "
                                 f"({cfg.MODEL.FUSION.NUM_HEADS})")
    # A warm-up longer than the run is valid: solver.scheduler keeps it ('release') or clips it ('paper_text'),
    # with a warning either way.
    for key in ("MAX_EPOCHS", "EVAL_PERIOD", "CHECKPOINT_PERIOD"):
        if cfg.SOLVER[key] < 1:
            fail(f"SOLVER.{key}", f"must be >= 1, got {cfg.SOLVER[key]}")
    if cfg.SOLVER.WARMUP_EPOCHS < 0:
        fail("SOLVER.WARMUP_EPOCHS", f"must be >= 0, got {cfg.SOLVER.WARMUP_EPOCHS}")
    if cfg.SOLVER.IMS_PER_BATCH % cfg.DATALOADER.NUM_INSTANCE and cfg.DATALOADER.SAMPLER != "random":
        fail("SOLVER.IMS_PER_BATCH", f"({cfg.SOLVER.IMS_PER_BATCH}) must be a multiple of "
                                     f"DATALOADER.NUM_INSTANCE ({cfg.DATALOADER.NUM_INSTANCE})")


def load_cfg(config_file: str = "", opts: Optional[Sequence[str]] = None, freeze: bool = True) -> CN:
    """Defaults, then ``config_file`` (and its ``_BASE_`` chain), then ``opts`` = [KEY, VALUE, ...].

    Deprecated key names (:data:`RENAMED_KEYS`) are accepted in both, with a logged warning."""
    cfg = get_cfg_defaults()
    source = "defaults"
    if config_file:
        source = config_file
        _merge(cfg, _read_yaml(config_file), config_file)
    if opts:
        opts = list(opts)
        if len(opts) % 2:
            raise ConfigError(f"command-line overrides must be KEY VALUE pairs, got an odd list: {opts}")
        opts = _take_dataset_list_opts(cfg, rename_override_keys(opts), "command line")
        try:
            cfg.merge_from_list(opts)
        except (KeyError, AssertionError) as e:
            msg = e.args[0] if e.args else str(e)
            raise ConfigError(f"command line: {msg} (see configs/defaults.py for the known keys)") from None
        except ValueError as e:
            raise ConfigError(f"command line: {e}") from None
        source = f"{source} + command line" if config_file else "command line"
    _check_choices(cfg, source)
    _check_values(cfg, source)
    if freeze:
        cfg.freeze()
    return cfg


def iter_keys(node: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    """Every leaf key of a config, dotted (``MODEL.CNN.NAME``)."""
    for k, v in node.items():
        if isinstance(v, CN):
            yield from iter_keys(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}"
