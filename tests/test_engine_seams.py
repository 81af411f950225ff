"""The engine's seams, observed on real ``Trainer`` runs (tiny config, CPU): callbacks and their checkpoint state,
the best-model rule, builders passed in, and a loss with parameters of its own.

Each test builds the trainer with ``build_trainer`` (or runs ``train_net.main``) and trains; nothing re-enacts the
loop's calls.
"""
import math

import pytest
import torch

import processor.evaluation as evaluation_module
import train_net
from configs import load_cfg
from loss import build_loss
from processor import BestModelRule, Builders, Callback, StepInfo, build_trainer
from processor.callbacks import check_callbacks
from processor.inference import METRIC_KEYS
from tests.helpers import TINY_CONFIG
from tests.toys import ScaledLoss

CHEAP = ["DATASETS.SYNTHETIC.NUM_TRAIN_IDS", "8", "DATASETS.SYNTHETIC.NUM_TEST_IDS", "4",
         "DATASETS.SYNTHETIC.NUM_CAMS", "2", "DATASETS.SYNTHETIC.IMAGES_PER_CAM", "2",
         "DATALOADER.NUM_WORKERS", "0", "DATALOADER.NUM_INSTANCE", "4", "SOLVER.IMS_PER_BATCH", "16",
         "MODEL.DEVICE", "cpu", "SOLVER.AMP", "off", "SOLVER.WARMUP_EPOCHS", "1"]
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


def make_cfg(data_root, out, *overrides):
    return load_cfg(TINY_CONFIG, ["DATASETS.ROOT_DIR", str(data_root), "OUTPUT_DIR", str(out or ""), *CHEAP,
                                  *overrides])


class Recorder(Callback):
    """Every hook call in order; counts the steps in its checkpoint state."""

    def __init__(self):
        self.calls, self.steps, self.finished = [], 0, "not called"

    def before_train(self, trainer):
        self.calls.append(("before_train",))

    def before_epoch(self, trainer, epoch):
        # the epoch's LR is set before its first step
        self.calls.append(("before_epoch", epoch, trainer.optimizer.param_groups[0]["lr"]))

    def after_step(self, trainer, step):
        assert isinstance(step, StepInfo)
        self.steps += 1
        self.calls.append(("after_step", step.epoch, step.iteration, step.global_step, step.lr, step.loss))

    def after_epoch(self, trainer, epoch, stats):
        self.calls.append(("after_epoch", epoch, stats["loss"]))

    def after_evaluation(self, trainer, evaluation):
        self.calls.append(("after_evaluation", evaluation.epoch, evaluation.metrics["mAP"]))

    def after_train(self, trainer, summary):
        self.finished = summary
        self.calls.append(("after_train", summary is not None))

    def state_dict(self):
        return {"steps": torch.tensor(self.steps)}

    def load_state_dict(self, state):
        self.steps = int(state["steps"])


def test_callbacks_see_every_hook_in_order_with_the_values_the_loop_used(data_root, tmp_path):
    rec = Recorder()
    trainer = build_trainer(make_cfg(data_root, tmp_path, "SOLVER.MAX_EPOCHS", "2", "SOLVER.EVAL_PERIOD", "1"),
                            CPU, callbacks=[rec])
    summary = trainer.train()
    kinds = [c[0] for c in rec.calls]
    iters = len(trainer.train_loader)
    assert kinds == (["before_train", "after_evaluation"]
                     + (["before_epoch"] + ["after_step"] * iters + ["after_epoch", "after_evaluation"]) * 2
                     + ["after_train"])
    steps = [c for c in rec.calls if c[0] == "after_step"]
    assert [c[3] for c in steps] == list(range(1, 2 * iters + 1))               # global steps
    assert [(c[1], c[2]) for c in steps] == [(e, i) for e in (1, 2) for i in range(1, iters + 1)]
    epochs = [c for c in rec.calls if c[0] == "before_epoch"]
    assert all(c[4] == epochs[c[1] - 1][2] for c in steps)  # the LR each step reports is the epoch's
    per_epoch = [c[2] for c in rec.calls if c[0] == "after_epoch"]
    assert [s["loss"] for s in summary["epochs"]] == per_epoch
    for epoch in (1, 2):  # the epoch's averaged loss is the mean of its steps' (equal batches)
        mean = sum(c[5] for c in steps if c[1] == epoch) / iters
        assert math.isclose(per_epoch[epoch - 1], mean, rel_tol=1e-6)
    evals = [c for c in rec.calls if c[0] == "after_evaluation"]
    assert [c[1] for c in evals] == [0, 1, 2] and evals[-1][2] == summary["latest"]["mAP"]
    assert rec.finished is summary


