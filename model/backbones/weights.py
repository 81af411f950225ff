"""Reading weight files from local paths (never from the network), with errors that name the config key."""
import os

import torch

from utils.errors import FusionReIDError


class WeightsError(FusionReIDError, ValueError):
    """A weight file that is missing, unreadable or of the wrong architecture; the message names the key."""


def check_path(path, key):
    if not path:
        raise WeightsError(f"{key} is empty: set it to a local weight file (no weights are downloaded)")
    if not os.path.isfile(path):
        raise WeightsError(f"{key}: weight file not found: {path}")


def read_state_dict(path, key, containers=("state_dict_ema", "model_ema", "state_dict", "model")):
    """The tensor mapping stored in a ``.pth``/``.pth.tar``/``.bin``/``.safetensors`` file.

    Checkpoints that wrap the weights in a dict (``{'model': ...}``, ``{'state_dict': ...}``) are unwrapped;
    the first of ``containers`` present wins.
    """
    return unwrap_state_dict(read_weight_file(path, key), path, key, containers)


def read_weight_file(path, key):
    """What a ``.pth``/``.pth.tar``/``.bin``/``.safetensors`` file holds (``weights_only`` on CPU), as stored."""
    check_path(path, key)
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file
            state = load_file(path, device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any reader failure becomes one clear message
        raise WeightsError(f"{key}: cannot read {path}: {type(e).__name__}: {e}") from None
    return state


def unwrap_state_dict(state, path, key, containers=("state_dict_ema", "model_ema", "state_dict", "model")):
    """The tensor mapping inside what :func:`read_weight_file` read (see :func:`read_state_dict`)."""
    if isinstance(state, dict):
        for name in containers:
            if isinstance(state.get(name), dict):
                state = state[name]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{key}: {path} does not hold a state dict of tensors")
    return state


def strip_prefix(state, prefix="module."):
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state.items()}


def describe_mismatch(missing, unexpected, shapes=()):
    """One line listing a few missing/unexpected keys and shape mismatches."""
    parts = []
    if missing:
        parts.append(f"missing {len(missing)} keys, e.g. {sorted(missing)[:5]}")
    if unexpected:
        parts.append(f"unexpected {len(unexpected)} keys, e.g. {sorted(unexpected)[:5]}")
    if shapes:
        parts.append("shape mismatches: " + ", ".join(shapes[:5]))
    return "; ".join(parts)


def load_checked(module, state, key, path, what, ignore_missing=()):
    """Load ``state`` into ``module`` strictly; any mismatch is one error naming the key, file and keys.

    ``ignore_missing``: names that may be absent from the file (e.g. buffers the model recomputes).
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state and k not in ignore_missing]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
              for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        raise WeightsError(f"{key}: {path} is not {what}: {describe_mismatch(missing, unexpected, shapes)}")
    module.load_state_dict(state, strict=False)
