"""Two-process DDP on CPU (gloo, 127.0.0.1): parameters agree across ranks after training, and the
sharded evaluation gives exactly the metrics of a single-process evaluation of the same weights."""
import json
import os

import torch
import torch.multiprocessing as mp
from helpers import TINY_CONFIG as TINY
from helpers import free_port

WORLD = 2


def opts(data_root, output_dir):
    # 15 test identities: 91 val images, so the two shards differ in length (46 / 45). One image per
    # eval batch: CPU kernels may round differently for other batch sizes, which is not what is tested.
    # MODEL.SYNC_BN is ignored on CPU (with a warning), as PyTorch's SyncBatchNorm is CUDA-only.
    return ["TEST.IMS_PER_BATCH", "1", "DATASETS.ROOT_DIR", str(data_root), "OUTPUT_DIR", str(output_dir),
            "DATASETS.SYNTHETIC.NUM_TEST_IDS", "15", "SOLVER.MAX_EPOCHS", "1", "SOLVER.WARMUP_EPOCHS", "0",
            "MODEL.SYNC_BN", "True"]


def _worker(rank, port, data_root, output_dir, result_dir):
    """One rank: the train_net.py code path with the process group taken from the environment."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from processor import build_trainer
    from processor.cli import RunContext
    from utils.distributed import get_world_size

    with RunContext(TINY, opts(data_root, output_dir), "train.log") as ctx:
        assert get_world_size() == WORLD
        trainer = build_trainer(ctx.cfg, ctx.device)
        summary = trainer.train()
        params = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
        torch.save(params, os.path.join(result_dir, f"params{rank}.pt"))
        with open(os.path.join(result_dir, f"metrics{rank}.json"), "w", encoding="utf-8") as f:
            json.dump(summary["latest"], f)


def test_ddp_two_cpu_processes(tmp_path):
    data_root, out, results = tmp_path / "data", tmp_path / "out", tmp_path / "results"
    results.mkdir()
    # Generate the data once before the ranks start (both would otherwise write it).
    from configs import load_cfg
    from datasets import build_dataset
    cfg = load_cfg(TINY, opts(data_root, out))
    build_dataset(cfg.DATASETS.NAMES[0], cfg.DATASETS.ROOT_DIR, cfg)

    mp.spawn(_worker, args=(free_port(), str(data_root), str(out), str(results)), nprocs=WORLD, join=True)

    p0, p1 = (torch.load(results / f"params{r}.pt", weights_only=True) for r in range(WORLD))
    assert p0.keys() == p1.keys()
    for name in p0:
        assert torch.equal(p0[name], p1[name]), name
    m0, m1 = (json.loads((results / f"metrics{r}.json").read_text()) for r in range(WORLD))
    assert m0 == m1
    assert json.loads((out / "results.json").read_text())["latest"] == m0
    # Only rank 0 writes; the checkpoint holds rank 0's (= every rank's) parameters.
    ckpt = torch.load(out / "checkpoint_epoch1.pth", weights_only=True)
    for name, value in p0.items():
        assert torch.equal(ckpt["model"][name], value), name

    import test_net
    # One thread, as in the ranks: some CPU kernels (e.g. the fused scaled_dot_product_attention of the
    # MFU) split their sums by thread count, so other counts round differently (not what is tested).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = test_net.main(["--config_file", TINY, *opts(data_root, tmp_path / "single"),
                                "TEST.WEIGHT", str(out / "checkpoint_epoch1.pth")])
    finally:
        torch.set_num_threads(threads)
    for key in ("mAP", "rank1", "rank5", "rank10", "mINP"):
        assert single[key] == m0[key], key
