"""Loading a configuration: defaults <- YAML file (with ``_BASE_`` inheritance) <- command-line overrides.

Every failure names the file and key at fault: an unknown key, a value of the wrong type, a value
outside a key's allowed names, or a missing/cyclic ``_BASE_`` file.

The result is plain data: every list value is a tuple (a YAML list or ``[a, b]`` / ``(a, b)`` on the command
line), and the keys of :data:`NAME_LIST_KEYS` also take one name (a YAML string, a bare word on the command
line) as a tuple of one. ``DATASETS.TEST_NAMES`` left empty is set to ``DATASETS.NAMES``.

Names defined by a registry (datasets, backbones) are not checked here: the registries fill as their modules are
imported, and a name registered by the user's own code may come after the config is loaded. Each registry checks
its keys where it builds (``datasets.check_dataset_names`` in ``make_dataloader``, ``model.backbones.build_backbone``),
with :func:`check_choice`. This package imports no torch.

Renamed keys (:data:`RENAMED_KEYS`) are still accepted under their old names, in a YAML file or on the
command line: the value goes to the new key and a deprecation warning naming both is logged. Giving the
old and the new name with different values in one file (or both on the command line) is an error.
"""
import logging
import os
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import yaml
from yacs.config import CfgNode as CN

from utils.dotted import get_dotted
from utils.errors import ConfigError  # defined with the other user errors; exported as configs.ConfigError
from utils.metric_keys import METRIC_KEYS

from .defaults import get_cfg_defaults

logger = logging.getLogger(__name__)

BASE_KEY = "_BASE_"

# Old key -> new key. The old names are deprecated aliases: accepted with a warning.
RENAMED_KEYS = {
    "INPUT.PROB": "INPUT.FLIP_PROB",              # it is the probability of the horizontal flip
    "MODEL.POOLING": "MODEL.FUSION.POOLING",      # pooling of the LRU maps; MODEL.CNN.POOLING is the CNN's
}

# Structures of one Heterogenous Transmission Module (MODEL.FUSION.HTM_ORDER; built by model.fusion).
HTM_ORDERS = ("seu_mfu", "seu", "mfu_seu", "mfu")
FUSION_INITS = ("pytorch", "trunc_normal")  # MODEL.FUSION.INIT: PyTorch's defaults (as released) | truncated normal

# Keys whose value must be one of a fixed set of names (registry names are checked by their registry, see above).
CHOICES = {
    "MODEL.DEVICE": ("auto", "cuda", "cpu"),
    "MODEL.PRETRAIN_CHOICE": ("imagenet", "self", "none"),
    "MODEL.CNN.POOLING": ("gem", "avg", "max"),
    "MODEL.TRANSFORMER.T2T_ATTN_SCALE": ("head_dim", "embed_dim"),
    "MODEL.TRANSFORMER.T2T_POS_EMBED": ("checkpoint", "sinusoid"),
    "MODEL.FUSION.HTM_ORDER": HTM_ORDERS,
    "MODEL.FUSION.POOLING": ("gem", "avg"),
    "MODEL.FUSION.INIT": FUSION_INITS,
    "MODEL.TRIPLET_BATCH": ("global", "per_process"),
    "DATALOADER.SAMPLER": ("identity", "balanced_identity", "random"),
    "SOLVER.SCHEDULE": ("release", "paper_text"),
    "SOLVER.WEIGHT_DECAY_ON": ("all", "weights"),
    "SOLVER.OPTIMIZER_NAME": ("SGD", "AdamW"),
    "SOLVER.AMP": ("auto", "fp16", "bf16", "off"),
    "SOLVER.BEST_METRIC": METRIC_KEYS,
    "TEST.FEAT": ("all", "cnn", "transformer", "lru_cnn", "lru_transformer", "htm_cnn", "htm_transformer"),
    "TEST.NECK_FEAT": ("before", "after"),
    "TEST.METRIC": ("euclidean", "cosine"),
}


# Keys holding a tuple of names, which also take a single name: a YAML string or a bare word on the command line.
NAME_LIST_KEYS = ("DATASETS.NAMES", "DATASETS.TEST_NAMES")

_MISSING = object()


def _pop_dotted(mapping: Dict[str, Any], key: str) -> Any:
    """Remove and return ``mapping[A][B][C]`` for ``key`` 'A.B.C'; ``_MISSING`` when absent."""
    *parents, leaf = key.split(".")
    node = mapping
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
    return node.pop(leaf, _MISSING) if isinstance(node, dict) else _MISSING


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
        current = get_dotted(mapping, new, _MISSING)
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


