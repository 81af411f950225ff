"""processor/feature_extractor.py and tools/extract_features.py: the same features as the evaluation path."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

from datasets import build_transforms
from model import build_model
from model.backbones.weights import WeightsError
from processor import extract_features as evaluation_features
from tests.helpers import TINY, tiny_cfg
from model.checkpointer import model_sizes, read_model_file
from processor.feature_extractor import FeatureExtractor, find_images, folder_identities
from utils.misc import resolve_amp

NUM_CLASSES, NUM_CAMS = 5, 3


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model saved as train_net saves it, and a few images in per-identity folders."""
    root = tmp_path_factory.mktemp("extract")
    cfg = tiny_cfg()
    torch.manual_seed(0)
    model = build_model(cfg, NUM_CLASSES, NUM_CAMS)
    with torch.no_grad():  # give BN statistics and the camera table values that make a difference
        model.transformer.sie_embed.normal_()
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
    weight = str(root / "model_best.pth")
    torch.save({"model": model.state_dict(), "epoch": 3}, weight)
    rng = np.random.default_rng(0)
    paths = []
    for pid in ("0001", "0002"):
        os.makedirs(root / "images" / pid)
        for k in range(2):
            path = root / "images" / pid / f"{pid}_{k}.jpg"
            Image.fromarray(rng.integers(0, 255, (96, 40, 3), dtype=np.uint8)).save(path)
            paths.append(str(path))
    return cfg, model.eval(), weight, paths, str(root)


@pytest.fixture(scope="module")
def extract(trained):
    cfg, _, weight, _, _ = trained
    return FeatureExtractor(cfg, weight, device="cpu")


def _processor_features(model, batch, cams):
    """Features of ``batch`` through the evaluation path of processor/ (test_net's)."""
    loader = [(batch, torch.zeros(len(cams), dtype=torch.long), cams, torch.arange(len(cams)))]
    cpu = torch.device("cpu")
    feats, _, _ = evaluation_features(model, loader, cpu, amp=resolve_amp("off", cpu))
    return feats


def test_sizes_come_from_the_checkpoint(trained):
    cfg, _, weight, _, _ = trained
    state, _ = read_model_file(weight, "TEST.WEIGHT")
    assert model_sizes(state, weight, "TEST.WEIGHT") == (NUM_CLASSES, NUM_CAMS)


def test_same_features_as_the_evaluation_path(trained, extract):
    cfg, model, _, paths, _ = trained
    cams = torch.tensor([0, 1, 2, 1])
    ours = extract(paths, cam_ids=cams.tolist())
    transform = build_transforms(cfg, is_train=False)
    batch = torch.stack([transform(Image.open(p).convert("RGB")) for p in paths])
    assert ours.shape == (4, model.test_dim)
    assert torch.allclose(ours, _processor_features(model, batch, cams), atol=1e-5)
    # PIL images and RGB arrays give the same features as their files
    same = extract([Image.open(paths[0]), np.asarray(Image.open(paths[1]).convert("RGB"))], cam_ids=[0, 1])
    assert torch.allclose(same, ours[:2], atol=1e-6)


def test_unknown_camera_is_the_mean_embedding(trained, extract):
    cfg, model, _, paths, _ = trained
    unknown = extract(paths)
    assert torch.allclose(unknown, extract(paths, cam_ids=[-1, None, -1, -1]))
    assert not torch.allclose(unknown, extract(paths, cam_ids=[0] * 4))
    averaged = build_model(cfg, NUM_CLASSES, NUM_CAMS).eval()
    averaged.load_state_dict(model.state_dict())
    with torch.no_grad():  # every camera row = the mean: any camera id gives the mean embedding
        averaged.transformer.sie_embed.copy_(model.transformer.sie_embed.mean(0, keepdim=True).expand_as(
            model.transformer.sie_embed))
    batch = extract.preprocess(paths)
    assert torch.allclose(unknown, _processor_features(averaged, batch, torch.zeros(4, dtype=torch.long)), atol=1e-5)
    with pytest.raises(ValueError, match=r"camera ids must be in \[0, 3\)"):
        extract(paths[:1], cam_ids=[3])


def test_errors_name_the_key(trained, extract, tmp_path):
    cfg = trained[0]
    with pytest.raises(WeightsError, match="TEST.WEIGHT is empty"):
        FeatureExtractor(cfg)
    with pytest.raises(WeightsError, match="TEST.WEIGHT.*not found"):
        FeatureExtractor(cfg, str(tmp_path / "missing.pth"))
    with pytest.raises(TypeError, match="image 0"):
        extract.preprocess([42])


def test_folders_and_identities(trained):
    _, _, _, paths, root = trained
    found = find_images(os.path.join(root, "images"))
    assert found == sorted(paths)
    assert folder_identities(found, os.path.join(root, "images")) == ["0001", "0001", "0002", "0002"]
    assert folder_identities(found, os.path.join(root, "images", "0001")) is None


def test_cli_extracts_and_ranks(trained, tmp_path, capsys):
    from tools import extract_features

    cfg, _, weight, paths, root = trained
    images = os.path.join(root, "images")
    overrides = ["TEST.WEIGHT", weight] + list(TINY)
    extract_features.main(["--images", images, "--out", str(tmp_path / "f.npz")] + overrides)
    data = np.load(tmp_path / "f.npz")
    assert data["features"].shape[0] == 4 and list(data["paths"]) == sorted(paths)
    extract_features.main(["--query", images, "--gallery", images, "--out", str(tmp_path / "r.npz"),
                           "--topk", "3", "--figure-queries", "2"] + overrides)
    ranked = np.load(tmp_path / "r.npz")
    assert ranked["ranking"].shape == (4, 3) and (ranked["ranking"][:, 0] == np.arange(4)).all()  # itself first
    assert os.path.getsize(tmp_path / "r_ranked.png") > 1000
    assert "ranked lists" in capsys.readouterr().out


def test_flip_is_honoured(trained, extract, tmp_path):
    """TEST.FLIP: the extractor (and tools/extract_features.py) give normalise(mean(f(x), f(mirror(x))))."""
    import torch.nn.functional as F

    from tests.helpers import tiny_cfg
    from tools import extract_features

    _, model, weight, paths, root = trained
    flip_cfg = tiny_cfg("TEST.FLIP", "True")
    flipped = FeatureExtractor(flip_cfg, weight, device="cpu")
    assert flipped.model.flip and not extract.model.flip
    cams = torch.tensor([0, 1, 2, 1])
    ours = flipped(paths, cam_ids=cams.tolist())
    batch = flipped.preprocess(paths)
    with torch.no_grad():
        plain, mirrored = model.extract(batch, cams), model.extract(batch.flip(-1), cams)
    expected = F.normalize(torch.cat([(plain[n] + mirrored[n]) / 2 for n in model.feature_dims], dim=1), dim=1)
    assert torch.allclose(ours, expected, atol=1e-5), (ours - expected).abs().max()
    assert (ours - extract(paths, cam_ids=cams.tolist())).abs().max() > 1e-3  # not the unflipped feature
    extract_features.main(["--images", os.path.join(root, "images"), "--out", str(tmp_path / "f.npz"),
                           "TEST.WEIGHT", weight, *TINY, "TEST.FLIP", "True"])
    unknown_cams = flipped(sorted(paths))  # the tool has no camera ids: the mean camera
    assert np.allclose(np.load(tmp_path / "f.npz")["features"], unknown_cams.numpy(), atol=1e-5)
