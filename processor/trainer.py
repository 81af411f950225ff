"""The training loop: AMP, gradient clipping, DDP, periodic evaluation and checkpoints, resume, and its seams.

One epoch (1-based ``epoch``) is: reseed every RNG with ``epoch_seed(SOLVER.SEED, epoch, rank)``,
``sampler.set_epoch(epoch)``, ``solver.start_epoch(scheduler, epoch)`` (every group's LR set to the one the
epoch trains at: ``solver.scheduler.epoch_t`` decides which scheduler time that is, per SOLVER.SCHEDULE), then
the iterations; the LR logged (log lines, tqdm, TensorBoard ``train/lr`` of the 'weights' group and
``train/lr/<group>`` of every group) is the LR the optimizer steps with. After it: evaluation every
``SOLVER.EVAL_PERIOD`` epochs and at the end, then a checkpoint every ``SOLVER.CHECKPOINT_PERIOD`` epochs and
at the end. Because an epoch depends only on the weights/optimizer/scheduler state and (seed, epoch), a run
resumed from the checkpoint of epoch k ends with exactly the weights of an uninterrupted run (on CPU).

Seams: callbacks (``processor.callbacks``: before/after epoch, after step, after evaluation, and their state in
the checkpoint; TensorBoard is one), the evaluation with its best-model rule (``processor.evaluation.Evaluator``,
shared with test_net.py), the checkpoint files and every way of loading (``model.checkpointer``), and the
builders (:class:`Builders`) that :func:`build_trainer` assembles a :class:`Trainer` from; ``train_net.py`` is
that plus the command line. A loss with parameters of its own is trained with the model and saved with it.
"""
import logging
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm
from yacs.config import CfgNode

from datasets import make_dataloader
from datasets.loader import TestSet
from loss import build_loss
from loss.reid_loss import id_accuracy_tensor
from model import build_model
from model.checkpointer import Checkpointer
from solver import build_optimizer, build_scheduler
from solver.scheduler import base_group_index, start_epoch
from utils import return_large_frees_to_os
from utils.compile import maybe_compile
from utils.distributed import get_rank, get_world_size, is_dist, is_main_process, main_process_first
from utils.errors import FusionReIDError
from utils.misc import autocast, epoch_seed, get_rng_state, make_grad_scaler, resolve_amp, set_rng_state, set_seed
from utils.output_files import RESULTS_FILE
from utils.protocol import log_protocol, pretrained_files, protocol_record
from utils.provenance import collect_provenance, wall_times

from .callbacks import StepInfo, TensorBoard, callbacks_state, check_callbacks, load_callbacks_state
from .evaluation import Evaluation, Evaluator, write_results
from .inference import format_metrics

logger = logging.getLogger(__name__)


class NonFiniteLossError(FusionReIDError, RuntimeError):
    """The training loss became NaN or infinite; the message names the epoch and iteration."""


# ----------------------------------------------------------------------------- model preparation
def convert_sync_bn(model: torch.nn.Module, cfg: CfgNode, device: torch.device) -> torch.nn.Module:
    """BatchNorm -> SyncBatchNorm when ``MODEL.SYNC_BN`` is set and several CUDA processes train.

    PyTorch's SyncBatchNorm runs on CUDA only: on CPU the setting is ignored with a warning.
    """
    if not (cfg.MODEL.SYNC_BN and is_dist()):
        return model
    if torch.device(device).type != "cuda":
        logger.warning("MODEL.SYNC_BN needs CUDA; keeping per-process BatchNorm on %s", device)
        return model
    logger.info("BatchNorm layers converted to SyncBatchNorm")
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)


