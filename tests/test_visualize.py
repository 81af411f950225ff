"""Grad-CAM, HTM attention weights and ranked lists on a tiny FusionReID (processor/visualization.py,
tools/visualize.py)."""
import os

import numpy as np
import pytest
import torch

from model import build_model
from tests.helpers import tiny_cfg
from processor import visualization as vis

# ResNet18 (last stride 1) and ViT-Tiny stride 12 at 64x32: CNN grid 4x2, Transformer grid 5x2.
CNN_GRID, TRANS_GRID = (4, 2), (5, 2)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(tiny_cfg(), num_classes=7, num_cams=3).eval()


@pytest.fixture(scope="module")
def batch():
    torch.manual_seed(1)
    return torch.randn(2, 3, 64, 32), torch.tensor([0, 2])


def test_grad_cam_layers_shapes_and_range(model, batch):
    images, cams = batch
    maps, classes = vis.grad_cam(model, images, cams)
    assert list(maps) == ["cnn/backbone", "cnn/lru", "cnn/htm1", "cnn/htm2",
                          "transformer/backbone", "transformer/lru", "transformer/htm1", "transformer/htm2"]
    for label, cam in maps.items():
        grid = CNN_GRID if label.startswith("cnn") else TRANS_GRID
        assert cam.shape == (2, *grid), label
        assert cam.min() >= 0 and cam.max() <= 1, label
    assert classes.shape == (2,) and classes.max() < 7
    # Every layer gets a gradient: Grad-CAM keeps positive evidence only, and an untrained model (PyTorch's
    # default init in the HTMs, as released) may have none at a layer for a given image, so ask it of 8 images.
    torch.manual_seed(2)
    many, _ = vis.grad_cam(model, torch.randn(8, 3, 64, 32), torch.arange(8) % 3)
    for label, cam in many.items():
        assert cam.flatten(1).max(dim=1)[0].gt(0).any(), f"{label}: all-zero maps for 8 images"
    # the model is left as it was and gets no parameter gradients
    assert not model.training and all(p.grad is None for p in model.parameters())


def test_grad_cam_targets(model, batch):
    images, cams = batch
    given, classes = vis.grad_cam(model, images, cams, class_ids=[3, 5])
    assert classes.tolist() == [3, 5]
    norm, none = vis.grad_cam(model, images, cams, target="norm", head="htm_transformer")
    assert none is None
    # one head reaches only what it depends on: the Transformer's own last SEU tokens are read only by
    # the CNN branch's MFU, so htm_transformer gives them no gradient
    assert norm["transformer/htm2"].abs().sum() == 0
    only_cnn, _ = vis.grad_cam(model, images, cams, head="cnn")
    assert only_cnn["transformer/backbone"].abs().sum() == 0 and only_cnn["cnn/backbone"].max() > 0
    with pytest.raises(ValueError, match="head 'nope'"):
        vis.grad_cam(model, images, cams, head="nope")


def test_grad_cam_sees_what_the_model_computes(model, batch):
    """The hooked activations are the model's own: the recorded features equal the eval forward."""
    images, cams = batch
    with torch.no_grad():
        feats, acts, grids = vis.capture_activations(model, images, cams)
        assert torch.allclose(model.retrieval_feature(feats), model(images, cams))
    assert grids == {"cnn": CNN_GRID, "transformer": TRANS_GRID}
    maps = vis.activation_maps(acts)
    assert maps["cnn/backbone"].shape == (2, model.cnn.out_dim, *CNN_GRID)
    assert maps["transformer/htm2"].shape == (2, 64, *TRANS_GRID)


