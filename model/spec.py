"""What a FusionReID is built from, read from the config in one place.

Each spec is a frozen dataclass whose fields name their config key (:func:`config_field`), so reading it
from a config is one generic function (:meth:`ConfigSpec.from_config`) and the key a value came from is
known to the error messages:

* :class:`CNNOptions` / :class:`TransformerOptions`: the options a backbone factory of that kind may take
  (``model.backbones.registry`` refuses any other, and any factory parameter that is not one of them);
* :class:`FusionSpec`: ``MODEL.FUSION``; :class:`ModelSpec`: the whole architecture.

The retrieval policy (``TEST.FEAT`` ... ``TEST.FLIP``) is :class:`model.retrieval.RetrievalPolicy`, read the
same way. A new backbone option is a config key (``configs/defaults.py``), one field here and the
parameter of the factories that use it.

This module imports nothing from the rest of ``model``: the backbone registry reads it while the
backbones register themselves.
"""
import dataclasses
from typing import Any, Dict, Mapping, Optional, Tuple, Type, TypeVar

from utils.dotted import get_dotted

SpecT = TypeVar("SpecT", bound="ConfigSpec")


def config_field(key: Optional[str], doc: str = "", architecture: bool = True) -> Any:
    """A spec field read from the config key ``key`` (None: given by the caller, not in the config).
    ``architecture``: whether the key decides what a trained checkpoint's tensors mean (:func:`architecture_keys`);
    False for what only shapes training (drop rates, initialisation, the starting GeM exponent, freezing)."""
    return dataclasses.field(metadata={"key": key, "doc": doc, "architecture": architecture})


def config_value(cfg: Mapping[str, Any], key: str) -> Any:
    """The value of the dotted ``key`` in ``cfg``; lists become tuples (specs are immutable)."""
    value = get_dotted(cfg, key)
    return tuple(value) if isinstance(value, (list, tuple)) else value


