"""A checkpoint knows its model (issue 16, item 3).

``seu_mfu`` and ``mfu_seu`` have the same tensor names and shapes: without the stored config's architecture
keys being compared, a ``seu_mfu`` checkpoint was evaluated as ``mfu_seu`` with exit 0 and no word. Now
``TEST.WEIGHT``, ``MODEL.PRETRAIN_CHOICE self`` and ``--resume`` refuse a checkpoint trained with another
architecture in one line naming every differing key with both values; ``--resume`` also refuses another number of
identities or cameras, before loading anything; a bare state dict loads as before. A resume under another training
config (or of a checkpoint older than some keys) goes on with one warning naming each key.
"""
import logging

import pytest
import torch
import yaml

from helpers import tiny_cfg
from loss import build_loss
from model import build_model
from model.backbones.weights import WeightsError
from model.checkpointer import architecture_differences, load_model_weights
from processor.trainer import Trainer
from solver import build_optimizer, build_scheduler
from utils.checkpoint import CheckpointError
from utils.errors import FusionReIDError

IDS, CAMS = 5, 3


def _trainer(cfg, ids=IDS, cams=CAMS):
    torch.manual_seed(0)
    model = build_model(cfg, ids, cams)
    optimizer = build_optimizer(cfg, model)
    return Trainer(cfg, model, build_loss(cfg, ids), optimizer, build_scheduler(cfg, optimizer), [], None, 0,
                   torch.device("cpu"), test_sets=[object()])


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A training checkpoint of a seu_mfu model (as Trainer.save writes it) and its bare state dict."""
    folder = tmp_path_factory.mktemp("ckpt")
    cfg = tiny_cfg("OUTPUT_DIR", "")
    trainer = _trainer(cfg)
    full, bare = folder / "checkpoint_epoch1.pth", folder / "bare.pth"
    torch.save(trainer.state_dict(1), full)
    torch.save(trainer.model.state_dict(), bare)
    return full, bare, trainer.model.state_dict()


def test_differences_name_every_key_and_both_values():
    stored = tiny_cfg().dump()
    ours = tiny_cfg("MODEL.FUSION.HTM_ORDER", "mfu_seu", "MODEL.TRANSFORMER.STRIDE_SIZE", "[16, 16]",
                    "TEST.FEAT", "cnn")  # TEST.FEAT is a retrieval choice, not the architecture
    assert architecture_differences(stored, ours) == [
        "MODEL.TRANSFORMER.STRIDE_SIZE: [12, 12] in the checkpoint, [16, 16] here",
        "MODEL.FUSION.HTM_ORDER: 'seu_mfu' in the checkpoint, 'mfu_seu' here"]
    assert architecture_differences(stored, tiny_cfg()) == []


def test_training_only_keys_are_not_the_architecture():
    """model.spec marks which keys decide what the tensors mean: drop rates, the initialisation, the starting GeM
    exponent and freezing do not; the branches, the camera embedding and every structural key do."""
    stored = tiny_cfg().dump()
    assert architecture_differences(stored, tiny_cfg(
        "MODEL.TRANSFORMER.DROP_PATH", "0.2", "MODEL.FUSION.INIT", "trunc_normal", "MODEL.GEM_P", "4.0",
        "SOLVER.FREEZE_GRADIENT_FREE", "False")) == []
    differing = architecture_differences(stored, tiny_cfg(
        "MODEL.TRANSFORMER.SIE_CAMERA", "False", "MODEL.CNN.POOLING", "avg", "MODEL.FUSION.MLP_RATIO", "2.0"))
    assert [d.split(":")[0] for d in differing] == [
        "MODEL.TRANSFORMER.SIE_CAMERA", "MODEL.FUSION.MLP_RATIO", "MODEL.CNN.POOLING"]


def test_test_weight_of_another_htm_order_is_refused(saved):
    full, bare, state = saved
    cfg = tiny_cfg("MODEL.FUSION.HTM_ORDER", "mfu_seu")
    model = build_model(cfg, IDS, CAMS)
    with pytest.raises(WeightsError) as err:
        load_model_weights(model, cfg, str(full), "TEST.WEIGHT")
    message = str(err.value)
    assert "\n" not in message and message.startswith("TEST.WEIGHT: ")
    assert "MODEL.FUSION.HTM_ORDER: 'seu_mfu' in the checkpoint, 'mfu_seu' here" in message
    # a bare state dict has no config to compare: it loads as before (same names and shapes)
    load_model_weights(model, cfg, str(bare), "TEST.WEIGHT")
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_fine_tuning_from_another_architecture_is_refused(saved):
    full, _, _ = saved
    with pytest.raises(WeightsError, match=r"MODEL.PRETRAIN_PATH: .*MODEL.FUSION.DIM: 64 in the checkpoint, 32 here"):
        build_model(tiny_cfg("MODEL.PRETRAIN_CHOICE", "self", "MODEL.PRETRAIN_PATH", str(full),
                             "MODEL.FUSION.DIM", "32"), IDS, CAMS)


@pytest.mark.parametrize("overrides, ids, cams, words", [
    (("MODEL.FUSION.HTM_ORDER", "mfu_seu"), IDS, CAMS, "MODEL.FUSION.HTM_ORDER: 'seu_mfu' in the checkpoint"),
    ((), IDS + 2, CAMS, f"{IDS} identities in the checkpoint, {IDS + 2} in this run's data"),
    ((), IDS, CAMS + 1, f"{CAMS} cameras in the checkpoint, {CAMS + 1} in this run's data"),
])
def test_resume_over_another_model_is_refused_before_loading(saved, overrides, ids, cams, words):
    full, _, _ = saved
    trainer = _trainer(tiny_cfg("OUTPUT_DIR", "", *overrides), ids, cams)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    with pytest.raises(CheckpointError) as err:
        trainer.resume(str(full))
    assert isinstance(err.value, FusionReIDError) and "\n" not in str(err.value)
    assert words in str(err.value)
    assert all(torch.equal(v, before[k]) for k, v in trainer.model.state_dict().items())  # nothing loaded
    assert trainer.start_epoch == 1


def _resume_warnings(trainer, path, caplog):
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        trainer.resume(str(path))
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_resume_of_the_same_model_still_works(saved, caplog):
    full, _, state = saved
    trainer = _trainer(tiny_cfg("OUTPUT_DIR", ""))
    assert _resume_warnings(trainer, full, caplog) == []
    assert trainer.start_epoch == 2
    assert all(torch.equal(v, state[k]) for k, v in trainer.model.state_dict().items())


def test_resume_under_another_training_config_names_each_key(saved, caplog):
    """Resuming goes on under the new config, in one warning naming every training key that changed with both
    values; where the run is placed, how fast it computes and how it is evaluated are not training."""
    full, _, _ = saved
    base = tiny_cfg()
    trainer = _trainer(tiny_cfg("OUTPUT_DIR", "", "SOLVER.BASE_LR", str(base.SOLVER.BASE_LR * 2), "SOLVER.MAX_EPOCHS",
                                "60", "TEST.FEAT", "cnn", "SOLVER.EVAL_PERIOD", "5", "MODEL.GRAD_CHECKPOINT", "True"))
    warnings = _resume_warnings(trainer, full, caplog)
    assert len(warnings) == 1 and str(full) in warnings[0]
    named = warnings[0][warnings[0].index("(") + 1:-1].split("; ")
    assert named == [f"SOLVER.MAX_EPOCHS: {base.SOLVER.MAX_EPOCHS} in the checkpoint, 60 here",
                     f"SOLVER.BASE_LR: {base.SOLVER.BASE_LR!r} in the checkpoint, {base.SOLVER.BASE_LR * 2!r} here"]
    assert trainer.start_epoch == 2


def test_resume_of_an_older_checkpoint_names_the_keys_it_predates(saved, tmp_path, caplog):
    """A checkpoint written before SOLVER.SCHEDULE existed resumes under this config's schedule, and says so."""
    full, _, _ = saved
    ckpt = torch.load(full, map_location="cpu", weights_only=False)
    stored = yaml.safe_load(ckpt["config"])
    del stored["SOLVER"]["SCHEDULE"], stored["SOLVER"]["BEST_METRIC"]  # BEST_METRIC: evaluation, not training
    old = tmp_path / "checkpoint_epoch1.pth"
    torch.save(dict(ckpt, config=yaml.safe_dump(stored)), old)
    trainer = _trainer(tiny_cfg("OUTPUT_DIR", ""))
    assert _resume_warnings(trainer, old, caplog) == [
        f"--resume: {old} predates SOLVER.SCHEDULE; this config's values are used (SOLVER.SCHEDULE 'release')"]
    assert trainer.start_epoch == 2


