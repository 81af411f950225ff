"""Activation checkpointing (``MODEL.GRAD_CHECKPOINT``) that leaves BatchNorm's running statistics alone.

A checkpointed segment keeps only its inputs in the forward and runs again in the backward to get the
activations its gradients need. Run again as it is, every BatchNorm in train mode would update its
``running_mean``/``running_var`` a second time (momentum applied twice) and count the batch twice in
``num_batches_tracked``. :func:`checkpoint` gives the recomputation a context (``context_fn`` of
``torch.utils.checkpoint``) that puts those buffers back as they were before it. Inside, the layers run
unchanged: the same kernels on the same inputs normalise with the same batch statistics and save the
same tensors for the backward, so outputs and gradients are bit for bit those of the first forward.
(Switching the layers to batch statistics only, ``track_running_stats`` off, is not the same: BatchNorm
then saves fewer tensors and checkpoint's recomputation check fails.) Dropout and drop-path masks are
drawn again from the RNG state saved at the forward (``preserve_rng_state``): the same masks.

The token backbones' blocks (no BatchNorm) use timm's own mechanism, ``set_grad_checkpointing`` and
``timm.models.checkpoint_seq``; the ResNet's blocks and the HTM layers use :func:`checkpoint`. Both end in
``torch.utils.checkpoint.checkpoint`` (non-reentrant), looked up at call time so that tests can count calls.
"""
import contextlib
from functools import partial
from typing import Any, ContextManager, Iterator, Tuple

import torch
import torch.nn as nn
import torch.utils.checkpoint
from torch.nn.modules.batchnorm import _BatchNorm


@contextlib.contextmanager
def running_statistics_kept(module: nn.Module) -> Iterator[None]:
    """Within the context, the BatchNorm layers of ``module`` run as they do (train-mode layers normalise
    with the batch's statistics); on leaving it, also through an exception (the recomputation stops early
    once it has what the backward needs), their ``running_mean``, ``running_var`` and
    ``num_batches_tracked`` are put back to the values they had on entering."""
    saved = [(b, b.clone()) for m in module.modules() if isinstance(m, _BatchNorm)
             for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)


def _contexts(module: nn.Module) -> Tuple[ContextManager, ContextManager]:
    """(forward context, recomputation context) for ``torch.utils.checkpoint``'s ``context_fn``."""
    return contextlib.nullcontext(), running_statistics_kept(module)


def checkpoint(module: nn.Module, *args: Any, **kwargs: Any) -> Any:
    """``module(*args, **kwargs)`` with its activations recomputed in the backward instead of stored.

    Non-reentrant checkpointing; BatchNorm running statistics are updated once (by the forward), the
    RNG state is restored for the recomputation. Call it only when gradients are recorded.
    """
    if torch.compiler.is_compiling():
        # torch.compile recomputes in its backward graph, functionally: buffers are mutated once, by the
        # forward graph; it accepts no context here (only TorchDispatchModes)
        return torch.utils.checkpoint.checkpoint(module, *args, use_reentrant=False, **kwargs)
    return torch.utils.checkpoint.checkpoint(module, *args, use_reentrant=False, preserve_rng_state=True,
                                             context_fn=partial(_contexts, module), **kwargs)


def checkpointing_active(module: nn.Module) -> bool:
    """Whether ``module`` (with a ``grad_checkpointing`` switch) checkpoints now: switched on, in train mode
    and while autograd records. Evaluation, and gradients taken in eval mode (Grad-CAM, whose hooks must
    see each module run once), run plainly; so does TorchScript."""
    return (module.grad_checkpointing and module.training and torch.is_grad_enabled()
            and not torch.jit.is_scripting())