def wrap_ddp(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``model`` in ``DistributedDataParallel`` when a process group exists (else unchanged).

    ``find_unused_parameters`` stays off: every parameter of the model receives a gradient.
    """
    if not is_dist():
        return model
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, output_device=ids[0] if ids else None)


# ----------------------------------------------------------------------------- small pieces
class AverageMeter:
    """Running mean of a scalar."""

    def __init__(self):
        self.total, self.count = 0.0, 0

    def update(self, value: float, n: int = 1) -> None:
        self.total += float(value) * n
        self.count += n

    @property
    def avg(self) -> float:
        return self.total / max(self.count, 1)


def group_lrs(optimizer: torch.optim.Optimizer) -> "OrderedDict[str, float]":
    """The LR each group of ``optimizer`` steps with now, by group name (``group<i>`` for unnamed groups)."""
    return OrderedDict((g.get("name") or f"group{i}", float(g["lr"])) for i, g in enumerate(optimizer.param_groups))


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    """The base LR the optimizer steps with now: that of the 'weights' group (else the first group)."""
    return float(optimizer.param_groups[base_group_index(optimizer)]["lr"])


def lr_text(optimizer: torch.optim.Optimizer) -> str:
    """``lr <base>`` and, with several groups, ``(<group> <lr>, ...)`` of the others, as logged."""
    base = base_group_index(optimizer)
    others = [f"{name} {v:.4e}" for i, (name, v) in enumerate(group_lrs(optimizer).items()) if i != base]
    return f"lr {current_lr(optimizer):.4e}" + (f" ({', '.join(others)})" if others else "")


def _set_sampler_epoch(loader, epoch):
    """``set_epoch(epoch)`` on the loader's sampler/batch sampler, whichever has it, and on the loader itself
    when it has one (an iterable of batches that draws them per epoch)."""
    for obj in (getattr(loader, "batch_sampler", None), getattr(loader, "sampler", None), loader):
        if obj is not None and hasattr(obj, "set_epoch"):
            obj.set_epoch(epoch)


def _to_host_with_finite_flag(values: torch.Tensor) -> torch.Tensor:
    """``values`` (1-d, on the device) on the host with one element appended: 1.0 when ``values[0]`` is
    finite on every rank, else 0.0 (all ranks must agree before stopping).

    One device-to-host copy: the flag is all-reduced on the device (NCCL) before the copy; with gloo it is
    all-reduced on the host after it.
    """
    flag = torch.isfinite(values[:1]).to(torch.float32)
    nccl = is_dist() and dist.get_backend() == "nccl"
    if nccl:
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    host = torch.cat([values.float(), flag]).cpu()
    if is_dist() and not nccl:
        flag = host[-1:].clone()
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        host[-1] = flag[0]
    return host


def _all_reduce_grads(parameters: Sequence[torch.nn.Parameter]) -> None:
    """The mean gradient over processes of parameters that DDP does not see (the loss's own)."""
    if not is_dist():
        return
    world = get_world_size()
    for p in parameters:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad.div_(world)


# ----------------------------------------------------------------------------- trainer
class Trainer:
    """Trains a FusionReID model and evaluates it; only rank 0 writes files, logs and TensorBoard.

    Args:
        cfg: the frozen config.
        model: the model, already on ``device`` (SyncBN converted if wanted), not yet DDP-wrapped.
        loss_fn: ``(outputs, pids) -> (total, terms)`` (see ``loss.build_loss``); when it is a module with
            parameters, the optimizer must hold them (``solver.build_optimizer(cfg, model, loss_fn)``): they are
            averaged over processes, clipped with the model's and saved in the checkpoint (``"loss"``).
        optimizer, scheduler: from ``solver``; the scheduler is stepped with ``solver.start_epoch``.
        train_loader, val_loader, num_query: from ``datasets.make_dataloader``.
        device: ``torch.device`` of this process.
        test_sets: every test set (``DataLoaders.test_sets``); default: one, ``val_loader`` with
            ``num_query`` queries, named by the first of ``DATASETS.TEST_NAMES`` (``load_cfg``: ``NAMES`` if empty),
            camids as the model's.
        fingerprints: every dataset read (``DataLoaders.fingerprints``), recorded in the provenance and checked
            for the paper's protocol with the pretrained files (``utils.protocol``), which is logged once here.
        callbacks: extra callbacks (``processor.callbacks``), called after the TensorBoard one, in order.
        evaluator: default ``Evaluator(cfg, test_sets, device, amp)`` (best model by ``SOLVER.BEST_METRIC``).
        checkpointer: default ``Checkpointer(cfg.OUTPUT_DIR)``.
    """

    def __init__(self, cfg: CfgNode, model: torch.nn.Module, loss_fn: Callable, optimizer: torch.optim.Optimizer,
                 scheduler: Any, train_loader: DataLoader, val_loader: Optional[DataLoader], num_query: int,
                 device: torch.device, test_sets: Optional[Sequence[TestSet]] = None,
                 fingerprints: Optional[Mapping[str, Mapping[str, Any]]] = None, *,
                 callbacks: Sequence[Any] = (), evaluator: Optional[Evaluator] = None,
                 checkpointer: Optional[Checkpointer] = None):
        self.cfg = cfg
        self.model = model
        # MODEL.COMPILE: the DDP-wrapped module is compiled (PyTorch's guidance for DDP), and the bare model
        # for evaluation; checkpoints are written from self.model, whose keys never change
        self.net = maybe_compile(wrap_ddp(model, device), cfg.MODEL.COMPILE)
        self.eval_model = maybe_compile(model, cfg.MODEL.COMPILE)
        self.loss_fn = loss_fn
        self.loss_params = [p for p in loss_fn.parameters() if p.requires_grad] \
            if isinstance(loss_fn, torch.nn.Module) else []
        self.optimizer = optimizer
        self.scheduler = scheduler
        self._check_optimizer_holds_loss_params()
        self.clipped_params = list(model.parameters()) + self.loss_params  # SOLVER.GRAD_CLIP's norm spans both
        self.train_loader = train_loader
        self.test_sets = tuple(test_sets or (TestSet(cfg.DATASETS.TEST_NAMES[0], val_loader, num_query, 0),))
        self.device = device
        # images reach the model in its parameters' dtype: float32 as a rule, float64 for reference runs
        self.input_dtype = next(model.parameters()).dtype
        self.amp = resolve_amp(cfg.SOLVER.AMP, device)
        self.scaler = make_grad_scaler(self.amp)
        self.evaluator = evaluator or Evaluator(cfg, self.test_sets, device, self.amp)
        self.checkpointer = checkpointer or Checkpointer(cfg.OUTPUT_DIR)
        self.callbacks = [TensorBoard(cfg.OUTPUT_DIR)] + list(callbacks)
        check_callbacks(self.callbacks)
        if cfg.MODEL.GRAD_CHECKPOINT and torch.device(device).type == "cpu" and return_large_frees_to_os():
            # memory asked for over time: freed activations leave the process instead of fragmenting its heap
            logger.info("MODEL.GRAD_CHECKPOINT on CPU: CPU blocks of 4 MiB or more go back to the system when "
                        "freed (glibc mmap threshold; MALLOC_MMAP_THRESHOLD_ in the environment chooses another)")
        self.output_dir = cfg.OUTPUT_DIR
        self.max_epochs = cfg.SOLVER.MAX_EPOCHS
        self.start_epoch = 1
        # provenance (utils/provenance.py), written into results.json and every checkpoint; the command
        # line is sys.argv unless set_command gives the one train_net.main was called with
        self.run_info = collect_provenance(device, self.amp, get_world_size(), command=list(sys.argv))
        self.run_info["datasets"] = dict(fingerprints or {})
        self.run_info["pretrained"] = pretrained_files(cfg)
        self.run_info["protocol"] = protocol_record(cfg, self.amp.name, torch.device(device).type, get_world_size(),
                                                    self.run_info["datasets"], self.run_info["pretrained"])
        self.train_seconds = 0.0        # wall time of the training epochs so far (over resumes)
        self.eval_seconds_last = None   # wall time of the last evaluation
        self.eval_seconds_total = 0.0   # wall time of all evaluations so far (over resumes)
        logger.info("AMP: %s%s; gradient clipping: %s; %d process(es)", self.amp.name,
                    " with GradScaler" if self.amp.use_scaler else "",
                    cfg.SOLVER.GRAD_CLIP or "off", get_world_size())
        logger.info("code: git commit %s%s", self.run_info["git_commit"] or "unknown (not a git checkout)",
                    " with uncommitted changes" if self.run_info["git_dirty"] else "")
        log_protocol(self.run_info["protocol"])

    def _check_optimizer_holds_loss_params(self) -> None:
        held = {id(p) for g in self.optimizer.param_groups for p in g["params"]}
        if any(id(p) not in held for p in self.loss_params):
            raise ValueError("the loss has parameters that the optimizer does not hold: build the optimizer with "
                             "solver.build_optimizer(cfg, model, loss_fn)")

    @property
    def latest(self) -> Optional[Dict[str, Any]]:
        """The results.json entry of the newest evaluation (``processor.evaluation.Evaluation.entry``)."""
        return self.evaluator.latest

    @property
    def best(self) -> Optional[Dict[str, Any]]:
        """The results.json entry of the best evaluation (the evaluator's ``BestModelRule``)."""
        return self.evaluator.best

    def _call(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            fn = getattr(callback, hook, None)
            if callable(fn):
                fn(self, *args)

    # -------------------------------------------------------------------- state
    def set_command(self, command: Sequence[str]) -> None:
        """The command line recorded in the provenance (``utils.provenance.command_line``)."""
        self.run_info["command"] = [str(a) for a in command]

    def provenance(self) -> Dict[str, Any]:
        """Command line, code version, library versions, device, AMP, world size, wall times (seconds), the
        datasets' fingerprints, the pretrained files' SHA-256 and the paper-protocol record of this run, as written
        under ``"provenance"`` into results.json and the checkpoints."""
        return dict(self.run_info, command=list(self.run_info["command"]),
                    versions=dict(self.run_info["versions"]),
                    wall_time_s=wall_times(self.train_seconds, self.eval_seconds_last, self.eval_seconds_total))

    def state_dict(self, epoch: int) -> Dict[str, Any]:
        """Everything needed to continue after ``epoch`` (loadable with ``weights_only=True``): ``"loss"`` when
        the loss has state, ``"callbacks"`` when a callback has."""
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": int(epoch),
            "rng": get_rng_state(),
            "config": self.cfg.dump(),
            **self.evaluator.state_dict(),
            "provenance": self.provenance(),
        }
        loss_state = self.loss_fn.state_dict() if isinstance(self.loss_fn, torch.nn.Module) else {}
        if loss_state:
            state["loss"] = loss_state
        callbacks = callbacks_state(self.callbacks)
        if callbacks:
            state["callbacks"] = callbacks
        return state

    def resume_last(self) -> Optional[str]:
        """Continue from the newest usable checkpoint of OUTPUT_DIR.

        See ``utils.checkpoint.load_last_checkpoint``: a missing or unreadable ``last_checkpoint``
        target falls back to the newest loadable checkpoint with a warning. Returns its path, or
        ``None`` (nothing resumed) when the folder holds no checkpoint file.
        """
        found = self.checkpointer.resume_state(self.cfg, self.model)
        if found is None:
            return None
        self._restore(*found)
        return found[0]

    def resume(self, path: str) -> None:
        """Continue from the training checkpoint at ``path`` (model, optimizer, scheduler, scaler, RNG, metrics,
        the loss's and the callbacks' state); one of another model is refused before anything is loaded."""
        self._restore(*self.checkpointer.resume_state(self.cfg, self.model, path))

    def _restore(self, path: str, ckpt: Mapping[str, Any]) -> None:
        """Everything but the model (loaded by the checkpointer) from the training checkpoint ``ckpt``."""
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        if isinstance(self.loss_fn, torch.nn.Module) and self.loss_fn.state_dict():
            if "loss" in ckpt:
                self.loss_fn.load_state_dict(ckpt["loss"])
            else:
                logger.warning("--resume: %s has no state of the loss; its parameters start fresh", path)
        load_callbacks_state(self.callbacks, ckpt.get("callbacks"), path)
        if "rng" in ckpt:
            set_rng_state(ckpt["rng"])
        self.evaluator.load_state_dict(ckpt)
        times = (ckpt.get("provenance") or {}).get("wall_time_s") or {}  # checkpoints before provenance: none
        self.train_seconds = float(times.get("train") or 0.0)
        self.eval_seconds_last = times.get("eval_last")
        self.eval_seconds_total = float(times.get("eval_total") or 0.0)
        self.start_epoch = int(ckpt["epoch"]) + 1
        start_epoch(self.scheduler, self.start_epoch)  # the optimizer at the LR of the epoch to come
        logger.info("resumed from %s (epoch %d); continuing at epoch %d", path, ckpt["epoch"], self.start_epoch)

    # -------------------------------------------------------------------- loop
    def train(self) -> Dict[str, Any]:
        """Train from ``start_epoch`` to ``SOLVER.MAX_EPOCHS``.

        Returns:
            ``{'latest', 'best'}`` metrics (as in results.json), ``'untrained'``: the metrics of the
            model before training (fresh starts only, else None), ``'epochs'``: the per-epoch
            training averages (loss, acc, each loss term) of this run.
        """
        cfg = self.cfg
        summary = {"latest": self.latest, "best": self.best, "untrained": None, "epochs": []}
        if self.start_epoch > self.max_epochs:
            logger.info("nothing to do: the checkpoint already has %d of %d epochs", self.start_epoch - 1,
                        self.max_epochs)
            return summary
        self._call("before_train")
        done = None
        try:
            if self.start_epoch == 1:
                # The untrained model's accuracy: the reference point of every later evaluation.
                summary["untrained"] = self.evaluate(0, record=False)
            start = time.perf_counter()
            for epoch in range(self.start_epoch, self.max_epochs + 1):
                epoch_start = time.perf_counter()
                summary["epochs"].append(dict(self.train_one_epoch(epoch), epoch=epoch))
                self.train_seconds += time.perf_counter() - epoch_start
                last = epoch == self.max_epochs
                if last or epoch % cfg.SOLVER.EVAL_PERIOD == 0:
                    self.evaluate(epoch)
                if last or epoch % cfg.SOLVER.CHECKPOINT_PERIOD == 0:
                    self.save(epoch)
            logger.info("training done in %.1f min", (time.perf_counter() - start) / 60)
            if self.best is not None:
                logger.info("best (epoch %d): %s", self.best["epoch"], format_metrics(self.best))
            summary.update(latest=self.latest, best=self.best)
            done = summary
        finally:
            self._call("after_train", done)
        return summary

    def train_one_epoch(self, epoch: int) -> Dict[str, float]:
        """One pass over the train loader (``epoch`` is 1-based)."""
        cfg = self.cfg
        set_seed(epoch_seed(cfg.SOLVER.SEED, epoch, get_rank()))
        _set_sampler_epoch(self.train_loader, epoch)
        start_epoch(self.scheduler, epoch)
        self.net.train()
        self._call("before_epoch", epoch)
        meters = OrderedDict(loss=AverageMeter(), acc=AverageMeter())
        num_iters = len(self.train_loader)
        world = get_world_size()
        images_seen, t0 = 0, time.perf_counter()
        bar = tqdm(self.train_loader, total=num_iters, desc=f"epoch {epoch}/{self.max_epochs}", leave=False,
                   dynamic_ncols=True, disable=None if is_main_process() else True)
        for it, (images, pids, camids, _) in enumerate(bar, start=1):
            loss, terms, acc = self.train_step(images, pids, camids, epoch, it)
            images_seen += images.shape[0] * world
            speed = images_seen / max(time.perf_counter() - t0, 1e-9)
            meters["loss"].update(loss, images.shape[0])
            meters["acc"].update(acc, images.shape[0])
            for name, value in terms.items():
                meters.setdefault(name, AverageMeter()).update(value, images.shape[0])
            lrs, lr = group_lrs(self.optimizer), current_lr(self.optimizer)  # those the step just used
            bar.set_postfix(loss=f"{loss:.3f}", acc=f"{acc:.3f}", lr=f"{lr:.2e}", img_s=f"{speed:.0f}", refresh=False)
            self._call("after_step", StepInfo(epoch, it, (epoch - 1) * num_iters + it, loss, terms, acc, lr, lrs,
                                              speed))
            if cfg.SOLVER.LOG_PERIOD and it % cfg.SOLVER.LOG_PERIOD == 0:
                logger.info("epoch %d/%d iter %d/%d: loss %.3f, acc %.3f, %s, %.0f images/s", epoch, self.max_epochs,
                            it, num_iters, meters["loss"].avg, meters["acc"].avg, lr_text(self.optimizer), speed)
        bar.close()
        elapsed = time.perf_counter() - t0
        speed = images_seen / max(elapsed, 1e-9)
        logger.info("epoch %d/%d: loss %.3f, acc %.3f, %s, %.1fs, %.0f images/s", epoch, self.max_epochs,
                    meters["loss"].avg, meters["acc"].avg, lr_text(self.optimizer), elapsed, speed)
        stats = OrderedDict((name, m.avg) for name, m in meters.items())
        self._call("after_epoch", epoch, dict(stats, images_per_sec=speed))
        return stats

    def train_step(self, images: torch.Tensor, pids: torch.Tensor, camids: torch.Tensor, epoch: int,
                   it: int) -> Tuple[float, Dict[str, float], float]:
        """Forward, loss, backward (scaled), optional clipping, optimizer step.

        The gradients are released before the forward (not kept alive through it), and the loss, its terms
        and the ID accuracy reach the host in one copy, after the backward is queued and before any update.

        Returns:
            (loss, {term: value}, id accuracy) as Python floats.
        Raises:
            NonFiniteLossError: the loss is NaN/inf on some rank (checked before any update).
        """
        images = images.to(self.device, self.input_dtype, non_blocking=True)
        pids = pids.to(self.device, non_blocking=True)
        camids = camids.to(self.device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.amp):
            outputs = self.net(images, camids)
            loss, terms = self.loss_fn(outputs, pids)
        self.scaler.scale(loss).backward()
        values = _to_host_with_finite_flag(torch.stack(
            [loss.detach().float()] + [v.detach().float() for v in terms.values()]
            + [id_accuracy_tensor(outputs, pids)]))
        value = float(values[0])
        if not values[-1]:
            raise NonFiniteLossError(
                f"non-finite training loss ({value} on rank {get_rank()}) at epoch {epoch}, iteration {it}"
                f"/{len(self.train_loader)}; stopped without updating the weights. Lower SOLVER.BASE_LR, set "
                f"SOLVER.GRAD_CLIP or SOLVER.AMP off; the last good checkpoint is left in {self.output_dir}")
        _all_reduce_grads(self.loss_params)
        if self.cfg.SOLVER.GRAD_CLIP > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.clipped_params, self.cfg.SOLVER.GRAD_CLIP)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        term_values = OrderedDict(zip(terms, values[1:len(terms) + 1].tolist()))
        return value, term_values, float(values[-2])

    # -------------------------------------------------------------------- evaluation / checkpoints
    def evaluate(self, epoch: int, record: bool = True) -> Dict[str, Any]:
        """Evaluate on every test set (all ranks, ``Evaluator.evaluate``); rank 0 logs, and with ``record`` writes
        results.json and, when the evaluator's rule says it is the best so far, model_best.pth.

        Returns the results entry (``Evaluation.entry``): the first test set's metrics, ``epoch`` and
        ``per_dataset``. ``record=False`` (the untrained model at epoch 0) only logs and calls the callbacks.
        """
        label = "validation, untrained model" if epoch == 0 else f"validation, epoch {epoch}"
        evaluation: Evaluation = self.evaluator.evaluate(self.eval_model, epoch, label)
        self.eval_seconds_last = evaluation.seconds
        self.eval_seconds_total += evaluation.seconds
        self._call("after_evaluation", evaluation)
        if not record:
            return evaluation.entry()
        improved = self.evaluator.record(evaluation)
        if is_main_process() and self.output_dir:
            provenance = self.provenance()
            if improved:
                self.checkpointer.save_best(self.model, epoch, self.cfg.dump(), self.latest, provenance)
            write_results(self.output_dir, self.evaluator.results(provenance), RESULTS_FILE)
        return self.latest

    def save(self, epoch: int) -> None:
        """The checkpoint of ``epoch`` (rank 0), atomically; other ranks wait for it."""
        if is_main_process() and self.checkpointer.output_dir:  # no state gathered for a run that writes nothing
            self.checkpointer.save(epoch, self.state_dict(epoch))
        if is_dist():
            dist.barrier()


# ----------------------------------------------------------------------------- assembling a run
@dataclass(frozen=True)
class Builders:
    """What :func:`build_trainer` builds a run from; replace one to change that piece (another loss, a scripted
    one in a test) without patching any module: ``Builders(loss=my_build_loss)``.

    ``data(cfg)`` -> ``datasets.DataLoaders``; ``model(cfg, num_classes, num_cams)``; ``loss(cfg, num_classes)``;
    ``optimizer(cfg, model, loss)``; ``scheduler(cfg, optimizer)``.
    """
    data: Callable = make_dataloader
    model: Callable = build_model
    loss: Callable = build_loss
    optimizer: Callable = build_optimizer
    scheduler: Callable = build_scheduler


def build_trainer(cfg: CfgNode, device: torch.device, builders: Builders = Builders(),
                  callbacks: Sequence[Any] = ()) -> Trainer:
    """Data, model, loss, optimizer and scheduler of ``cfg`` (made by ``builders``), assembled into a
    :class:`Trainer` with ``callbacks``."""
    # each node's local rank 0 generates/checks the data before that node's other ranks read them
    with main_process_first(local=True):
        data = builders.data(cfg)
    logger.info("data: %d train identities, %d cameras, %d train batches/epoch; test: %s", data.num_classes,
                data.num_cams, len(data.train_loader),
                ", ".join(f"{t.name} {t.num_query} query + {len(t.loader.dataset) - t.num_query} gallery images"
                          for t in data.test_sets))
    model = builders.model(cfg, data.num_classes, data.num_cams).to(device)
    model = convert_sync_bn(model, cfg, device)
    logger.info("model: %.2fM parameters", sum(p.numel() for p in model.parameters()) / 1e6)
    loss_fn = builders.loss(cfg, data.num_classes)
    if isinstance(loss_fn, torch.nn.Module):
        loss_fn = loss_fn.to(device)
    optimizer = builders.optimizer(cfg, model, loss_fn)
    scheduler = builders.scheduler(cfg, optimizer)
    return Trainer(cfg, model, loss_fn, optimizer, scheduler, data.train_loader, data.val_loader, data.num_query,
                   device, data.test_sets, data.fingerprints, callbacks=callbacks)
