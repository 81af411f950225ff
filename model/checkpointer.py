"""The one checkpointer: a training run's checkpoint files, resuming, the best model, and every way a trained
FusionReID's state is loaded.

Writing (:class:`Checkpointer`, rank 0): ``checkpoint_epoch{N}.pth`` + ``last_checkpoint`` and
``model_best.pth`` in OUTPUT_DIR, atomically (``utils.checkpoint``: the file layout and the atomic writes).

Reading, each with errors that name the config key or option and the file:

==================================  ============================================================================
training resume (``--resume``)      :meth:`Checkpointer.resume_state`: the newest usable checkpoint, refused
                                    before anything is loaded when it is not of this run's model
                                    (:func:`refuse_other_model`); a resume under another training config is
                                    one warning naming each key (:func:`warn_resume_differences`)
``TEST.WEIGHT`` (test_net)          :func:`load_model_weights` into a model built from the config
``MODEL.PRETRAIN_CHOICE self``      :func:`load_model_weights` with ``fine_tune``: the ID classifiers and a camera
                                    embedding of another size are re-made (``model.build.build_model``)
feature extractor, tools            ``model.build.build_trained_model``: the model sized from the checkpoint's
                                    tensors (:func:`read_model_file`, :func:`model_sizes`, :func:`load_model_state`)
==================================  ============================================================================

A checkpoint knows its model: train_net.py stores the config, and loading into a model whose
:data:`ARCHITECTURE_KEYS` differ is refused with one line naming every differing key and both values. A bare state
dict (no stored config) loads when its tensor names and shapes fit.
"""
import logging
import os
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

import torch
import yaml

from configs.config import iter_keys
from utils.checkpoint import (TRAINING_KEYS, CheckpointError, atomic_torch_save, load_checkpoint,
                              load_last_checkpoint, save_checkpoint)
from utils.dotted import get_dotted
from utils.output_files import BEST_CHECKPOINT

from .backbones.weights import WeightsError, load_checked, read_weight_file, strip_prefix, unwrap_state_dict
from .spec import architecture_keys

logger = logging.getLogger(__name__)

# The config keys that decide what a checkpoint's tensors mean (the spec fields marked as architecture).
ARCHITECTURE_KEYS = architecture_keys()
# Keys that say where a run reads and writes, how fast it computes, and how it is logged and evaluated, not what
# it trains (a key covers its whole section): resuming under other values of these is no different run.
NOT_TRAINING_KEYS = ("OUTPUT_DIR", "DATASETS.ROOT_DIR", "DATASETS.CSV_DIR", "DATASETS.TEST_NAMES", "MODEL.DEVICE",
                     "MODEL.PRETRAIN_CHOICE", "MODEL.PRETRAIN_PATH", "MODEL.CNN.PRETRAIN_PATH",
                     "MODEL.TRANSFORMER.PRETRAIN_PATH", "MODEL.GRAD_CHECKPOINT", "MODEL.CHANNELS_LAST", "MODEL.COMPILE",
                     "SOLVER.CHECKPOINT_PERIOD", "SOLVER.EVAL_PERIOD", "SOLVER.LOG_PERIOD", "SOLVER.BEST_METRIC", "TEST")
# Where a FusionReID checkpoint keeps the model's state dict (train_net.py: 'model').
MODEL_CONTAINERS = ("model", "state_dict")
# The tensors sized by the training data: re-made when fine-tuning on other data.
CLASSIFIER_SUFFIX, CAMERA_EMBEDDING = "classifier.weight", "transformer.sie_embed"


def dataset_sized(name: str) -> Optional[str]:
    """What sizes the tensor ``name`` of a FusionReID state dict when it is sized by the training data:
    'identities' (an ID classifier's weight), 'cameras' (the camera embedding); None for any other."""
    if name.startswith("heads.") and name.endswith("." + CLASSIFIER_SUFFIX):
        return "identities"
    return "cameras" if name == CAMERA_EMBEDDING else None


# ----------------------------------------------------------------------------- the architecture check
_ABSENT = object()  # a key an older checkpoint's config does not have


def _plain(value: Any) -> Any:
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def stored_config(raw: Any) -> Optional[str]:
    """The config YAML train_net.py stores in its checkpoints; None for a bare state dict or other file."""
    config = raw.get("config") if isinstance(raw, dict) else None
    return config if isinstance(config, str) else None


def stored_differences(stored_config: str, cfg: Mapping[str, Any], keys: Iterable[str]
                       ) -> Tuple[List[str], List[str]]:
    """``(differences, absent)`` of ``keys`` between a checkpoint's stored config (the YAML text train_net.py saves)
    and ``cfg``: ``'KEY: <theirs> in the checkpoint, <ours> here'`` for each key that differs, and the keys the
    stored config does not have (a checkpoint of an older version)."""
    stored = yaml.safe_load(stored_config) or {}
    diffs, absent = [], []
    for key in keys:
        theirs, ours = get_dotted(stored, key, _ABSENT), get_dotted(cfg, key)
        if theirs is _ABSENT:
            absent.append(key)
        elif _plain(theirs) != _plain(ours):
            diffs.append(f"{key}: {_plain(theirs)!r} in the checkpoint, {_plain(ours)!r} here")
    return diffs, absent


