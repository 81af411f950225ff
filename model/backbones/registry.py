"""Name -> backbone factory, filled by ``@register_backbone(name, kind)`` where each backbone is defined.

The registry is the only list of backbone names: ``configs/config.py`` reads the allowed values of
``MODEL.CNN.NAME`` / ``MODEL.TRANSFORMER.NAME`` from :func:`backbone_names`, and the tests parametrise
over it. A factory takes keyword options and returns a :class:`~model.backbones.base.Backbone`;
:func:`build_backbone` passes it the options its signature names, so each factory declares exactly
what it uses (a ViT ignores the T2T-only options, T2T-ViT the patch stride).

This module imports nothing heavy; the names appear once the backbone modules are imported
(``import model.backbones``).
"""
import inspect
from typing import TYPE_CHECKING, Any, Callable, Dict, Tuple, TypeVar

from utils.errors import ConfigError

if TYPE_CHECKING:
    from .base import Backbone

KINDS = ("cnn", "transformer")
# The config key that names a backbone of each kind (quoted by the errors).
CONFIG_KEYS = {"cnn": "MODEL.CNN.NAME", "transformer": "MODEL.TRANSFORMER.NAME"}
KIND_TITLES = {"cnn": "CNN", "transformer": "Transformer"}

_BACKBONES: Dict[str, Dict[str, Callable[..., Any]]] = {kind: {} for kind in KINDS}

F = TypeVar("F", bound=Callable[..., Any])


def register_backbone(name: str, kind: str) -> Callable[[F], F]:
    """Decorator: make the factory ``fn(**options) -> Backbone`` buildable as ``name`` of ``kind``
    ('cnn' or 'transformer'). A name is registered once, across both kinds."""
    if kind not in KINDS:
        raise ValueError(f"backbone kind must be one of {KINDS}, got {kind!r}")

    def add(fn: F) -> F:
        for other, table in _BACKBONES.items():
            if name in table:
                raise ValueError(f"backbone name {name!r} is registered twice ({other} {table[name].__qualname__} "
                                 f"and {kind} {fn.__qualname__})")
        _BACKBONES[kind][name] = fn
        return fn
    return add


def backbone_names(kind: str) -> Tuple[str, ...]:
    """The registered names of ``kind``, in registration order."""
    if kind not in KINDS:
        raise ValueError(f"backbone kind must be one of {KINDS}, got {kind!r}")
    return tuple(_BACKBONES[kind])


def backbone_kind(name: str) -> str:
    """'cnn' or 'transformer' for a registered ``name``."""
    for kind, table in _BACKBONES.items():
        if name in table:
            return kind
    raise KeyError(name)


def _accepted(factory: Callable[..., Any], options: Dict[str, Any]) -> Dict[str, Any]:
    """The options that ``factory``'s signature names (all of them when it takes ``**kwargs``)."""
    params = inspect.signature(factory).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(options)
    return {k: v for k, v in options.items() if k in params}


def build_backbone(kind: str, name: str, **options: Any) -> "Backbone":
    """The backbone ``name`` of ``kind`` built with the ``options`` its factory takes.

    An unregistered name is a ``ConfigError`` naming the config key and listing the registered names.
    """
    if kind not in KINDS:
        raise ValueError(f"backbone kind must be one of {KINDS}, got {kind!r}")
    table = _BACKBONES[kind]
    if name not in table:
        raise ConfigError(f"{CONFIG_KEYS[kind]}: {name!r} is not a registered {KIND_TITLES[kind]} backbone; "
                          f"registered: {', '.join(table) or '(none)'}")
    factory = table[name]
    return factory(**_accepted(factory, options))
