"""Fine-tuning from a ReID checkpoint on a dataset with other identities and cameras (issue 18, item 5).

``MODEL.PRETRAIN_CHOICE self`` + ``MODEL.PRETRAIN_PATH``: the ID classifiers and the camera embedding are
re-made for the new dataset, everything else is loaded, and one log line says so. Evaluating a checkpoint
(``TEST.WEIGHT``, ``fine_tune`` off) with another number of cameras is refused instead: its features would
depend on untrained camera rows.
"""
import logging

import pytest
import torch

from helpers import tiny_cfg
from model import build_model
from model.backbones.weights import WeightsError
from model.checkpointer import load_model_weights

SOURCE_IDS, SOURCE_CAMS, TARGET_IDS, TARGET_CAMS = 9, 6, 4, 2


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model(tiny_cfg(), SOURCE_IDS, SOURCE_CAMS)
    with torch.no_grad():  # weights no fresh model could have
        for p in model.parameters():
            p.add_(0.5)
    path = tmp_path_factory.mktemp("ckpt") / "model_best.pth"
    torch.save({"model": model.state_dict(), "epoch": 3}, path)
    return path, model.state_dict()


def test_fine_tune_remakes_classifiers_and_camera_embedding_and_loads_the_rest(checkpoint, caplog):
    path, source = checkpoint
    torch.manual_seed(1)
    fresh = build_model(tiny_cfg(), TARGET_IDS, TARGET_CAMS).state_dict()
    torch.manual_seed(1)
    with caplog.at_level(logging.INFO, logger="model"):
        tuned = build_model(tiny_cfg("MODEL.PRETRAIN_CHOICE", "self", "MODEL.PRETRAIN_PATH", str(path)),
                            TARGET_IDS, TARGET_CAMS).state_dict()
    remade = {k for k in tuned if k.endswith("classifier.weight") or k.endswith("sie_embed")}
    assert len(remade) == 7  # six classifiers and the camera embedding
    for name, value in tuned.items():
        if name in remade:
            assert value.shape[0] == (TARGET_CAMS if name.endswith("sie_embed") else TARGET_IDS), name
            assert torch.equal(value, fresh[name]), name
        else:
            assert torch.equal(value, source[name]), name
    lines = [r.getMessage() for r in caplog.records if "re-made for this dataset" in r.getMessage()]
    assert len(lines) == 1
    assert f"ID classifiers ({SOURCE_IDS} -> {TARGET_IDS} identities)" in lines[0]
    assert f"camera embedding ({SOURCE_CAMS} -> {TARGET_CAMS} cameras)" in lines[0]


def test_evaluating_a_checkpoint_with_other_cameras_is_refused(checkpoint):
    path, _ = checkpoint
    model = build_model(tiny_cfg(), TARGET_IDS, TARGET_CAMS)
    with pytest.raises(WeightsError, match="TEST.WEIGHT"):
        load_model_weights(model, tiny_cfg(), str(path), "TEST.WEIGHT")
    # the same cameras: only the unused classifiers differ, and the checkpoint loads
    load_model_weights(build_model(tiny_cfg(), TARGET_IDS, SOURCE_CAMS), tiny_cfg(), str(path), "TEST.WEIGHT")