def architecture_differences(stored_config: str, cfg: Mapping[str, Any]) -> List[str]:
    """The :func:`stored_differences` of :data:`ARCHITECTURE_KEYS`; keys an older checkpoint's config does not
    have are not compared."""
    return stored_differences(stored_config, cfg, ARCHITECTURE_KEYS)[0]


def training_keys(cfg: Mapping[str, Any]) -> List[str]:
    """The dotted keys of ``cfg`` that shape training beyond the architecture: every key but
    :data:`ARCHITECTURE_KEYS` and :data:`NOT_TRAINING_KEYS`."""
    return [key for key in iter_keys(cfg) if key not in ARCHITECTURE_KEYS
            and not any(key == k or key.startswith(k + ".") for k in NOT_TRAINING_KEYS)]


def warn_resume_differences(stored_config: Optional[str], cfg: Mapping[str, Any], path: str) -> None:
    """One warning when the run resumed from ``path`` goes on under another training config than the one that
    wrote it (each differing key with both values), and one naming the keys the checkpoint's config predates."""
    if not stored_config:
        return
    diffs, absent = stored_differences(stored_config, cfg, training_keys(cfg))
    if diffs:
        logger.warning("--resume: %s was trained under another config; the rest of the run follows this one (%s)",
                       path, "; ".join(diffs))
    if absent:
        logger.warning("--resume: %s predates %s; this config's values are used (%s)", path, ", ".join(absent),
                       "; ".join(f"{k} {_plain(get_dotted(cfg, k))!r}" for k in absent))


def refuse_other_model(ckpt: Mapping[str, Any], cfg: Mapping[str, Any], model: torch.nn.Module, path: str) -> None:
    """A ``CheckpointError`` (one line) when the training checkpoint ``ckpt`` is not one to resume: it lacks one of
    ``TRAINING_KEYS``, was trained with another architecture (its stored config), or for another number of
    identities or cameras than ``model`` has (resuming would load weights that mean something else, or fail
    half-way)."""
    missing = [k for k in TRAINING_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path} is not a training checkpoint (no {', '.join(missing)}); cannot resume")
    config = stored_config(ckpt)
    problems = architecture_differences(config, cfg) if config else []
    own, state = model.state_dict(), strip_prefix(ckpt["model"])
    for what in ("identities", "cameras"):
        names = [k for k in own if dataset_sized(k) == what and k in state and state[k].shape[0] != own[k].shape[0]]
        if names:
            problems.append(f"{state[names[0]].shape[0]} {what} in the checkpoint, {own[names[0]].shape[0]} in this "
                            f"run's data")
    if problems:
        raise CheckpointError(f"--resume: {path} is not a checkpoint of this run's model ({'; '.join(problems)}); "
                              "resume with the config and data it was trained with, or start another OUTPUT_DIR")


# ----------------------------------------------------------------------------- loading a trained model
def read_model_file(path: str, key: str) -> Tuple[Dict[str, torch.Tensor], Optional[str]]:
    """``(model state dict, stored config YAML or None)`` of a train_net.py checkpoint or a bare state dict at
    ``path`` (``module.`` prefixes stripped), read once. ``key`` names the option in errors."""
    raw = read_weight_file(path, key)
    config = stored_config(raw)
    return strip_prefix(unwrap_state_dict(raw, path, key, containers=MODEL_CONTAINERS)), config


def model_sizes(state: Mapping[str, torch.Tensor], path: str, key: str) -> Tuple[int, Optional[int]]:
    """``(num_classes, num_cams)`` of a FusionReID state dict, from its tensors' shapes; ``num_cams`` is None
    without a camera embedding."""
    classifiers = sorted(k for k in state if dataset_sized(k) == "identities")
    if not classifiers:
        raise WeightsError(f"{key}: {path} has no heads.*.{CLASSIFIER_SUFFIX}: not a FusionReID checkpoint")
    sie = state.get(CAMERA_EMBEDDING)
    return state[classifiers[0]].shape[0], None if sie is None else sie.shape[0]


def check_architecture(stored_config: Optional[str], cfg: Mapping[str, Any], path: str, key: str) -> None:
    """A ``WeightsError`` naming ``key`` and every differing :data:`ARCHITECTURE_KEYS` entry when the checkpoint's
    stored config (None: a bare state dict, not checked) describes another architecture than ``cfg``."""
    diffs = architecture_differences(stored_config, cfg) if stored_config else []
    if diffs:
        raise WeightsError(f"{key}: {path} was trained with another architecture ({'; '.join(diffs)}); set "
                           f"these keys as the checkpoint has them")


