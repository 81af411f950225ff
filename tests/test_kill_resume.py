"""SIGKILL at any moment never corrupts a training run's output folder, and ``--resume`` continues.

One output folder goes through a series of ``train_net.py --resume`` processes, each SIGKILLed:
three at random moments (seeded delays after the trainer is built, scaled to this machine's speed)
and three at chosen ones: half-way through writing the first checkpoint (only a temporary file
exists), between a complete checkpoint file and the ``last_checkpoint`` update, and half-way through
writing a later checkpoint. After every kill each visible file must be complete (loadable with
``weights_only=True``, every key of a training state) and ``last_checkpoint`` must name one of them;
the next run must resume from it. A last ``--resume`` run finishes (exit 0) and leaves no temporary
file behind.

The processes are forked by a small server script written into tmp_path (importing torch once
instead of seven times keeps the test short); each child runs
``train_net.main`` and is killed with SIGKILL by pid. The chosen moments come from patches of
``torch.save`` / ``utils.checkpoint.atomic_write_text`` in the children only: the patched save writes
half of the checkpoint, creates a marker file and sleeps until killed. Production code has no hook.
"""
import glob
import json
import logging
import os
import random
import re
import select
import signal
import subprocess
import sys
import time

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(REPO, "configs", "Synthetic", "tiny.yml")
MAX_EPOCHS = 12  # more than the kills can reach: the last run has work left
SEED = 20240611
# Everything processor.Trainer.state_dict writes: a checkpoint without one of them is incomplete.
STATE_KEYS = {"model", "optimizer", "scheduler", "scaler", "epoch", "rng", "config", "best", "latest"}
CKPT_RE = re.compile(r"^checkpoint_epoch(\d+)\.pth$")

logger = logging.getLogger(__name__)

WRAPPER = r'''
"""A fork server of train_net.py with test hooks, used by tests/test_kill_resume.py.

Imports everything once (the slow part), then for every JSON line on stdin forks
a child that runs ``train_net.main`` with its output in the given log file. Replies on stdout:
``ready``, then per run ``pid N`` and ``exit N CODE`` (CODE -9: SIGKILLed). Hooks in the child
only: ``pause`` "write:N" hangs half-way through writing checkpoint N, "pointer:N" after checkpoint N
is complete but before last_checkpoint names it; ``ready`` is created when training starts (a callback).
"""
import io
import json
import os
import sys
import time
import traceback

sys.path.insert(0, {repo!r})
import utils

utils.prefer_passive_omp()
import torch

import train_net
import utils.checkpoint as checkpoint

HOOK = {{"mode": "", "epoch": 0, "ready": "", "marker": ""}}


def hang():
    with open(HOOK["marker"], "w") as f:
        f.write("paused\n")
    while True:
        time.sleep(1)  # until SIGKILLed


real_save = torch.save


def save(obj, f, *args, **kwargs):
    if (HOOK["mode"] == "write" and isinstance(obj, dict) and "optimizer" in obj
            and obj.get("epoch") == HOOK["epoch"]):
        buf = io.BytesIO()
        real_save(obj, buf, *args, **kwargs)
        data = buf.getvalue()
        f.write(data[: len(data) // 2])  # half of the checkpoint is on disk
        f.flush()
        os.fsync(f.fileno())
        hang()
    return real_save(obj, f, *args, **kwargs)


real_write_text = checkpoint.atomic_write_text


def write_text(path, text):
    if (HOOK["mode"] == "pointer" and os.path.basename(path) == checkpoint.LAST_CHECKPOINT
            and text.strip() == checkpoint.checkpoint_name(HOOK["epoch"])):
        hang()  # the checkpoint file is complete, the pointer still names the previous one
    return real_write_text(path, text)


class Ready:
    """Creates the ready file when training starts: the trainer is built and has resumed."""

    def before_train(self, trainer):
        open(HOOK["ready"], "w").close()


torch.save = save
checkpoint.atomic_write_text = write_text


def child(job):
    mode, _, epoch = job["pause"].partition(":")
    HOOK.update(mode=mode, epoch=int(epoch or 0), ready=job["ready"], marker=job["marker"])
    fd = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    code = 1
    try:
        sys.argv = ["train_net.py"] + job["args"]
        train_net.main(job["args"], callbacks=[Ready()])
        code = 0
    except SystemExit as e:
        if isinstance(e.code, int):
            code = e.code
        elif e.code is not None:
            print(e.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def reply(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


reply("ready")
for line in sys.stdin:
    job = json.loads(line)
    pid = os.fork()
    if pid == 0:
        child(job)
    reply(f"pid {{pid}}")
    _, status = os.waitpid(pid, 0)
    reply(f"exit {{pid}} {{os.waitstatus_to_exitcode(status)}}")
'''