# ----------------------------------------------------------------------------- a failed run leaves OUTPUT_DIR alone
def _snapshot(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != "train.log"}


def test_a_refused_resume_changes_nothing_but_the_log(tmp_path):
    """issue 16 item 4: config.yaml and TensorBoard files are written after data, model and resume are set up."""
    import train_net
    from helpers import TINY_CONFIG

    data, out = tmp_path / "data", tmp_path / "out"
    args = ["--config_file", TINY_CONFIG, "DATASETS.ROOT_DIR", str(data), "OUTPUT_DIR", str(out),
            "SOLVER.MAX_EPOCHS", "1"]
    train_net.main(args)
    before, log = _snapshot(out), (out / "train.log").read_text()
    assert "config.yaml" in before and any(n.startswith("events.out.tfevents") for n in before)
    with pytest.raises(SystemExit) as err:
        train_net.main(args + ["--resume", "MODEL.FUSION.HTM_ORDER", "mfu_seu", "SOLVER.MAX_EPOCHS", "2"])
    assert "MODEL.FUSION.HTM_ORDER: 'seu_mfu' in the checkpoint, 'mfu_seu' here" in str(err.value)
    assert _snapshot(out) == before  # no new config.yaml, no new events file, checkpoints untouched
    after = (out / "train.log").read_text()
    assert after.startswith(log) and "Traceback" in after[len(log):]
    with pytest.raises(SystemExit):  # a bad CSV_DIR fails while the data are set up
        train_net.main(args + ["DATASETS.NAMES", "csv", "DATASETS.CSV_DIR", str(tmp_path / "nowhere")])
    assert _snapshot(out) == before
