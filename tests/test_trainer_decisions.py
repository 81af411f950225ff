"""The training decisions of a real ``Trainer`` run, observed (tiny config, CPU, a few seconds each).

Nothing here re-enacts the trainer's calls: each test builds a Trainer with ``build_trainer``, runs it
(``train()``), and records what reaches the optimizer at every real ``optimizer.step`` (a wrapper around it), what
is logged and what is written (TensorBoard event file, checkpoints, results.json). The expected values are
computed in closed form (tests/helpers.py, ``math.cos``, not timm):

- the LR of every parameter at every step, per epoch, under SOLVER.SCHEDULE 'release' and 'paper_text';
- the LR logged (log lines) and written to TensorBoard (``train/lr``, ``train/lr/<group>``) = the LR stepped with;
- resume: the optimizer is at the LR of the epoch to come, and the resumed epochs step with the same LRs;
- the weight decay each parameter gets (SOLVER.WEIGHT_DECAY_ON 'all' and 'weights'), read from the optimizer and
  measured from the first SGD update;
- SOLVER.GRAD_CLIP: the total gradient norm at the step is at most the clip (and well above it without);
- model_best.pth / results.json when the metric drops after a peak (the metrics are scripted, the decision and
  the files are the trainer's).
"""
import json
import logging
import re

import pytest
import torch

import processor.evaluation as evaluation_module
import processor.trainer as trainer_module
from configs import load_cfg
from processor import build_trainer
from processor.inference import METRIC_KEYS
from tests.helpers import TINY_CONFIG, paper_text_lr, release_lr

CHEAP = ["DATASETS.SYNTHETIC.NUM_TRAIN_IDS", "8", "DATASETS.SYNTHETIC.NUM_TEST_IDS", "4",
         "DATASETS.SYNTHETIC.NUM_CAMS", "2", "DATASETS.SYNTHETIC.IMAGES_PER_CAM", "2",
         "DATALOADER.NUM_WORKERS", "0", "DATALOADER.NUM_INSTANCE", "4", "SOLVER.IMS_PER_BATCH", "16",
         "MODEL.DEVICE", "cpu", "SOLVER.AMP", "off"]

# the LR runs: distinct numbers, so that no two of them can stand in for each other
BASE_LR, WARMUP_LR_INIT, MIN_LR, BIAS_FACTOR = 0.004, 0.0004, 0.0001, 3.0
MAX_EPOCHS, WARMUP = 4, 2


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


def make_cfg(data_root, out, *overrides):
    return load_cfg(TINY_CONFIG, ["DATASETS.ROOT_DIR", str(data_root), "OUTPUT_DIR", str(out or ""), *CHEAP,
                                  *overrides])


def is_bias(name, decay_on="all"):
    return "bias" in name if decay_on == "all" else name.endswith("bias")


class StepRecorder:
    """Wraps ``trainer.optimizer.step`` and ``trainer.train_one_epoch``: at every real step, the epoch and what
    ``inspect(trainer)`` returns before (and ``after(trainer, before)`` after) the step."""

    def __init__(self, trainer, inspect, after=None):
        self.trainer, self.steps, self.epoch = trainer, [], None
        self.names = {id(p): n for n, p in trainer.model.named_parameters()}
        step, one_epoch = trainer.optimizer.step, trainer.train_one_epoch

        def recording_step(*args, **kwargs):
            before = inspect(trainer)
            out = step(*args, **kwargs)
            self.steps.append((self.epoch, after(trainer, before) if after else before))
            return out

        def recording_epoch(epoch):
            self.epoch = epoch
            return one_epoch(epoch)

        trainer.optimizer.step = recording_step
        trainer.train_one_epoch = recording_epoch

    def per_param(self, key):
        """``{parameter name: group[key]}`` of the optimizer now."""
        return {self.names[id(p)]: g[key] for g in self.trainer.optimizer.param_groups for p in g["params"]}


def lrs_now(trainer):
    """The LR of every parameter and of every group (by group name), as the optimizer holds them now."""
    return {"params": {n: float(lr) for n, lr in trainer.recorder.per_param("lr").items()},
            "groups": {g["name"]: float(g["lr"]) for g in trainer.optimizer.param_groups}}