def run_args(data_root, out):
    """A tiny run: ViT-Tiny branch only, SGD (44 MB checkpoints), 32 training images, a checkpoint per epoch."""
    return ["--config_file", TINY, "DATASETS.ROOT_DIR", str(data_root), "OUTPUT_DIR", str(out),
            "MODEL.CNN.NAME", "''", "MODEL.FUSION.HTM_LAYERS", "0", "SOLVER.OPTIMIZER_NAME", "SGD",
            "DATASETS.SYNTHETIC.NUM_TRAIN_IDS", "8", "DATASETS.SYNTHETIC.NUM_TEST_IDS", "4",
            "DATASETS.SYNTHETIC.NUM_CAMS", "2", "DATALOADER.NUM_WORKERS", "0",
            "SOLVER.MAX_EPOCHS", str(MAX_EPOCHS), "SOLVER.CHECKPOINT_PERIOD", "1", "SOLVER.EVAL_PERIOD", "2",
            "--resume"]


def load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def temp_files(out):
    return sorted(n for n in os.listdir(out) if n.startswith(".") and n.endswith(".tmp"))


def check_folder(out):
    """Asserts that every visible file is complete and ``last_checkpoint`` names a checkpoint.

    Returns the epoch ``--resume`` continues from: the one ``last_checkpoint`` names, without it the
    highest checkpoint (0: none).
    """
    epochs = {}
    for name in os.listdir(out):
        m = CKPT_RE.match(name)
        if m:
            state = load(os.path.join(out, name))
            assert STATE_KEYS <= set(state), f"{name} lacks {STATE_KEYS - set(state)}"
            assert state["epoch"] == int(m.group(1)) and len(state["model"]) > 0
            assert len(state["optimizer"]["param_groups"]) > 0
            epochs[name] = state["epoch"]
    if os.path.exists(os.path.join(out, "model_best.pth")):
        assert "model" in load(os.path.join(out, "model_best.pth"))
    if os.path.exists(os.path.join(out, "results.json")):
        assert "latest" in json.loads((out / "results.json").read_text())
    pointer = out / "last_checkpoint"
    if not pointer.exists():
        return max(epochs.values(), default=0)
    name = pointer.read_text().strip()
    assert name in epochs, f"last_checkpoint names {name!r}, not a complete checkpoint of {sorted(epochs)}"
    return epochs[name]


class Runs:
    """Runs of ``train_net.py --resume`` on one output folder, forked by the wrapper; one log per run."""

    def __init__(self, tmp_path, data_root, out):
        self.tmp, self.out, self.count, self.pid = tmp_path, out, 0, None
        script = tmp_path / "train_server.py"
        script.write_text(WRAPPER.format(repo=REPO))
        self.args = run_args(data_root, out)
        self.server_log = open(tmp_path / "server.log", "wb")
        self.server = subprocess.Popen([sys.executable, str(script)], cwd=REPO, stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, stderr=self.server_log, bufsize=0)
        self.buffer = b""
        assert self.reply(timeout=180) == "ready", (tmp_path / "server.log").read_text()

    def reply(self, timeout):
        """The server's next reply line, or None after ``timeout`` seconds."""
        end = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = end - time.monotonic()
            if left <= 0 or not select.select([self.server.stdout], [], [], left)[0]:
                return None
            chunk = os.read(self.server.stdout.fileno(), 4096)
            assert chunk, "the fork server died: " + (self.tmp / "server.log").read_text()[-3000:]
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode()

    def start(self, pause=""):
        self.count += 1
        self.ready, self.marker = self.tmp / f"ready{self.count}", self.tmp / f"paused{self.count}"
        self.log = self.tmp / f"run{self.count}.log"
        job = dict(args=self.args, pause=pause, ready=str(self.ready), marker=str(self.marker), log=str(self.log))
        self.server.stdin.write((json.dumps(job) + "\n").encode())
        self.server.stdin.flush()
        word, pid = self.reply(timeout=30).split()
        assert word == "pid"
        self.pid = int(pid)
        return self

    def output(self):
        return self.log.read_text(errors="replace")

    def exit_code(self, timeout):
        line = self.reply(timeout)
        if line is None:
            return None
        word, pid, code = line.split()
        assert word == "exit" and int(pid) == self.pid
        self.pid = None
        return int(code)

    def wait_for(self, path, timeout=120):
        end = time.monotonic() + timeout
        while not path.exists():
            code = self.exit_code(timeout=0.01)
            assert code is None, f"run {self.count} exited ({code}) early:\n" + self.output()[-3000:]
            assert time.monotonic() < end, f"run {self.count}: no {path.name} after {timeout}s"

    def kill(self):
        """SIGKILL; returns what the run was doing (its last log line) for the test's log."""
        os.kill(self.pid, signal.SIGKILL)
        assert self.exit_code(timeout=30) == -signal.SIGKILL
        lines = [ln for ln in self.output().splitlines() if ln.strip()]
        return lines[-1][20:120] if lines else "(nothing logged)"

    def close(self):
        if self.pid is not None:
            os.kill(self.pid, signal.SIGKILL)
        self.server.stdin.close()
        try:
            self.server.wait(timeout=30)
        finally:
            self.server_log.close()