class ConfigSpec:
    """Mixin of the spec dataclasses: read from a config by their fields' keys."""

    @classmethod
    def config_keys(cls) -> Dict[str, Optional[str]]:
        """``{field: config key}`` (None for a field the caller gives)."""
        return {f.name: f.metadata.get("key") for f in dataclasses.fields(cls)}

    @classmethod
    def from_config(cls: Type[SpecT], cfg: Mapping[str, Any], **given: Any) -> SpecT:
        """The spec of ``cfg``: each field from its config key, those without a key from ``given``."""
        keys = cls.config_keys()
        missing = [name for name, key in keys.items() if key is None and name not in given]
        if missing or set(given) - set(keys):
            raise TypeError(f"{cls.__name__}.from_config needs {missing} and takes no {sorted(set(given) - set(keys))}")
        return cls(**{name: given[name] if name in given else config_value(cfg, key) for name, key in keys.items()})

    def as_dict(self) -> Dict[str, Any]:
        """``{field: value}``, shallow (nested specs stay specs)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


# ----------------------------------------------------------------------------- backbone options
@dataclasses.dataclass(frozen=True)
class CNNOptions(ConfigSpec):
    """The options a CNN factory may take (its signature says which it uses)."""

    img_size: Tuple[int, int] = config_field("INPUT.SIZE_TRAIN", "input (H, W) the grid size is given for")
    last_stride: int = config_field("MODEL.CNN.LAST_STRIDE", "stride of the last stage")


@dataclasses.dataclass(frozen=True)
class TransformerOptions(ConfigSpec):
    """The options a Transformer factory may take (its signature says which it uses: the ViTs take the
    patch stride, T2T-ViT its ``t2t_*`` options)."""

    img_size: Tuple[int, int] = config_field("INPUT.SIZE_TRAIN", "input (H, W): the position embedding's grid")
    stride_size: Tuple[int, int] = config_field("MODEL.TRANSFORMER.STRIDE_SIZE", "patch stride")
    num_cams: int = config_field(None, "cameras of the camera embedding (0: none; MODEL.TRANSFORMER.SIE_CAMERA)")
    sie_coe: float = config_field("MODEL.TRANSFORMER.SIE_COE", "weight of the camera embedding")
    drop_path_rate: float = config_field("MODEL.TRANSFORMER.DROP_PATH", "stochastic depth", architecture=False)
    drop_rate: float = config_field("MODEL.TRANSFORMER.DROP_RATE", "dropout", architecture=False)
    attn_drop_rate: float = config_field("MODEL.TRANSFORMER.ATTN_DROP_RATE", "attention dropout", architecture=False)
    t2t_attn_scale: str = config_field("MODEL.TRANSFORMER.T2T_ATTN_SCALE", "T2T-ViT attention scale")
    t2t_pos_embed: str = config_field("MODEL.TRANSFORMER.T2T_POS_EMBED", "T2T-ViT position table")


# The options of each backbone kind (``model.backbones.registry.KINDS``).
BACKBONE_OPTIONS: Dict[str, Type[ConfigSpec]] = {"cnn": CNNOptions, "transformer": TransformerOptions}


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """One branch: the registered backbone ``name`` of ``kind``, built with ``options``."""

    kind: str
    name: str
    options: ConfigSpec


# ----------------------------------------------------------------------------- fusion and the whole model
@dataclasses.dataclass(frozen=True)
class FusionSpec(ConfigSpec):
    """The Dual-attention Mutual Fusion (``MODEL.FUSION``)."""

    dim: int = config_field("MODEL.FUSION.DIM", "fused dimension D")
    lru: bool = config_field("MODEL.FUSION.LRU", "Local Refinement Units")
    htm_layers: int = config_field("MODEL.FUSION.HTM_LAYERS", "stacked HTMs L")
    htm_order: str = config_field("MODEL.FUSION.HTM_ORDER", "SEU/MFU order in an HTM")
    share_seu: bool = config_field("MODEL.FUSION.SHARE_SEU", "one SEU for both branches")
    share_mfu: bool = config_field("MODEL.FUSION.SHARE_MFU", "one MFU for both branches")
    num_heads: int = config_field("MODEL.FUSION.NUM_HEADS", "attention heads")
    mlp_ratio: float = config_field("MODEL.FUSION.MLP_RATIO", "MLP width / D")
    pooling: str = config_field("MODEL.FUSION.POOLING", "pooling of the refined maps")
    init: str = config_field("MODEL.FUSION.INIT", "initialisation of the LRUs and HTMs", architecture=False)


# The keys ModelSpec.from_config reads itself: which backbone of each kind (empty: no such branch) and whether the
# Transformer has a camera embedding (its number of cameras comes from the data).
BRANCH_KEYS = ("MODEL.CNN.NAME", "MODEL.TRANSFORMER.NAME", "MODEL.TRANSFORMER.SIE_CAMERA")


@dataclasses.dataclass(frozen=True)
class ModelSpec(ConfigSpec):
    """The architecture of a FusionReID: what its state dict holds (plus which parameters train)."""

    num_classes: int = config_field(None, "identities of the ID classifiers")
    cnn: Optional[BackboneSpec] = config_field(None, "the CNN branch (MODEL.CNN), None without one")
    transformer: Optional[BackboneSpec] = config_field(None, "the Transformer branch, None without one")
    cnn_pooling: str = config_field("MODEL.CNN.POOLING", "f^_c = pooling of the CNN map")
    gem_p: float = config_field("MODEL.GEM_P", "initial GeM exponent", architecture=False)
    fusion: FusionSpec = config_field(None, "MODEL.FUSION")
    freeze_gradient_free: bool = config_field("SOLVER.FREEZE_GRADIENT_FREE", "freeze the gradient-free parameters",
                                              architecture=False)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any],  # type: ignore[override]
                    num_classes: int, num_cams: int) -> "ModelSpec":
        """The architecture of ``cfg`` for ``num_classes`` identities seen by ``num_cams`` cameras."""
        cnn, trans, sie = (config_value(cfg, k) for k in BRANCH_KEYS)
        return super().from_config(
            cfg, num_classes=num_classes, fusion=FusionSpec.from_config(cfg),
            cnn=BackboneSpec("cnn", cnn, CNNOptions.from_config(cfg)) if cnn else None,
            transformer=BackboneSpec("transformer", trans, TransformerOptions.from_config(
                cfg, num_cams=num_cams if sie else 0)) if trans else None)


def architecture_keys() -> Tuple[str, ...]:
    """The config keys that decide what a trained FusionReID's tensors mean, in a fixed order: which backbones (and
    whether the Transformer has a camera embedding), then every spec field marked ``architecture``. Two configs
    that differ in one of them can have the same tensor names and shapes (e.g. ``MODEL.FUSION.HTM_ORDER``
    seu_mfu / mfu_seu) and still compute other functions: ``model.checkpointer`` refuses such a checkpoint."""
    keys = list(BRANCH_KEYS)
    for spec in (CNNOptions, TransformerOptions, FusionSpec, ModelSpec):
        for f in dataclasses.fields(spec):
            key = f.metadata.get("key")
            if key and f.metadata.get("architecture", True) and key not in keys:
                keys.append(key)
    return tuple(keys)