# ----------------------------------------------------------------------------- the LR, in closed form
def expected_lr(schedule, epoch, name):
    factor = BIAS_FACTOR if is_bias(name) else 1.0
    if schedule == "release":
        return release_lr(epoch, BASE_LR * factor, WARMUP_LR_INIT, MIN_LR, WARMUP, MAX_EPOCHS)
    return factor * paper_text_lr(epoch, BASE_LR, WARMUP_LR_INIT, MIN_LR, WARMUP, MAX_EPOCHS)


class Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def lr_cfg(data_root, out, schedule):
    return make_cfg(data_root, out, "SOLVER.OPTIMIZER_NAME", "SGD", "SOLVER.SCHEDULE", schedule,
                    "SOLVER.WEIGHT_DECAY_ON", "all", "SOLVER.MAX_EPOCHS", str(MAX_EPOCHS),
                    "SOLVER.WARMUP_EPOCHS", str(WARMUP), "SOLVER.BASE_LR", str(BASE_LR),
                    "SOLVER.WARMUP_LR_INIT", str(WARMUP_LR_INIT), "SOLVER.MIN_LR", str(MIN_LR),
                    "SOLVER.BIAS_LR_FACTOR", str(BIAS_FACTOR), "SOLVER.EVAL_PERIOD", "100",
                    "SOLVER.CHECKPOINT_PERIOD", "2", "SOLVER.LOG_PERIOD", "1")


@pytest.fixture(scope="module", params=["release", "paper_text"])
def lr_run(request, data_root, tmp_path_factory):
    """One real run of MAX_EPOCHS under each schedule: (schedule, cfg, trainer, recorder, log messages, out)."""
    schedule = request.param
    out = tmp_path_factory.mktemp(f"lr_{schedule}")
    cfg = lr_cfg(data_root, out, schedule)
    torch.manual_seed(0)
    trainer = build_trainer(cfg, torch.device("cpu"))
    trainer.recorder = StepRecorder(trainer, lrs_now)
    capture = Capture()
    log = logging.getLogger(trainer_module.__name__)
    log.addHandler(capture)
    old_level = log.level
    log.setLevel(logging.INFO)
    try:
        trainer.train()
    finally:
        log.removeHandler(capture)
        log.setLevel(old_level)
    return schedule, cfg, trainer, trainer.recorder, capture.messages, out


def test_every_parameter_steps_at_the_schedule_lr(lr_run):
    schedule, _, trainer, rec, _, _ = lr_run
    num_iters = len(trainer.train_loader)
    assert num_iters >= 2
    assert [e for e, _ in rec.steps] == [e for e in range(1, MAX_EPOCHS + 1) for _ in range(num_iters)]
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert any(is_bias(n) for n in trainable) and any(not is_bias(n) for n in trainable)
    for epoch, seen in rec.steps:
        assert set(seen["params"]) == trainable
        bad = {n: (lr, expected_lr(schedule, epoch, n)) for n, lr in seen["params"].items()
               if lr != pytest.approx(expected_lr(schedule, epoch, n), rel=1e-12, abs=0)}
        assert not bad, (schedule, epoch, dict(list(bad.items())[:4]))
    by_epoch = {e: s["groups"] for e, s in rec.steps}
    if schedule == "release":
        # each group warms up from the same WARMUP_LR_INIT to its own peak and ends at the same MIN_LR
        assert by_epoch[1]["biases"] == pytest.approx(WARMUP_LR_INIT + (BIAS_FACTOR * BASE_LR - WARMUP_LR_INIT) / 2)
        assert by_epoch[MAX_EPOCHS] == pytest.approx({"weights": MIN_LR, "biases": MIN_LR})
    else:
        assert by_epoch[1] == pytest.approx({"weights": WARMUP_LR_INIT, "biases": BIAS_FACTOR * WARMUP_LR_INIT})
        assert by_epoch[WARMUP + 1] == pytest.approx({"weights": BASE_LR, "biases": BIAS_FACTOR * BASE_LR})


