"""Name -> backbone factory, filled by ``@register_backbone(name, kind)`` where each backbone is defined.

The registry is the only list of backbone names: :func:`build_backbone` checks ``MODEL.CNN.NAME`` /
``MODEL.TRANSFORMER.NAME`` against it when the model is built (so a backbone registered by user code after the
config was loaded works), and the tests parametrise over it. A factory takes keyword options and returns a :class:`~model.backbones.base.Backbone`.

The options of a kind are the fields of its options class (``model.spec.BACKBONE_OPTIONS``:
``CNNOptions``, ``TransformerOptions``). Each factory names in its signature the ones it uses (a ViT
not the T2T-only options, T2T-ViT not the patch stride); :func:`build_backbone` passes it those and
leaves out the other options of its kind. A misspelt name is an error at either end: a factory
parameter that is not an option of its kind is refused at registration (it would always keep its
default), an option that is not one of its kind's at build time (it would be ignored).

This module imports nothing heavy; the names appear once the backbone modules are imported
(``import model.backbones``).
"""
import inspect
from typing import TYPE_CHECKING, Any, Callable, Dict, Tuple, TypeVar

from utils.errors import ConfigError

from ..spec import BACKBONE_OPTIONS

if TYPE_CHECKING:
    from .base import Backbone

KINDS = ("cnn", "transformer")
# The config key that names a backbone of each kind (quoted by the errors).
CONFIG_KEYS = {"cnn": "MODEL.CNN.NAME", "transformer": "MODEL.TRANSFORMER.NAME"}
KIND_TITLES = {"cnn": "CNN", "transformer": "Transformer"}

_BACKBONES: Dict[str, Dict[str, Callable[..., Any]]] = {kind: {} for kind in KINDS}

F = TypeVar("F", bound=Callable[..., Any])


def option_names(kind: str) -> Tuple[str, ...]:
    """The options a backbone factory of ``kind`` may take (``model.spec.BACKBONE_OPTIONS``)."""
    if kind not in KINDS:
        raise ValueError(f"backbone kind must be one of {KINDS}, got {kind!r}")
    return tuple(BACKBONE_OPTIONS[kind].config_keys())


def factory_options(factory: Callable[..., Any], kind: str) -> Tuple[str, ...]:
    """The options of ``kind`` that ``factory`` takes: those its signature names (all with ``**kwargs``)."""
    params = inspect.signature(factory).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return option_names(kind)
    return tuple(n for n in option_names(kind) if n in params)


def register_backbone(name: str, kind: str) -> Callable[[F], F]:
    """Decorator: make the factory ``fn(**options) -> Backbone`` buildable as ``name`` of ``kind``
    ('cnn' or 'transformer'). A name is registered once, across both kinds; every named parameter of the
    factory must be an option of ``kind`` (:func:`option_names`), else it could never be set."""
    if kind not in KINDS:
        raise ValueError(f"backbone kind must be one of {KINDS}, got {kind!r}")

    def add(fn: F) -> F:
        params = inspect.signature(fn).parameters
        strange = [p for p, v in params.items() if p not in option_names(kind) and v.kind not in (
            inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)]
        if strange:
            raise ValueError(f"backbone {name!r} ({fn.__qualname__}): {', '.join(map(repr, strange))} "
                             f"{'is' if len(strange) == 1 else 'are'} not {KIND_TITLES[kind]} option"
                             f"{'' if len(strange) == 1 else 's'}; the {KIND_TITLES[kind]} options "
                             f"(model.spec.{BACKBONE_OPTIONS[kind].__name__}): {', '.join(option_names(kind))}")
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


def build_backbone(kind: str, name: str, **options: Any) -> "Backbone":
    """The backbone ``name`` of ``kind`` built with the ``options`` its factory takes (the other options of
    ``kind`` are left out; those not given keep the factory's defaults).

    An unregistered name is a ``ConfigError`` naming the config key and listing the registered names; an
    option that is not one of ``kind``'s a ``ConfigError`` naming it, the backbone and the options it takes.
    """
    if kind not in KINDS:
        raise ValueError(f"backbone kind must be one of {KINDS}, got {kind!r}")
    table = _BACKBONES[kind]
    if name not in table:
        raise ConfigError(f"{CONFIG_KEYS[kind]}: {name!r} is not a registered {KIND_TITLES[kind]} backbone; "
                          f"registered: {', '.join(table) or '(none)'}")
    factory = table[name]
    takes = factory_options(factory, kind)
    unknown = [k for k in options if k not in option_names(kind)]
    if unknown:
        raise ConfigError(
            f"{'unknown option' if len(unknown) == 1 else 'unknown options'} {', '.join(map(repr, unknown))} for "
            f"the {KIND_TITLES[kind]} backbone {name!r} ({CONFIG_KEYS[kind]}); it takes {', '.join(takes) or '(none)'}"
            f" (of the {KIND_TITLES[kind]} options, model.spec.{BACKBONE_OPTIONS[kind].__name__}: "
            f"{', '.join(option_names(kind))})")
    return factory(**{k: v for k, v in options.items() if k in takes})
