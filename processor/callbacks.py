"""Trainer callbacks: the seams of the training loop.

A callback is an object with any of these methods (a missing one is not called); ``trainer`` is the
:class:`processor.trainer.Trainer`, on every rank (a callback that writes files checks ``is_main_process()``):

===================================  ========================================================================
``before_train(trainer)``            once, before the first epoch of this process (after any resume)
``before_epoch(trainer, epoch)``     after the epoch's RNG, sampler and LR are set, before its first step
``after_step(trainer, step)``        after each optimizer step; ``step`` is a :class:`StepInfo`
``after_epoch(trainer, epoch, s)``   after the epoch's steps, before evaluation; ``s`` the epoch's averages
``after_evaluation(trainer, ev)``    after each evaluation (the untrained model's too); ``ev`` an
                                     :class:`processor.evaluation.Evaluation`
``after_train(trainer, summary)``    once at the end, also when training stops with an error (``summary`` is
                                     then ``None``)
``state_dict()`` / ``load_state_dict(state)``  what the callback adds to a training checkpoint (under
                                     ``"callbacks"``, by ``name``) and reads back on ``--resume``
===================================  ========================================================================

Callbacks run in the order given. An EMA of the weights, PreciseBN, a per-iteration schedule or another logger
is one class here and one argument of :func:`processor.trainer.build_trainer` (or ``train_net.main``); nothing in
the loop, the checkpoint or the resume changes. :class:`TensorBoard` is the one every run has.
"""
import logging
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional

from utils.distributed import is_main_process

logger = logging.getLogger(__name__)

HOOKS = ("before_train", "before_epoch", "after_step", "after_epoch", "after_evaluation", "after_train")


@dataclass(frozen=True)
class StepInfo:
    """One optimizer step as the trainer saw it: ``epoch`` (1-based), ``iteration`` (1-based within the epoch),
    ``global_step`` ((epoch - 1) * iterations + iteration), ``loss``, ``terms`` ({loss term: value}), ``id_acc``,
    ``lr`` (of the 'weights' group) and ``lrs`` ({group: LR}), all the values this step used, and ``images_per_sec``
    over the epoch so far."""
    epoch: int
    iteration: int
    global_step: int
    loss: float
    terms: Mapping[str, float]
    id_acc: float
    lr: float
    lrs: Mapping[str, float]
    images_per_sec: float


class Callback:
    """Base class (optional: any object with some of the methods works). ``name`` keys its checkpoint state."""

    @property
    def name(self) -> str:
        return type(self).__name__


def callback_name(callback: Any) -> str:
    return getattr(callback, "name", type(callback).__name__)


def check_callbacks(callbacks) -> None:
    """Each callback has at least one hook, and no two share a name (their checkpoint state would collide)."""
    names = [callback_name(c) for c in callbacks]
    for c in callbacks:
        if not any(callable(getattr(c, h, None)) for h in HOOKS + ("state_dict",)):
            raise TypeError(f"callback {callback_name(c)!r} has none of the hooks {', '.join(HOOKS)}")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"two callbacks named {duplicates[0]!r}: give each a distinct 'name'")


def callbacks_state(callbacks) -> Dict[str, Any]:
    """``{name: state}`` of the callbacks that have a non-empty ``state_dict()``."""
    states = {}
    for c in callbacks:
        fn = getattr(c, "state_dict", None)
        state = fn() if callable(fn) else None
        if state:
            states[callback_name(c)] = state
    return states


def load_callbacks_state(callbacks, states: Optional[Mapping[str, Any]], path: str) -> None:
    """Give each callback its state from a checkpoint; a callback with a ``load_state_dict`` but no state in the
    checkpoint (it was added after the checkpoint was written) starts fresh, with a warning."""
    states = dict(states or {})
    for c in callbacks:
        fn = getattr(c, "load_state_dict", None)
        if not callable(fn):
            continue
        name = callback_name(c)
        if name in states:
            fn(states.pop(name))
        else:
            logger.warning("--resume: %s has no state of callback %r; it starts fresh", path, name)
    if states:
        logger.warning("--resume: %s has state of callbacks this run does not have: %s", path, ", ".join(states))


class TensorBoard(Callback):
    """TensorBoard events in ``output_dir`` (rank 0 only), opened when training starts, so that a run that fails
    to set itself up writes no events file.

    Scalars: per step ``train/loss``, ``loss/<term>``, ``train/id_acc``, ``train/lr`` (the 'weights' group) and
    ``train/lr/<group>``, each the value the step used, at the global step; per epoch ``train/images_per_sec``,
    ``train/epoch_loss``, ``train/epoch_id_acc``; per evaluation ``val/<metric>`` of the first test set and, with
    several, ``val/<dataset>/<metric>``, at the epoch (0: the untrained model).
    """

    def __init__(self, output_dir: str):
        self.output_dir = output_dir
        self.writer = None

    def before_train(self, trainer) -> None:
        if self.writer is None and self.output_dir and is_main_process():
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(self.output_dir)

    def after_step(self, trainer, step: StepInfo) -> None:
        if self.writer is None:
            return
        add = self.writer.add_scalar
        add("train/loss", step.loss, step.global_step)
        for name, value in step.terms.items():
            add(f"loss/{name}", value, step.global_step)
        add("train/id_acc", step.id_acc, step.global_step)
        add("train/lr", step.lr, step.global_step)
        for name, value in step.lrs.items():
            add(f"train/lr/{name}", value, step.global_step)

    def after_epoch(self, trainer, epoch: int, stats: Mapping[str, float]) -> None:
        if self.writer is None:
            return
        self.writer.add_scalar("train/images_per_sec", stats["images_per_sec"], epoch)
        self.writer.add_scalar("train/epoch_loss", stats["loss"], epoch)
        self.writer.add_scalar("train/epoch_id_acc", stats["acc"], epoch)

    def after_evaluation(self, trainer, evaluation) -> None:
        if self.writer is None:
            return
        several = len(evaluation.per_dataset) > 1
        for key, value in evaluation.metrics_items():
            self.writer.add_scalar(f"val/{key}", value, evaluation.epoch)
        for name, metrics in evaluation.per_dataset.items() if several else ():
            for key, value in metrics.items():
                self.writer.add_scalar(f"val/{name}/{key}", value, evaluation.epoch)
        self.writer.flush()

    def after_train(self, trainer, summary) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
