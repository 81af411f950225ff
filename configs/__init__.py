from .config import ConfigError, iter_keys, load_cfg
from .defaults import get_cfg_defaults

__all__ = ["ConfigError", "get_cfg_defaults", "iter_keys", "load_cfg"]