def test_unshared_seu_and_no_seu(batch):
    images, cams = batch
    unshared = build_model(tiny_cfg("MODEL.FUSION.SHARE_SEU", "False", "MODEL.FUSION.HTM_LAYERS", "1"), 7, 3).eval()
    maps, _ = vis.grad_cam(unshared, images, cams)
    assert "cnn/htm1" in maps and maps["transformer/htm1"].shape == (2, *TRANS_GRID)
    mfu_only = build_model(tiny_cfg("MODEL.FUSION.HTM_ORDER", "mfu", "MODEL.FUSION.HTM_LAYERS", "1"), 7, 3).eval()
    maps, _ = vis.grad_cam(mfu_only, images, cams)
    assert list(maps) == ["cnn/backbone", "cnn/lru", "transformer/backbone", "transformer/lru"]


def test_attention_grids_sum_to_one_per_head(model, batch):
    images, cams = batch
    grids = vis.attention_grids(model, images, cams)
    assert list(grids) == ["htm1/seu/cnn", "htm1/mfu/cnn", "htm1/seu/transformer", "htm1/mfu/transformer",
                           "htm2/seu/cnn", "htm2/mfu/cnn", "htm2/seu/transformer", "htm2/mfu/transformer"]
    heads = 4
    for key, entry in grids.items():
        w = entry["weights"]
        assert torch.allclose(w.sum(dim=-1), torch.ones(2, heads), atol=1e-5), key
        over = entry["over"]
        assert over == (key.split("/")[2] if "/seu/" in key else
                        {"cnn": "transformer", "transformer": "cnn"}[key.split("/")[2]])
        grid = CNN_GRID if over == "cnn" else TRANS_GRID
        assert entry["grid"].shape == (2, heads, *grid), key
        local_sum = entry["grid"].sum(dim=(-2, -1)) + entry.get("self", 0)
        assert torch.allclose(local_sum, torch.ones(2, heads), atol=1e-5), key


def test_rank_gallery_removes_same_camera_matches():
    dist = np.array([[0.1, 0.2, 0.3, 0.4]])
    assert vis.rank_gallery(dist, 3).tolist() == [[0, 1, 2]]
    ranked = vis.rank_gallery(dist, 5, q_pids=[1], g_pids=[1, 1, 2, 3], q_camids=[0], g_camids=[0, 1, 0, 0])
    assert ranked.tolist() == [[1, 2, 3, -1, -1]]


def test_pngs_are_written(model, batch, tmp_path):
    images, cams = batch
    shown = vis.to_display(images, [0.5] * 3, [0.5] * 3)
    assert shown.shape == (2, 64, 32, 3) and shown.min() >= 0 and shown.max() <= 1
    maps, _ = vis.grad_cam(model, images, cams)
    grids = vis.attention_grids(model, images, cams)
    paths = [
        vis.plot_gradcam(shown, maps, str(tmp_path / "cam.png"), names=["a", "b"]),
        vis.plot_attention(shown[0], grids, str(tmp_path / "heads.png"), heads=2),
        vis.plot_attention_summary(shown, grids, str(tmp_path / "attn.png")),
        vis.plot_ranked_list(shown, list(shown), np.array([[1, 0], [0, -1]]), str(tmp_path / "rank.png"),
                             matches=[[True, False], [False, False]], distances=[[0.1, 0.2], [0.3, 0.0]]),
    ]
    for path in paths:
        assert os.path.getsize(path) > 1000
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_cli_on_own_images(model, tmp_path, capsys):
    from PIL import Image

    from tests.helpers import TINY
    from tools import visualize

    weight = str(tmp_path / "model.pth")
    torch.save({"model": model.state_dict()}, weight)
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (64, 32, 3), dtype=np.uint8)).save(folder / f"p{i}.png")
    out = tmp_path / "vis"
    visualize.main(["--images", str(folder), "--out", str(out), "--target", "norm", "--heads-of", "1", "--cams", "0,-1",
                    "TEST.WEIGHT", weight] + list(TINY))
    assert sorted(os.listdir(out)) == ["attention.png", "attention_heads_1.png", "gradcam.png"]
    assert "gradcam.png" in capsys.readouterr().out