def load_model_state(model: torch.nn.Module, state: Mapping[str, torch.Tensor], path: str, key: str,
                     fine_tune: bool = False) -> None:
    """Load a FusionReID state dict read from ``path`` into ``model``.

    ID classifiers of another shape (another dataset) keep the model's fresh initialisation. With ``fine_tune``
    (``MODEL.PRETRAIN_CHOICE self``: a ReID checkpoint trained on another dataset) so does a camera embedding of
    another number of cameras; without it (evaluating ``TEST.WEIGHT``) that is an error, as the features would
    depend on untrained camera rows. One log line says what was loaded and what was re-made; everything else must
    match exactly (a ``WeightsError`` naming ``key`` otherwise).
    """
    own, state = model.state_dict(), dict(state)
    remakeable = ("identities", "cameras") if fine_tune else ("identities",)
    dataset_layers = [k for k in state
                      if k in own and state[k].shape != own[k].shape and dataset_sized(k) in remakeable]
    remade = {}
    for k in dataset_layers:
        old, new = state.pop(k).shape[0], own[k].shape[0]
        unit = dataset_sized(k)
        what = "camera embedding" if unit == "cameras" else "ID classifiers"
        remade[what] = f"{what} ({old} -> {new} {unit})"
    load_checked(model, state, key, path, "a checkpoint of this architecture", ignore_missing=dataset_layers)
    if remade:  # expected when fine-tuning; worth a warning when evaluating a checkpoint of another dataset
        logger.log(logging.INFO if fine_tune else logging.WARNING, "%s: loaded %d tensors of %s; re-made for "
                   "this dataset: %s", key, len(state), path, ", ".join(remade.values()))
    else:
        logger.info("loaded FusionReID weights from %s", path)


def load_model_weights(model: torch.nn.Module, cfg: Mapping[str, Any], path: str, key: str,
                       fine_tune: bool = False) -> None:
    """A train_net.py checkpoint (or a bare state dict) at ``path`` into ``model``, read once (``TEST.WEIGHT``,
    ``MODEL.PRETRAIN_PATH`` with ``MODEL.PRETRAIN_CHOICE self``: ``fine_tune``).

    A checkpoint that stores its config must have been trained with ``cfg``'s architecture: otherwise a
    ``WeightsError`` names ``key`` and every differing key with both values.
    """
    state, config = read_model_file(path, key)
    check_architecture(config, cfg, path, key)
    load_model_state(model, state, path, key, fine_tune=fine_tune)


# ----------------------------------------------------------------------------- a training run's files
class Checkpointer:
    """The checkpoints of one training run in ``output_dir`` (``''``: write nothing, resume nothing).

    Only rank 0 calls the ``save*`` methods; every rank reads with :meth:`resume_state`.
    """

    def __init__(self, output_dir: str):
        self.output_dir = output_dir

    def save(self, epoch: int, state: Mapping[str, Any]) -> Optional[str]:
        """``state`` (the trainer's) as ``checkpoint_epoch{epoch}.pth``, then ``last_checkpoint`` pointing at it."""
        if not self.output_dir:
            return None
        path = save_checkpoint(self.output_dir, epoch, dict(state))
        logger.info("checkpoint saved: %s", path)
        return path

    def save_best(self, model: torch.nn.Module, epoch: int, config: str, metrics: Mapping[str, Any],
                  provenance: Mapping[str, Any]) -> Optional[str]:
        """``model_best.pth``: the model's weights with the epoch, config, metrics and provenance."""
        if not self.output_dir:
            return None
        path = os.path.join(self.output_dir, BEST_CHECKPOINT)
        atomic_torch_save({"model": model.state_dict(), "epoch": int(epoch), "config": config,
                           "metrics": dict(metrics), "provenance": dict(provenance)}, path)
        return path

    def resume_state(self, cfg, model: torch.nn.Module, path: Optional[str] = None
                     ) -> Optional[Tuple[str, Dict[str, Any]]]:
        """``(path, training checkpoint)`` to resume from, its model state already loaded into ``model``, or
        ``None`` when ``output_dir`` holds no checkpoint (``path`` None: the newest usable one, see
        ``utils.checkpoint.load_last_checkpoint``). A checkpoint of another model is refused before anything is
        loaded (:func:`refuse_other_model`)."""
        if path is None:
            found = load_last_checkpoint(self.output_dir) if self.output_dir else None
            if found is None:
                return None
            path, ckpt = found
        else:
            ckpt = load_checkpoint(path, key="resume checkpoint")
        refuse_other_model(ckpt, cfg, model, path)
        warn_resume_differences(stored_config(ckpt), cfg, path)
        load_checked(model, strip_prefix(ckpt["model"]), "--resume", path, "a checkpoint of this model")
        return path, ckpt