def _name_tuple(key: str, value: Any, source: str) -> Tuple[str, ...]:
    """``value`` of the name-list ``key`` as a tuple: one name (a string) or a list/tuple of names; anything else
    is a ``ConfigError`` naming the key."""
    names = (value,) if isinstance(value, str) else value
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{source}: {key} must be a name or a list of names, got {value!r}")
    return tuple(names)


def _names_in_mapping(mapping: Dict[str, Any], source: str) -> Dict[str, Any]:
    """``mapping`` (nested, as read from YAML) with the values of :data:`NAME_LIST_KEYS` made tuples, in place."""
    for key in NAME_LIST_KEYS:
        value = get_dotted(mapping, key, _MISSING)
        if value is not _MISSING:
            _set_dotted(mapping, key, _name_tuple(key, value, source))
    return mapping


def _names_in_opts(opts: Sequence[Any], source: str) -> List[Any]:
    """KEY VALUE overrides with the values of :data:`NAME_LIST_KEYS` decoded as yacs decodes them (``a`` a string,
    ``['a','b']`` / ``('a','b')`` a list / tuple) and made tuples."""
    out: List[Any] = []
    for key, value in zip(opts[0::2], opts[1::2]):
        out += [key, _name_tuple(key, CN._decode_cfg_value(value), source) if key in NAME_LIST_KEYS else value]
    return out


def _merge(cfg, mapping, source):
    try:
        cfg.merge_from_other_cfg(CN(_names_in_mapping(mapping, source)))
    except KeyError as e:
        # yacs: "Non-existent config key: MODEL.FOO"
        raise ConfigError(f"{source}: {e.args[0]} (see configs/defaults.py for the known keys)") from None
    except ValueError as e:
        raise ConfigError(f"{source}: {e}") from None


def check_choice(key: str, value: Any, allowed: Sequence[Any], source: str = "", what: str = "") -> None:
    """A ``ConfigError`` naming ``key`` (after ``source``, the file or 'command line', when given) unless ``value``
    is in ``allowed`` or, for a key of :data:`NAME_LIST_KEYS`, each of its names is. ``what`` says what the allowed
    values are (e.g. 'registered datasets'). The registries check their keys with it when they build."""
    listed = key in NAME_LIST_KEYS
    bad = [v for v in value if v not in allowed] if listed else [] if value in allowed else [value]
    if bad:
        given = f"{value!r}: {bad[0]!r}" if listed else repr(value)
        where = f"{source}: " if source else ""
        among = f" ({what})" if what else ""
        names = ", ".join(repr(a) for a in allowed)
        raise ConfigError(f"{where}{key} = {given} is not one of {names}{among}")


def _check_choices(cfg, source):
    for key, allowed in CHOICES.items():
        check_choice(key, get_dotted(cfg, key), allowed, source)


def _check_values(cfg, source):
    def fail(key, msg):
        raise ConfigError(f"{source}: {key} {msg}")

    if not cfg.DATASETS.NAMES:
        fail("DATASETS.NAMES", "is empty; name at least one dataset")
    for key in NAME_LIST_KEYS:
        names = get_dotted(cfg, key)
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            fail(key, f"= {names!r} names {', '.join(map(repr, repeated))} more than once")
    for key in ("INPUT.SIZE_TRAIN", "INPUT.SIZE_TEST", "MODEL.TRANSFORMER.STRIDE_SIZE", "DATASETS.SYNTHETIC.IMAGE_SIZE"):
        node = get_dotted(cfg, key)
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

    List values come out as tuples, a single name of :data:`NAME_LIST_KEYS` as a tuple of one, an empty
    ``DATASETS.TEST_NAMES`` as ``DATASETS.NAMES``. Deprecated key names (:data:`RENAMED_KEYS`) are accepted in
    both, with a logged warning. Registry names (datasets, backbones) are checked where they are built."""
    cfg = get_cfg_defaults()
    source = "defaults"
    if config_file:
        source = config_file
        _merge(cfg, _read_yaml(config_file), config_file)
    if opts:
        opts = list(opts)
        if len(opts) % 2:
            raise ConfigError(f"command-line overrides must be KEY VALUE pairs, got an odd list: {opts}")
        opts = _names_in_opts(rename_override_keys(opts), "command line")
        try:
            cfg.merge_from_list(opts)
        except (KeyError, AssertionError) as e:
            msg = e.args[0] if e.args else str(e)
            raise ConfigError(f"command line: {msg} (see configs/defaults.py for the known keys)") from None
        except ValueError as e:
            raise ConfigError(f"command line: {e}") from None
        source = f"{source} + command line" if config_file else "command line"
    if not cfg.DATASETS.TEST_NAMES:
        cfg.DATASETS.TEST_NAMES = cfg.DATASETS.NAMES
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