@pytest.fixture
def runs(tmp_path):
    from configs import load_cfg
    from datasets.synthetic_generator import SyntheticParams, ensure_generated

    data_root, out = tmp_path / "data", tmp_path / "out"
    # the dataset first (its generation is atomic too, but the kills are meant for training here)
    cfg = load_cfg(TINY, run_args(data_root, out)[2:-1])
    ensure_generated(str(data_root / "synthetic"), SyntheticParams.from_cfg(cfg))
    server = Runs(tmp_path, data_root, out)
    yield server
    server.close()


def test_sigkill_never_corrupts_and_resume_finishes(runs):
    out = runs.out
    rng = random.Random(SEED)
    started = time.monotonic()
    done = 0          # the epoch last_checkpoint names
    landed = []       # (kind, where) of every kill, for the log

    def after_kill(kind, where):
        nonlocal done
        landed.append((kind, where))
        epoch = check_folder(out)
        assert epoch >= done, f"last_checkpoint went back from epoch {done} to {epoch}"
        done = epoch
        logger.info("kill %d (%s) at %.1fs: %s | last_checkpoint: epoch %d | temporary files: %s", runs.count,
                    kind, time.monotonic() - started, where, done, temp_files(out))

    def resumed_from(epoch):
        text = runs.output()
        if epoch == 0:
            assert "no checkpoint in" in text and "starting from scratch" in text, text[-3000:]
        else:
            assert f"resumed from {out / f'checkpoint_epoch{epoch}.pth'} (epoch {epoch})" in text, text[-3000:]

    # 1. inside the first checkpoint write: only a partial temporary file, no pointer
    runs.start("write:1").wait_for(runs.ready)
    t0 = time.monotonic()
    runs.wait_for(runs.marker)
    # the random delays scale with this machine's speed: untrained evaluation + about one epoch
    unit = time.monotonic() - t0
    partial = glob.glob(str(out / ".checkpoint_epoch1.pth.*.tmp"))
    after_kill("in checkpoint 1 write", runs.kill())
    assert done == 0 and not (out / "last_checkpoint").exists() and not (out / "checkpoint_epoch1.pth").exists()
    assert len(partial) == 1 and os.path.getsize(partial[0]) > 0
    with pytest.raises(Exception):
        load(partial[0])  # the kill really cut a checkpoint in half

    # 2. random moments after the trainer is built (start-up, training, evaluation, saving)
    for _ in range(2):
        runs.start().wait_for(runs.ready)
        time.sleep(rng.uniform(0.0, 1.5) * unit)
        after_kill("random", runs.kill())

    # 3. between a complete checkpoint file and the last_checkpoint update
    before = done
    runs.start(f"pointer:{before + 1}").wait_for(runs.marker)
    after_kill(f"before pointer update of epoch {before + 1}", runs.kill())
    resumed_from(before)
    assert (out / f"checkpoint_epoch{before + 1}.pth").exists()  # complete (check_folder loaded it)
    pointer = out / "last_checkpoint"
    assert not pointer.exists() or pointer.read_text().strip() == f"checkpoint_epoch{before}.pth"

    # 4. inside a later checkpoint write: --resume keeps finding the previous, complete checkpoint
    before = done
    runs.start(f"write:{before + 1}").wait_for(runs.marker)
    assert glob.glob(str(out / f".checkpoint_epoch{before + 1}.pth.*.tmp"))
    after_kill(f"in checkpoint {before + 1} write", runs.kill())
    resumed_from(before)
    assert done == before and done >= 1

    # 5. one more random moment
    runs.start().wait_for(runs.ready)
    time.sleep(rng.uniform(0.0, 1.5) * unit)
    after_kill("random", runs.kill())

    # 6. the last --resume finishes
    assert done < MAX_EPOCHS, "the kills came too late to leave work for the last run"
    runs.start()
    assert runs.exit_code(timeout=300) == 0, runs.output()[-3000:]
    resumed_from(done)
    assert check_folder(out) == MAX_EPOCHS
    # step 4 left a partial checkpoint; the next save (run 6 or this one) deleted it and any other leftover
    assert temp_files(out) == [], "the next save should delete leftover temporary files"
    last_two = [(runs.tmp / f"run{i}.log").read_text() for i in (runs.count - 1, runs.count)]
    assert any("leftover temporary file" in text for text in last_two)
    results = json.loads((out / "results.json").read_text())
    assert results["latest"]["epoch"] == MAX_EPOCHS
    assert load(out / f"checkpoint_epoch{MAX_EPOCHS}.pth")["epoch"] == MAX_EPOCHS
    logger.info("%d kills in %.1fs (random delays in units of %.2fs): %s", len(landed), time.monotonic() - started,
                unit, landed)
