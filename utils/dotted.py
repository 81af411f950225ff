"""Reading a config value by its dotted key (``'MODEL.FUSION.DIM'``) from a yacs ``CfgNode`` or any nested mapping
(a YAML file read as dicts, a checkpoint's stored config). Torch-free: configs/ and the model specs read with it."""
from typing import Any, Mapping

MISSING = object()  # the default of get_dotted: raise KeyError when the key is absent


def get_dotted(mapping: Mapping[str, Any], key: str, default: Any = MISSING) -> Any:
    """``mapping[A][B][C]`` for ``key`` 'A.B.C'; ``default`` when a part is absent or not a mapping (a
    ``KeyError`` naming the key when no default is given)."""
    node: Any = mapping
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            if default is MISSING:
                raise KeyError(f"config key {key} not found (no {part!r})")
            return default
        node = node[part]
    return node
