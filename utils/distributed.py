"""Distributed data parallel helpers: process-group setup from the environment, rank queries and
gathering tensors of different lengths.

``torchrun --nproc_per_node=N train_net.py ...`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed` reads them (no extra flag). A plain
``python train_net.py`` runs as a single process with every helper below degrading to a no-op.

Global and local ranks. With ``torchrun --nnodes N --nproc_per_node M`` the *global* rank (``RANK``,
:func:`get_rank`) runs over 0..N*M-1 and the *local* rank (``LOCAL_RANK``, :func:`get_local_rank`) over
0..M-1 on every node. The local rank only selects this process's GPU (``resolve_device``); everything
that must happen once per job (sampler shards, seeds, checkpoints, results.json, TensorBoard, the log
file) uses the global rank, so ``OUTPUT_DIR`` is written by global rank 0 alone even when the nodes
share a filesystem. Data preparation is per node (``main_process_first(local=True)``): each node's local
rank 0 prepares its own copy, since nodes need not share a filesystem (where they do, the synthetic
dataset's generator writes atomically, so concurrent preparation is safe).
"""
import contextlib
import datetime
import logging
import os
from typing import Iterator

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


def is_dist():
    """True when a process group is initialised with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank():
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size():
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process():
    return get_rank() == 0


def env_world_size():
    """The world size set by the launcher (1 when not launched by torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def env_local_rank() -> int:
    """``LOCAL_RANK`` as set by the launcher: this process's index on its node (0 when not set)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def get_local_rank() -> int:
    """This process's rank on its node: ``LOCAL_RANK`` when the launcher set it, else the global rank.

    Without ``LOCAL_RANK`` (a process group set up by hand) all processes are taken to be on one node.
    """
    if "LOCAL_RANK" in os.environ:
        return env_local_rank()
    return get_rank()


def is_local_main_process() -> bool:
    """True on local rank 0 of every node (on every process that runs alone)."""
    return get_local_rank() == 0


def init_distributed(device):
    """Initialise the default process group when launched with WORLD_SIZE > 1.

    Args:
        device: the ``torch.device`` of this process; CUDA selects the ``nccl`` backend, CPU ``gloo``.
    Returns:
        True when a process group was created.
    """
    if env_world_size() <= 1 or (dist.is_available() and dist.is_initialized()):
        return False
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
    kwargs = {"backend": backend, "init_method": "env://", "timeout": datetime.timedelta(minutes=30)}
    if backend == "nccl":
        kwargs["device_id"] = torch.device(device)
    dist.init_process_group(**kwargs)
    logger.info("process group: backend %s, rank %d of %d", backend, dist.get_rank(), dist.get_world_size())
    return True


def cleanup_distributed():
    """Destroy the default process group if one exists."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def main_process_first(local: bool = False) -> Iterator[None]:
    """Run the block on the main process first, then on the other ranks (e.g. preparing data once).

    Args:
        local: False: global rank 0 runs the block first (something written once for the whole job).
            True: local rank 0 of *every node* runs it first, concurrently across nodes (something each
            node needs its own copy of, such as a dataset, as nodes need not share a filesystem); the
            other ranks wait for all of them. Every rank must enter the block (one barrier each).
    """
    first = is_local_main_process() if local else is_main_process()
    if is_dist() and not first:
        dist.barrier()
    try:
        yield
    finally:
        if is_dist() and first:
            dist.barrier()


def _comm_device():
    """Device whose tensors the backend communicates (CUDA for nccl, CPU otherwise)."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_gather_variable(tensor):
    """Gather a tensor whose first dimension differs between ranks.

    Each rank sends its length, the tensors are padded to the longest along dim 0, gathered, and the
    padding is cut off again.

    Returns:
        The list of every rank's tensor, in rank order, on ``tensor``'s device (just ``[tensor]``
        without a process group).
    """
    if not is_dist():
        return [tensor]
    dev = _comm_device()
    local = tensor.to(dev).contiguous()
    size = torch.tensor([local.shape[0]], dtype=torch.int64, device=dev)
    sizes = [torch.zeros_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, size)
    sizes = [int(s.item()) for s in sizes]
    longest = max(sizes)
    if local.shape[0] < longest:
        pad = local.new_zeros((longest - local.shape[0],) + tuple(local.shape[1:]))
        local = torch.cat([local, pad], dim=0)
    buffers = [torch.empty_like(local) for _ in sizes]
    dist.all_gather(buffers, local)
    return [buf[:n].to(tensor.device) for buf, n in zip(buffers, sizes)]


class _AllGatherWithGrad(torch.autograd.Function):
    """Concatenation of every rank's equal-sized tensor along dim 0; the backward hands each rank the sum over
    all ranks of the gradient of its own slice (every rank's loss may depend on every slice)."""

    @staticmethod
    def forward(ctx, tensor):
        ctx.rank, ctx.rows = dist.get_rank(), tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)  # all-reduce, not reduce-scatter: gloo has no reduce-scatter
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


def all_gather_with_grad(tensor):
    """Every rank's ``tensor`` (the same shape on every rank) concatenated along dim 0 in rank order, with
    gradients flowing back to the rank each slice came from; ``tensor`` itself without a process group."""
    if not is_dist():
        return tensor
    return _AllGatherWithGrad.apply(tensor)


def all_gather_cat(tensor):
    """:func:`all_gather_variable` concatenated along dim 0 in rank order."""
    return torch.cat(all_gather_variable(tensor), dim=0)


@torch.no_grad()
def broadcast_buffers(module, src=0):
    """Copy every buffer of ``module`` (e.g. BatchNorm running statistics) from rank ``src`` to all ranks.

    DDP syncs buffers only at the start of a training forward, so after the last training step every
    rank holds its own running statistics; an evaluation must use rank ``src``'s (those it saves).
    """
    if not is_dist():
        return
    dev = _comm_device()
    for buf in module.buffers():
        data = buf.detach().to(dev)
        dist.broadcast(data, src=src)
        if data is not buf:
            buf.copy_(data)


def broadcast_object(obj, src=0):
    """``obj`` from rank ``src`` on every rank (picklable objects only)."""
    if not is_dist():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, device=_comm_device())
    return box[0]


def unwrap_model(model):
    """The module inside ``DistributedDataParallel`` / ``DataParallel`` wrappers (or ``model`` itself)."""
    while isinstance(model, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)):
        model = model.module
    return model