def test_logged_and_tensorboard_lr_are_the_stepped_lr(lr_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, _, trainer, rec, messages, out = lr_run
    num_iters = len(trainer.train_loader)
    stepped = [s["groups"] for _, s in rec.steps]  # global step k + 1 -> the groups' LRs of that step
    acc = EventAccumulator(str(out), size_guidance={"scalars": 0})
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert {"train/lr", "train/lr/weights", "train/lr/biases"} <= set(tags)
    for tag, group in (("train/lr", "weights"), ("train/lr/weights", "weights"), ("train/lr/biases", "biases")):
        events = acc.Scalars(tag)
        assert [e.step for e in events] == list(range(1, MAX_EPOCHS * num_iters + 1)), tag
        for e in events:
            assert e.value == pytest.approx(stepped[e.step - 1][group], rel=1e-6), (tag, e.step)

    number = r"([0-9.]+e[-+][0-9]+)"
    per_epoch = {}
    for m in messages:
        found = re.match(rf"epoch (\d+)/{MAX_EPOCHS}(?: iter (\d+)/{num_iters})?: .*, lr {number} \(biases {number}\)",
                         m)
        if found:
            epoch, it = int(found.group(1)), found.group(2)
            step = (epoch - 1) * num_iters + (int(it) if it else num_iters)
            logged = {"weights": float(found.group(3)), "biases": float(found.group(4))}
            assert logged == pytest.approx(stepped[step - 1], rel=1e-4), (m, stepped[step - 1])
            per_epoch.setdefault(epoch, []).append(it)
    # every epoch logged its summary line and every iteration (LOG_PERIOD 1)
    assert sorted(per_epoch) == list(range(1, MAX_EPOCHS + 1))
    assert all(len(lines) == num_iters + 1 and None in lines for lines in per_epoch.values()), per_epoch


def test_resume_continues_at_the_lr_of_the_next_epoch(lr_run, data_root, tmp_path):
    schedule, _, _, rec, _, out = lr_run
    cfg = lr_cfg(data_root, tmp_path, schedule)
    trainer = build_trainer(cfg, torch.device("cpu"))
    trainer.resume(str(out / "checkpoint_epoch2.pth"))
    # on resume the optimizer is already at the LR epoch 3 trains at
    assert {g["name"]: g["lr"] for g in trainer.optimizer.param_groups} == pytest.approx(
        {"weights": expected_lr(schedule, 3, "w"), "biases": expected_lr(schedule, 3, "bias")}, rel=1e-12)
    trainer.recorder = StepRecorder(trainer, lrs_now)
    trainer.train()
    resumed = [(e, s["groups"]) for e, s in trainer.recorder.steps]
    assert resumed == [(e, s["groups"]) for e, s in rec.steps if e > 2]


# ----------------------------------------------------------------------------- weight decay
WD, WD_BIAS = 0.05, 0.2


@pytest.mark.parametrize("decay_on", ["all", "weights"])
def test_weight_decay_of_every_parameter(decay_on, data_root):
    cfg = make_cfg(data_root, None, "SOLVER.OPTIMIZER_NAME", "SGD", "SOLVER.WEIGHT_DECAY_ON", decay_on,
                   "SOLVER.WEIGHT_DECAY", str(WD), "SOLVER.WEIGHT_DECAY_BIAS", str(WD_BIAS),
                   "SOLVER.MAX_EPOCHS", "1", "SOLVER.WARMUP_EPOCHS", "0", "SOLVER.BASE_LR", "0.05",
                   "SOLVER.MIN_LR", "0.05", "SOLVER.SCHEDULE", "release")
    torch.manual_seed(0)
    trainer = build_trainer(cfg, torch.device("cpu"))
    model = trainer.model
    skip = set(model.no_weight_decay())
    with torch.no_grad():  # biases, norms and embeddings start at 0 or 1: make every decay visible in the update
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)

    def expected(name, p):
        if decay_on == "all":
            return WD_BIAS if "bias" in name else WD
        return 0.0 if (name.endswith("bias") or p.ndim <= 1 or name in skip) else WD

    def before(tr):
        return {n: (p.detach().clone(), p.grad.detach().clone(), g["lr"]) for g in tr.optimizer.param_groups
                for n, p in zip(g["names"], g["params"]) if p.grad is not None}

    def after(tr, seen):
        params = dict(tr.model.named_parameters())
        return {n: (p0, grad, lr, params[n].detach().clone()) for n, (p0, grad, lr) in seen.items()}

    rec = StepRecorder(trainer, before, after)
    params = dict(model.named_parameters())
    declared = rec.per_param("weight_decay")
    assert set(declared) == {n for n, p in params.items() if p.requires_grad}
    wrong = {n: (wd, expected(n, params[n])) for n, wd in declared.items() if wd != expected(n, params[n])}
    assert not wrong, wrong
    kinds = {expected(n, params[n]) for n in declared}
    assert kinds == ({WD, WD_BIAS} if decay_on == "all" else {WD, 0.0})

    trainer.train()
    _, first = rec.steps[0]
    # the first SGD step: buf = grad + wd * p, p_new = p - lr * buf  =>  wd = ((p - p_new) / lr - grad) . p / |p|^2
    measured = {n: float((((p0 - p1) / lr - grad) * p0).sum() / (p0 * p0).sum()) for n, (p0, grad, lr, p1)
                in first.items()}
    assert len(measured) > 100 and any(is_bias(n) for n in measured)
    off = {n: (round(wd, 4), expected(n, params[n])) for n, wd in measured.items()
           if abs(wd - expected(n, params[n])) > 2e-3}
    assert not off, dict(list(off.items())[:6])


