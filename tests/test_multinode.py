"""Beyond one machine: torchrun's own multi-node launch, with two "nodes" on this machine.

``torchrun --nnodes 2 --node_rank {0,1} --nproc_per_node 1`` (static rendezvous on 127.0.0.1, gloo) runs
``train_net.py`` on a tiny config and must end with exactly the checkpoint (every model and optimizer
tensor) and the results.json metrics of the same job launched as ``torchrun --nproc_per_node 2`` on one
node. There ``LOCAL_RANK`` is 0 on both nodes while ``RANK`` is 0 and 1, so anything keyed on the local
rank where it needs the global one (sampler shards, seeds, rank-0-only writes) would show up as a
difference or a clash. The nodes get separate ``DATASETS.ROOT_DIR``s (as on machines without a shared
filesystem: each node prepares its own copy of the data) and one ``OUTPUT_DIR`` (as on a shared one:
only global rank 0 writes it).

A second test pins ``main_process_first(local=True)``: the local rank 0 of every node runs the block
first, concurrently, rather than global rank 0 alone.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import pytest
import torch
import torch.multiprocessing as mp
from helpers import REPO, TINY_CONFIG, free_port

TRAIN_NET = os.path.join(REPO, "train_net.py")
# One run takes ~30 s on 2 free cores; the limit only stops a hung rendezvous from hanging the suite.
RUN_TIMEOUT_S = 400
PORT_ATTEMPTS = 3
PORT_CLASH = ("EADDRINUSE", "address already in use", "Address already in use")
# Environment of an outer launcher that must not leak into the torchrun jobs started here.
LAUNCHER_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK",
                 "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID", "TORCHELASTIC_USE_AGENT_STORE")


def train_opts(data_root: Path, output_dir: Path) -> List[str]:
    """Overrides of tiny.yml that keep a run short: 8 train identities (2 batches of 4 x 4 per epoch),
    2 epochs with an evaluation after each (model_best.pth is epoch 1's, the last checkpoint epoch
    2's), 7 test identities (43 val images: shards of 22 and 21, so the gather pads one). SYNC_BN is
    ignored on CPU (with a warning), as in tests/test_ddp.py."""
    return ["DATASETS.ROOT_DIR", str(data_root), "OUTPUT_DIR", str(output_dir),
            "DATASETS.SYNTHETIC.NUM_TRAIN_IDS", "8", "DATASETS.SYNTHETIC.NUM_TEST_IDS", "7",
            "SOLVER.MAX_EPOCHS", "2", "SOLVER.WARMUP_EPOCHS", "0", "SOLVER.EVAL_PERIOD", "1",
            "TEST.IMS_PER_BATCH", "8", "MODEL.SYNC_BN", "True"]


def torchrun() -> List[str]:
    """The venv's ``torchrun`` (the console script of ``torch.distributed.run``)."""
    script = os.path.join(os.path.dirname(sys.executable), "torchrun")
    return [script] if os.path.isfile(script) else [sys.executable, "-m", "torch.distributed.run"]


def node_command(port: int, nnodes: int, nproc_per_node: int, node_rank: int, opts: Sequence[str]) -> List[str]:
    """``torchrun`` of ``train_net.py`` on the tiny config as node ``node_rank`` of ``nnodes``."""
    return [*torchrun(), "--nnodes", str(nnodes), "--nproc_per_node", str(nproc_per_node),
            "--node_rank", str(node_rank), "--master_addr", "127.0.0.1", "--master_port", str(port),
            TRAIN_NET, "--config_file", TINY_CONFIG, *opts]


def job_env() -> Dict[str, str]:
    """The test's environment without an outer launcher's variables; one thread per process (the
    results must not depend on how many threads a kernel splits its sums over)."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def _stop(proc: subprocess.Popen) -> None:
    """Kill ``proc``'s process group (torchrun and the workers it started) and reap it."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def _logs(logs: Sequence[Path]) -> str:
    """Every node's output, for a failure message."""
    parts = []
    for path in logs:
        text = path.read_text(errors="replace") if path.exists() else "(no output)"
        parts.append(f"===== {path.name} =====\n{text[-12000:]}")
    return "\n".join(parts)


def run_nodes(commands: Sequence[List[str]], logs: Sequence[Path], cwd: Path,
              timeout: float = RUN_TIMEOUT_S) -> Tuple[List[Optional[int]], bool]:
    """Start every node's command at once and wait for all of them.

    Returns:
        Each node's exit code and whether the time ran out. When one node fails, the others are
        stopped at once rather than left waiting for it at a rendezvous or a collective.
    """
    procs = []
    for command, log in zip(commands, logs):
        with open(log, "wb") as out:
            procs.append(subprocess.Popen(command, cwd=cwd, env=job_env(), stdout=out, stderr=subprocess.STDOUT,
                                          start_new_session=True))
    deadline = time.monotonic() + timeout
    timed_out = False
    try:
        while any(p.poll() is None for p in procs):
            if any(p.poll() not in (None, 0) for p in procs):
                break
            if time.monotonic() > deadline:
                timed_out = True
                break
            time.sleep(0.2)
    finally:
        for p in procs:
            _stop(p)
    return [p.returncode for p in procs], timed_out


def run_job(name: str, tmp: Path, nnodes: int, nproc_per_node: int,
            opts_of_node: Sequence[List[str]]) -> None:
    """One torchrun job (``nnodes`` launches, node ``i`` with ``opts_of_node[i]``) that must succeed.

    A fresh port per attempt; an attempt whose rendezvous port was taken meanwhile by another process
    is retried. Fails the test with every node's log on an error or a timeout.
    """
    for attempt in range(1, PORT_ATTEMPTS + 1):
        port = free_port()
        logs = [tmp / f"{name}_node{i}_attempt{attempt}.log" for i in range(nnodes)]
        commands = [node_command(port, nnodes, nproc_per_node, i, opts_of_node[i]) for i in range(nnodes)]
        codes, timed_out = run_nodes(commands, logs, tmp)
        if not timed_out and all(code == 0 for code in codes):
            return
        text = _logs(logs)
        if not timed_out and attempt < PORT_ATTEMPTS and any(s in text for s in PORT_CLASH):
            continue
        what = f"timed out after {RUN_TIMEOUT_S} s" if timed_out else f"exit codes {codes}"
        pytest.fail(f"{name}: torchrun {what} (port {port})\n" + "\n".join(" ".join(c) for c in commands)
                    + "\n" + text, pytrace=False)


def load_checkpoint(output_dir: Path, name: Optional[str] = None) -> dict:
    """The checkpoint ``name`` in ``output_dir``, by default the one ``output_dir/last_checkpoint`` names."""
    name = name or (output_dir / "last_checkpoint").read_text().strip()
    return torch.load(output_dir / name, map_location="cpu", weights_only=True)


def assert_same_tensors(a: dict, b: dict, what: str) -> None:
    """Every tensor of ``a`` equals ``b``'s of the same path exactly (as in tests/test_ddp.py)."""
    a, b = tensors(a), tensors(b)
    assert a.keys() == b.keys(), what
    different = [name for name in a if not torch.equal(a[name], b[name])]
    assert different == [], (f"{what}: {len(different)} of {len(a)} tensors differ, e.g. {different[:5]}; "
                             f"max abs difference {max_abs_difference(a, b):.3g}")


def tensors(obj, prefix: str = "") -> Dict[str, torch.Tensor]:
    """Every tensor in a nested dict/list (a state dict, an optimizer state), by its path."""
    if isinstance(obj, torch.Tensor):
        return {prefix: obj}
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    out = {}
    for key, value in items:
        out.update(tensors(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def max_abs_difference(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor]) -> float:
    """The largest absolute difference between same-named floating-point tensors."""
    worst = 0.0
    for name, x in a.items():
        if x.is_floating_point() and x.numel():
            worst = max(worst, (x.double() - b[name].double()).abs().max().item())
    return worst


def test_two_nodes_match_one_node_with_two_processes(tmp_path):
    single_out, multi_out = tmp_path / "out_single", tmp_path / "out_two_nodes"
    run_job("one_node", tmp_path, 1, 2, [train_opts(tmp_path / "data_single", single_out)])
    # Separate data roots: each node prepares its own copy (no shared filesystem); one OUTPUT_DIR.
    run_job("two_nodes", tmp_path, 2, 1, [train_opts(tmp_path / f"data_node{i}", multi_out) for i in range(2)])

    for i in range(2):
        assert (tmp_path / f"data_node{i}" / "synthetic" / "manifest.json").is_file(), f"node {i} prepared no data"

    single, multi = load_checkpoint(single_out), load_checkpoint(multi_out)
    assert single["epoch"] == multi["epoch"] == 2
    for part in ("model", "optimizer"):
        assert_same_tensors(single[part], multi[part], f"last checkpoint, {part}")
    best_single, best_multi = (load_checkpoint(out, "model_best.pth") for out in (single_out, multi_out))
    assert best_single["epoch"] == best_multi["epoch"]
    assert_same_tensors(best_single["model"], best_multi["model"], "model_best.pth")

    r_single, r_multi = (json.loads((out / "results.json").read_text()) for out in (single_out, multi_out))
    assert r_single["latest"] == r_multi["latest"]
    assert r_single["best"] == r_multi["best"]
    assert r_single["provenance"]["world_size"] == r_multi["provenance"]["world_size"] == 2
    # Only global rank 0 wrote the shared OUTPUT_DIR (node 1's local rank 0 would add a second
    # TensorBoard file and a second run header to the appended train.log).
    assert len(list(multi_out.glob("events.out.tfevents.*"))) == 1
    assert (multi_out / "train.log").read_text().count("processor.cli INFO: train_net.py") == 1
    shutil.rmtree(tmp_path / "data_single", ignore_errors=True)


# ----------------------------------------------------------------- main_process_first(local=True)
MARK_WAIT_S = 60


def _wait_for(path: str, seconds: float) -> bool:
    """Whether ``path`` appears within ``seconds``."""
    deadline = time.monotonic() + seconds
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _two_node_worker(rank: int, port: int, folder: str) -> None:
    """Rank ``rank`` of 2, alone on its "node" (LOCAL_RANK 0 on both), inside main_process_first."""
    os.environ.update(RANK=str(rank), LOCAL_RANK="0", WORLD_SIZE="2", LOCAL_WORLD_SIZE="1",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    from utils.distributed import cleanup_distributed, get_local_rank, get_rank, init_distributed, main_process_first

    init_distributed(torch.device("cpu"))
    try:
        assert (get_rank(), get_local_rank()) == (rank, 0)
        with main_process_first(local=True):
            open(os.path.join(folder, f"in{rank}"), "w").close()
            # both nodes' local rank 0 are inside at once: each sees the other arrive
            assert _wait_for(os.path.join(folder, f"in{1 - rank}"), MARK_WAIT_S), "the other node's local rank 0 waited"
        with main_process_first():  # global: rank 1 enters only after rank 0 has left
            if rank == 0:
                time.sleep(0.5)
                open(os.path.join(folder, "global0"), "w").close()
            else:
                assert os.path.exists(os.path.join(folder, "global0")), "rank 1 entered before rank 0 left"
    finally:
        cleanup_distributed()


def test_main_process_first_local_runs_every_nodes_local_rank_0_first(tmp_path):
    mp.spawn(_two_node_worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
