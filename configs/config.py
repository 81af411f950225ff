"""Loading a configuration: defaults <- YAML file (with ``_BASE_`` inheritance) <- command-line overrides.

Every failure names the file and key at fault: an unknown key, a value of the wrong type, a value
outside a key's allowed names, or a missing/cyclic ``_BASE_`` file.
"""
import os

import yaml
from yacs.config import CfgNode as CN

from model.fusion import HTM_ORDERS
from utils.errors import ConfigError  # defined with the other user errors; exported as configs.ConfigError

from .defaults import get_cfg_defaults

BASE_KEY = "_BASE_"

# Keys whose value must be one of a fixed set of names.
CHOICES = {
    "MODEL.DEVICE": ("auto", "cuda", "cpu"),
    "MODEL.PRETRAIN_CHOICE": ("imagenet", "self", "none"),
    "MODEL.POOLING": ("gem", "avg"),
    "MODEL.CNN.NAME": ("", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152"),
    "MODEL.CNN.POOLING": ("gem", "avg", "max"),
    "MODEL.TRANSFORMER.NAME": ("", "vit_base_patch16_224", "deit_base_patch16_224", "t2t_vit_t_14",
                               "vit_small_patch16_224", "vit_tiny_patch16_224"),
    "MODEL.TRANSFORMER.T2T_ATTN_SCALE": ("head_dim", "embed_dim"),
    "MODEL.TRANSFORMER.T2T_POS_EMBED": ("checkpoint", "sinusoid"),
    "MODEL.FUSION.HTM_ORDER": HTM_ORDERS,
    "DATASETS.NAMES": ("market1501", "dukemtmcreid", "msmt17", "synthetic"),
    "DATALOADER.SAMPLER": ("identity", "random"),
    "SOLVER.OPTIMIZER_NAME": ("SGD", "AdamW"),
    "SOLVER.AMP": ("auto", "fp16", "bf16", "off"),
    "TEST.FEAT": ("all", "cnn", "transformer", "lru_cnn", "lru_transformer", "htm_cnn", "htm_transformer"),
    "TEST.NECK_FEAT": ("before", "after"),
    "TEST.METRIC": ("euclidean", "cosine"),
}


def _read_yaml(path, chain=()):
    """The mapping of a YAML file with its ``_BASE_`` chain merged underneath (paths relative to the file)."""
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


def _merge(cfg, mapping, source):
    try:
        cfg.merge_from_other_cfg(CN(mapping))
    except KeyError as e:
        # yacs: "Non-existent config key: MODEL.FOO"
        raise ConfigError(f"{source}: {e.args[0]} (see configs/defaults.py for the known keys)") from None
    except ValueError as e:
        raise ConfigError(f"{source}: {e}") from None


def _check_choices(cfg, source):
    for key, allowed in CHOICES.items():
        node = cfg
        for part in key.split("."):
            node = node[part]
        if node not in allowed:
            raise ConfigError(f"{source}: {key} = {node!r} is not one of {', '.join(repr(a) for a in allowed)}")


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
    # A warm-up longer than the run is valid: solver.scheduler.warmup_epochs clips it (with a warning).
    for key in ("MAX_EPOCHS", "EVAL_PERIOD", "CHECKPOINT_PERIOD"):
        if cfg.SOLVER[key] < 1:
            fail(f"SOLVER.{key}", f"must be >= 1, got {cfg.SOLVER[key]}")
    if cfg.SOLVER.WARMUP_EPOCHS < 0:
        fail("SOLVER.WARMUP_EPOCHS", f"must be >= 0, got {cfg.SOLVER.WARMUP_EPOCHS}")
    if cfg.SOLVER.IMS_PER_BATCH % cfg.DATALOADER.NUM_INSTANCE and cfg.DATALOADER.SAMPLER == "identity":
        fail("SOLVER.IMS_PER_BATCH", f"({cfg.SOLVER.IMS_PER_BATCH}) must be a multiple of "
                                     f"DATALOADER.NUM_INSTANCE ({cfg.DATALOADER.NUM_INSTANCE})")


def load_cfg(config_file="", opts=None, freeze=True):
    """Defaults, then ``config_file`` (and its ``_BASE_`` chain), then ``opts`` = [KEY, VALUE, ...]."""
    cfg = get_cfg_defaults()
    source = "defaults"
    if config_file:
        source = config_file
        _merge(cfg, _read_yaml(config_file), config_file)
    if opts:
        opts = list(opts)
        if len(opts) % 2:
            raise ConfigError(f"command-line overrides must be KEY VALUE pairs, got an odd list: {opts}")
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


def iter_keys(node, prefix=""):
    """Every leaf key of a config, dotted (``MODEL.CNN.NAME``)."""
    for k, v in node.items():
        if isinstance(v, CN):
            yield from iter_keys(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}"