# ----------------------------------------------------------------------------- gradient clipping
def total_grad_norm(trainer):
    grads = [p.grad.detach().double() for g in trainer.optimizer.param_groups for p in g["params"]
             if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))


def test_gradient_clipping_bounds_the_norm_at_the_step(data_root):
    clip = 0.05
    norms = {}
    for value in (clip, 0.0):
        cfg = make_cfg(data_root, None, "SOLVER.OPTIMIZER_NAME", "SGD", "SOLVER.GRAD_CLIP", str(value),
                       "SOLVER.MAX_EPOCHS", "2")
        torch.manual_seed(0)
        trainer = build_trainer(cfg, torch.device("cpu"))
        rec = StepRecorder(trainer, total_grad_norm)
        trainer.train()
        norms[value] = [n for _, n in rec.steps]
    assert len(norms[clip]) == len(norms[0.0]) >= 4
    assert all(n <= clip * (1 + 1e-5) for n in norms[clip]), norms
    assert all(n > clip * (1 - 1e-3) for n in norms[clip]), norms  # clipped to it, not far below
    assert all(n > 10 * clip for n in norms[0.0]), norms             # without clipping: well above


# ----------------------------------------------------------------------------- best model
def test_model_best_is_the_peak_epoch_when_the_metric_drops(data_root, tmp_path, monkeypatch):
    maps = iter([0.1, 0.3, 0.5, 0.4])  # untrained, epochs 1, 2 (peak), 3

    def scripted(cfg, model, test_sets, device, amp):
        value = next(maps)
        for test_set in test_sets:
            yield test_set, {k: value for k in METRIC_KEYS}, None

    monkeypatch.setattr(evaluation_module, "evaluate_test_sets", scripted)
    cfg = make_cfg(data_root, tmp_path, "SOLVER.MAX_EPOCHS", "3", "SOLVER.EVAL_PERIOD", "1",
                   "SOLVER.CHECKPOINT_PERIOD", "1")
    torch.manual_seed(0)
    summary = build_trainer(cfg, torch.device("cpu")).train()
    assert summary["best"]["epoch"] == 2 and summary["latest"]["epoch"] == 3

    def load(name):
        return torch.load(tmp_path / name, map_location="cpu", weights_only=True)

    best, peak, last = load("model_best.pth"), load("checkpoint_epoch2.pth"), load("checkpoint_epoch3.pth")
    assert best["epoch"] == 2 and best["metrics"]["mAP"] == 0.5
    assert best["model"].keys() == peak["model"].keys()
    assert all(torch.equal(best["model"][k], peak["model"][k]) for k in peak["model"])
    assert not all(torch.equal(best["model"][k], last["model"][k]) for k in last["model"])
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["best"]["epoch"] == 2 and results["best"]["mAP"] == 0.5
    assert results["latest"]["epoch"] == 3 and results["latest"]["mAP"] == 0.4