def test_callback_state_is_in_the_checkpoint_and_comes_back_on_resume(data_root, tmp_path):
    cfg = make_cfg(data_root, tmp_path, "SOLVER.MAX_EPOCHS", "2", "SOLVER.CHECKPOINT_PERIOD", "1",
                   "SOLVER.EVAL_PERIOD", "2")
    first = Recorder()
    trainer = build_trainer(cfg, CPU, callbacks=[first])
    trainer.train()
    iters = len(trainer.train_loader)
    saved = torch.load(tmp_path / "checkpoint_epoch1.pth", map_location="cpu", weights_only=True)
    assert int(saved["callbacks"]["Recorder"]["steps"]) == iters
    # a new process resumes from epoch 1: the callback's count continues from the checkpoint's
    resumed = Recorder()
    trainer = build_trainer(cfg, CPU, callbacks=[resumed])
    trainer.resume(str(tmp_path / "checkpoint_epoch1.pth"))
    assert resumed.steps == iters
    trainer.train()
    assert resumed.steps == first.steps == 2 * iters


def test_after_train_is_called_when_training_fails(data_root, tmp_path):
    def nan_loss(cfg, num_classes):
        real = build_loss(cfg, num_classes)
        return lambda outputs, pids: (lambda total, terms: (total * float("nan"), terms))(*real(outputs, pids))

    rec = Recorder()
    trainer = build_trainer(make_cfg(data_root, tmp_path, "SOLVER.MAX_EPOCHS", "1"), CPU,
                            builders=Builders(loss=nan_loss), callbacks=[rec])
    with pytest.raises(RuntimeError, match="non-finite training loss"):
        trainer.train()
    assert rec.finished is None and rec.calls[-1] == ("after_train", False)
    assert trainer.callbacks[0].writer is None  # the TensorBoard file was closed


def test_callbacks_are_checked():
    with pytest.raises(TypeError, match="has none of the hooks"):
        check_callbacks([object()])
    with pytest.raises(ValueError, match="two callbacks named 'Recorder'"):
        check_callbacks([Recorder(), Recorder()])


# ----------------------------------------------------------------------------- the best-model rule
@pytest.mark.parametrize("metric, best_epoch", [("mAP", 2), ("rank1", 3)])
def test_best_model_follows_solver_best_metric(data_root, tmp_path, monkeypatch, metric, best_epoch):
    # mAP peaks at epoch 2, Rank-1 at epoch 3 (epoch 0: the untrained model, not recorded)
    script = iter([(0.1, 0.1), (0.3, 0.4), (0.5, 0.5), (0.4, 0.6)])

    def scripted(cfg, model, test_sets, device, amp):
        mAP, rank1 = next(script)
        for test_set in test_sets:
            yield test_set, dict({k: 0.0 for k in METRIC_KEYS}, mAP=mAP, rank1=rank1), None

    monkeypatch.setattr(evaluation_module, "evaluate_test_sets", scripted)
    cfg = make_cfg(data_root, tmp_path, "SOLVER.MAX_EPOCHS", "3", "SOLVER.EVAL_PERIOD", "1",
                   "SOLVER.CHECKPOINT_PERIOD", "1", "SOLVER.BEST_METRIC", metric)
    summary = build_trainer(cfg, CPU).train()
    assert summary["best"]["epoch"] == best_epoch
    best = torch.load(tmp_path / "model_best.pth", map_location="cpu", weights_only=True)
    peak = torch.load(tmp_path / f"checkpoint_epoch{best_epoch}.pth", map_location="cpu", weights_only=True)
    assert best["epoch"] == best_epoch
    assert all(torch.equal(best["model"][k], peak["model"][k]) for k in peak["model"])


