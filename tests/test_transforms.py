"""Train/test transforms: output shape, value range, and the paper's augmentations."""
import numpy as np
import torch
from PIL import Image

from configs import get_cfg_defaults
from datasets import build_transforms


def make_cfg(**input_keys):
    cfg = get_cfg_defaults()
    cfg.INPUT.SIZE_TRAIN = [32, 16]
    cfg.INPUT.SIZE_TEST = [32, 16]
    for key, value in input_keys.items():
        assert key in cfg.INPUT, key  # a misspelt or renamed key would otherwise be added silently
        cfg.INPUT[key] = value
    return cfg


def gradient_image(h=50, w=20):
    x = np.tile(np.linspace(0, 255, w, dtype=np.uint8), (h, 1))
    return Image.fromarray(np.stack([x, x, 255 - x], axis=2))


def test_test_transform_shape_range_and_determinism():
    transform = build_transforms(make_cfg(), is_train=False)
    out = transform(gradient_image())
    assert out.shape == (3, 32, 16) and out.dtype == torch.float32
    assert out.min() >= -1.0 and out.max() <= 1.0 and out.min() < -0.9 and out.max() > 0.9   # (x - .5) / .5
    assert torch.equal(transform(gradient_image()), out)
    # left-to-right gradient kept in channel 0, reversed in channel 2 (no flip at test time)
    assert out[0, :, 0].mean() < out[0, :, -1].mean() and out[2, :, 0].mean() > out[2, :, -1].mean()


def test_normalisation_uses_config_mean_std():
    cfg = make_cfg(PIXEL_MEAN=[0.0, 0.0, 0.0], PIXEL_STD=[1.0, 1.0, 1.0])
    out = build_transforms(cfg, is_train=False)(Image.new("RGB", (20, 50), (255, 0, 51)))
    assert torch.allclose(out[:, 5, 5], torch.tensor([1.0, 0.0, 0.2]), atol=1e-6)


def test_train_transform_shape_and_range_without_erasing():
    transform = build_transforms(make_cfg(RE_PROB=0.0), is_train=True)
    torch.manual_seed(0)
    for _ in range(10):
        out = transform(gradient_image())
        assert out.shape == (3, 32, 16)
        assert out.min() >= -1.0 and out.max() <= 1.0


def test_flip_probability():
    image = gradient_image()
    never = build_transforms(make_cfg(RE_PROB=0.0, PADDING=0, FLIP_PROB=0.0), is_train=True)
    always = build_transforms(make_cfg(RE_PROB=0.0, PADDING=0, FLIP_PROB=1.0), is_train=True)
    reference = build_transforms(make_cfg(), is_train=False)(image)
    assert torch.allclose(never(image), reference, atol=0.02)
    assert torch.allclose(always(image), reference.flip(-1), atol=0.02)


def test_padding_and_random_crop_shift_the_image():
    transform = build_transforms(make_cfg(RE_PROB=0.0, FLIP_PROB=0.0, PADDING=4), is_train=True)
    torch.manual_seed(1)
    outs = [transform(Image.new("RGB", (16, 32), (255, 255, 255))) for _ in range(20)]
    # zero padding shows up as black (normalised -1) borders in some crops; crops differ
    assert any((o == -1).any() for o in outs)
    assert len({o.sum().item() for o in outs}) > 1


def test_random_erasing_fills_gaussian_noise():
    transform = build_transforms(make_cfg(RE_PROB=1.0, FLIP_PROB=0.0, PADDING=0), is_train=True)
    torch.manual_seed(2)
    out = transform(Image.new("RGB", (16, 32), (128, 128, 128)))
    plain = build_transforms(make_cfg(), is_train=False)(Image.new("RGB", (16, 32), (128, 128, 128)))
    erased = (out - plain).abs().sum(0) > 1e-3
    area = erased.float().mean().item()
    assert 0.02 * 0.5 <= area <= 1 / 3 + 0.05               # one rectangle of 2%..33% of the image
    values = out[:, erased]
    assert values.std() > 0.5 and values.min() < -1.0        # per-pixel N(0, 1) noise, beyond the image range
