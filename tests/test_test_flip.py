"""TEST.FLIP: the eval-mode feature is the normalised mean of the features of the image and of its mirror,
checked against two explicit ``model.extract`` calls (float64, CPU)."""
import pytest
import torch
import torch.nn.functional as F

from configs import get_cfg_defaults
from model import build_model
from tests.helpers import tiny_cfg

NUM_CLASSES, NUM_CAMS = 5, 3


def _model(*overrides):
    torch.manual_seed(0)
    model = build_model(tiny_cfg("TEST.FLIP", "True", *overrides), NUM_CLASSES, NUM_CAMS).double()
    with torch.no_grad():  # BN statistics that are not the identity, so that "after" differs from "before"
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _batch(n=4):
    torch.manual_seed(1)
    return torch.randn(n, 3, 64, 32, dtype=torch.float64), torch.arange(n) % NUM_CAMS


def _two_forwards(model, images, cams, neck_feat="before", part_norm=False):
    """normalise(mean(f(x), f(mirror(x)))) from two explicit ``extract`` calls."""
    plain = model.extract(images, cams)
    mirrored = model.extract(images.flip(-1), cams)
    parts = []
    for name in model.feature_dims:
        mean = (plain[name] + mirrored[name]) / 2
        if neck_feat == "after":
            mean = model.heads[name].bn(mean)
        parts.append(F.normalize(mean, dim=1) if part_norm else mean)
    return F.normalize(torch.cat(parts, dim=1), dim=1)


def test_flip_is_off_by_default_and_set_from_the_config():
    assert get_cfg_defaults().TEST.FLIP is False
    assert build_model(tiny_cfg(), NUM_CLASSES, NUM_CAMS).flip is False
    assert _model().flip is True


@pytest.mark.parametrize("neck_feat, part_norm", [("before", False), ("after", False), ("before", True)])
@torch.no_grad()
def test_flip_feature_is_the_normalised_mean_of_two_forwards(neck_feat, part_norm):
    model = _model("TEST.NECK_FEAT", neck_feat, "TEST.PART_NORM", str(part_norm))
    images, cams = _batch()
    out = model(images, cams)
    expected = _two_forwards(model, images, cams, neck_feat, part_norm)
    assert out.dtype == torch.float64 and out.shape == (4, model.test_dim)
    assert torch.allclose(out, expected, rtol=0, atol=1e-12), (out - expected).abs().max()
    # the mean is taken before normalisation: the mean of the two normalised features is another vector
    plain, mirrored = (model.retrieval_feature(model.extract(x, cams)) for x in (images, images.flip(-1)))
    assert (out - (plain + mirrored) / 2).abs().max() > 1e-6


@torch.no_grad()
def test_flip_changes_the_feature():
    model = _model()
    images, cams = _batch()
    flipped = model(images, cams)
    model.flip = False
    unflipped = model(images, cams)
    assert torch.allclose(unflipped, model.retrieval_feature(model.extract(images, cams)), rtol=0, atol=1e-12)
    assert (flipped - unflipped).abs().max() > 1e-3


@torch.no_grad()
def test_flip_feature_is_mirror_invariant():
    model = _model()
    images, cams = _batch()
    assert torch.allclose(model(images.flip(-1), cams), model(images, cams), rtol=0, atol=1e-12)
    model.flip = False  # without it the model is not mirror invariant (so the check above means something)
    assert (model(images.flip(-1), cams) - model(images, cams)).abs().max() > 1e-3


def test_training_output_ignores_flip():
    model = _model().train()
    images, cams = _batch()
    with_flip = model(images, cams)
    model.flip = False
    without = model(images, cams)
    for name, out in with_flip.items():
        assert torch.equal(out.feature, without[name].feature), name