def test_best_model_rule_names_the_metrics():
    assert BestModelRule("mINP").is_better({"mINP": 0.2}, {"mINP": 0.1})
    assert not BestModelRule().is_better({"mAP": 0.2}, {"mAP": 0.2})  # a tie keeps the earlier epoch
    with pytest.raises(ValueError, match="unknown best-model metric 'top1'"):
        BestModelRule("top1")
    with pytest.raises(Exception, match="SOLVER.BEST_METRIC"):
        load_cfg(TINY_CONFIG, ["SOLVER.BEST_METRIC", "top1"])


# ----------------------------------------------------------------------------- a loss with parameters
def test_a_loss_with_parameters_is_trained_saved_and_resumed(data_root, tmp_path):
    cfg = make_cfg(data_root, tmp_path, "SOLVER.MAX_EPOCHS", "2", "SOLVER.CHECKPOINT_PERIOD", "1",
                   "SOLVER.EVAL_PERIOD", "2")
    trainer = build_trainer(cfg, CPU, builders=Builders(loss=ScaledLoss))
    names = [n for g in trainer.optimizer.param_groups for n in g["names"]]
    assert "loss.log_scale" in names
    trainer.train()
    learned = float(trainer.loss_fn.log_scale.detach())
    assert learned != 0.0  # moved by the optimizer
    saved = torch.load(tmp_path / "checkpoint_epoch2.pth", map_location="cpu", weights_only=True)
    assert float(saved["loss"]["log_scale"]) == learned
    resumed = build_trainer(cfg, CPU, builders=Builders(loss=ScaledLoss))
    resumed.resume(str(tmp_path / "checkpoint_epoch1.pth"))
    epoch1 = torch.load(tmp_path / "checkpoint_epoch1.pth", map_location="cpu", weights_only=True)
    assert float(resumed.loss_fn.log_scale.detach()) == float(epoch1["loss"]["log_scale"]) != 0.0
    resumed.train()
    assert float(resumed.loss_fn.log_scale.detach()) == learned  # resumed exactly


def test_an_optimizer_without_the_loss_parameters_is_refused(data_root, tmp_path):
    from solver import build_optimizer

    def model_only(cfg, model, loss):
        return build_optimizer(cfg, model)

    with pytest.raises(ValueError, match="the loss has parameters that the optimizer does not hold"):
        build_trainer(make_cfg(data_root, tmp_path), CPU, builders=Builders(loss=ScaledLoss, optimizer=model_only))


def test_train_net_takes_builders_and_callbacks(data_root, tmp_path):
    rec = Recorder()
    train_net.main(["--config_file", TINY_CONFIG, "DATASETS.ROOT_DIR", str(data_root), "OUTPUT_DIR", str(tmp_path),
                    *CHEAP, "SOLVER.MAX_EPOCHS", "1"], builders=Builders(loss=ScaledLoss), callbacks=[rec])
    saved = torch.load(tmp_path / "checkpoint_epoch1.pth", map_location="cpu", weights_only=True)
    assert "log_scale" in saved["loss"] and int(saved["callbacks"]["Recorder"]["steps"]) == rec.steps > 0


def test_gradient_clipping_covers_the_loss_parameters(data_root, tmp_path):
    """SOLVER.GRAD_CLIP bounds the norm of every gradient the optimizer applies, the loss's own included."""
    clip = 0.05
    trainer = build_trainer(make_cfg(data_root, tmp_path, "SOLVER.MAX_EPOCHS", "1", "SOLVER.GRAD_CLIP", str(clip)),
                            CPU, builders=Builders(loss=ScaledLoss))
    norms, step = [], trainer.optimizer.step

    def recording_step(*args, **kwargs):
        grads = [p.grad for g in trainer.optimizer.param_groups for p in g["params"] if p.grad is not None]
        loss_grad = float(trainer.loss_fn.log_scale.grad)
        norms.append((float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))),
                      loss_grad))
        return step(*args, **kwargs)

    trainer.optimizer.step = recording_step
    trainer.train()
    assert norms and all(total <= clip * (1 + 1e-5) for total, _ in norms), norms
    assert all(abs(loss_grad) <= clip * (1 + 1e-5) for _, loss_grad in norms)
