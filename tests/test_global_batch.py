"""Any number of processes computes the one-process batch (MODEL.TRIPLET_BATCH 'global', the default).

Two gloo processes with 8 images each (whole identities, as the P x K sampler splits a batch) run one real
``Trainer.train_step`` under DDP; one process runs the same step on all 16 images. The mean of the two
processes' losses equals the one-process loss, and DDP's averaged gradients equal the one-process
gradients, to 1e-6 relative (float64). BatchNorm is frozen (eval mode) in both: PyTorch's SyncBatchNorm,
which makes BatchNorm span the processes on CUDA (``MODEL.SYNC_BN``, default on), does not run on CPU.
With ``MODEL.TRIPLET_BATCH per_process`` each process mines among its own 8 images: a different objective,
and the test shows the difference (so the comparison can fail).
"""
import os

import pytest
import torch
import torch.multiprocessing as mp
from torch.nn.modules.batchnorm import _BatchNorm

from helpers import free_port, tiny_cfg
from toys import ScaledLoss

WORLD, P, K, NUM_CLASSES, NUM_CAMS = 2, 4, 4, 6, 3


def _batch():
    g = torch.Generator().manual_seed(5)
    images = torch.randn(P * K, 3, 64, 32, generator=g, dtype=torch.float64)
    pids = torch.arange(P).repeat_interleave(K)  # process r gets identities 2r and 2r + 1
    return images, pids, torch.randint(0, NUM_CAMS, (P * K,), generator=g)


def _step(mining, rank=0, world=1, scaled_loss=False):
    """One training step of this process's share of the batch: (loss, {name: gradient as applied}), the loss's
    own parameter (``loss.log_scale`` of tests/toys.py ScaledLoss) included with ``scaled_loss``."""
    from loss import build_loss
    from model import build_model
    from processor.trainer import Trainer
    from solver import build_optimizer, build_scheduler

    cfg = tiny_cfg("MODEL.DEVICE", "cpu", "MODEL.TRIPLET_BATCH", mining, "SOLVER.IMS_PER_BATCH", str(P * K),
                   "DATALOADER.NUM_INSTANCE", str(K), "OUTPUT_DIR", "")
    torch.manual_seed(0)
    model = build_model(cfg, NUM_CLASSES, NUM_CAMS).double()
    loss_fn = ScaledLoss(cfg, NUM_CLASSES).double() if scaled_loss else build_loss(cfg, NUM_CLASSES)
    optimizer = build_optimizer(cfg, model, loss_fn)
    trainer = Trainer(cfg, model, loss_fn, optimizer, build_scheduler(cfg, optimizer), [],
                      None, 0, torch.device("cpu"), test_sets=[object()])
    named = dict(model.named_parameters())
    if scaled_loss:
        named.update(loss_fn.named_parameters(prefix="loss"))
    trainer.net.train()
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            m.eval()
    grads, step = {}, optimizer.step

    def recording_step(*args, **kwargs):
        grads.update({n: p.grad.detach().clone() for n, p in named.items() if p.grad is not None})
        return step(*args, **kwargs)

    optimizer.step = recording_step
    images, pids, camids = (t.chunk(world)[rank] for t in _batch())
    loss, _, _ = trainer.train_step(images, pids, camids, 1, 1)
    return loss, grads


def _worker(rank, port, mining, result_dir, scaled_loss=False):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from utils.distributed import cleanup_distributed, init_distributed
    init_distributed(torch.device("cpu"))
    try:
        loss, grads = _step(mining, rank, WORLD, scaled_loss)
        torch.save({"loss": loss, "grads": grads}, os.path.join(result_dir, f"rank{rank}.pt"))
    finally:
        cleanup_distributed()


def _two_processes(mining, tmp_path, scaled_loss=False):
    out = tmp_path / f"{mining}{'_scaled' if scaled_loss else ''}"
    out.mkdir()
    mp.spawn(_worker, args=(free_port(), mining, str(out), scaled_loss), nprocs=WORLD, join=True)
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    for name, g in ranks[0]["grads"].items():  # DDP: every process applies the same averaged gradient
        assert torch.equal(g, ranks[1]["grads"][name]), name
    return sum(r["loss"] for r in ranks) / WORLD, ranks[0]["grads"]


def _relative_differences(grads, reference):
    scale = max(float(g.abs().max()) for g in reference.values())
    return {n: float((grads[n] - g).abs().max()) / max(float(g.abs().max()), 1e-6 * scale)
            for n, g in reference.items()}


@pytest.fixture(scope="module")
def one_process():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _step("global")
    finally:
        torch.set_num_threads(threads)


def test_two_processes_compute_the_one_process_batch(tmp_path, one_process):
    loss, grads = _two_processes("global", tmp_path)
    ref_loss, ref_grads = one_process
    assert abs(loss - ref_loss) <= 1e-6 * abs(ref_loss), (loss, ref_loss)
    assert grads.keys() == ref_grads.keys()
    worst = _relative_differences(grads, ref_grads)
    bad = {n: d for n, d in worst.items() if d > 1e-6}
    assert not bad, bad
    print(f"loss {loss!r} vs {ref_loss!r}; largest relative gradient difference {max(worst.values()):.2e}")


def test_per_process_mining_is_another_objective(tmp_path, one_process):
    loss, grads = _two_processes("per_process", tmp_path)
    ref_loss, ref_grads = one_process
    worst = _relative_differences(grads, ref_grads)
    assert abs(loss - ref_loss) > 1e-4 * abs(ref_loss) or max(worst.values()) > 1e-3
    print(f"per_process: loss {loss!r} vs {ref_loss!r}; largest relative gradient difference "
          f"{max(worst.values()):.2e}")


def test_a_loss_parameter_gets_the_one_process_gradient(tmp_path):
    """A loss's own parameter is outside DDP: the trainer averages its gradient over the processes, so every
    process applies the same gradient (checked in _two_processes), and it is the one-process gradient."""
    loss, grads = _two_processes("global", tmp_path, scaled_loss=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ref_loss, ref_grads = _step("global", scaled_loss=True)
    finally:
        torch.set_num_threads(threads)
    assert "loss.log_scale" in grads and float(grads["loss.log_scale"]) != 0.0
    assert abs(loss - ref_loss) <= 1e-6 * abs(ref_loss)
    worst = _relative_differences(grads, ref_grads)
    assert worst["loss.log_scale"] <= 1e-6 and max(worst.values()) <= 1e-6, max(worst.values())
