"""Fresh initialisation: no outliers anywhere, and the LRU/HTM modules start as MODEL.FUSION.INIT says.

The outlier bound. Every initialiser the model uses is bounded or Gaussian: uniform (PyTorch's Linear/Conv2d
defaults, at most sqrt(3) = 1.73 of its std from the mean), truncated normal within +-2 std
(``model.weight_init``: at most 2/0.88 = 2.27 of its own std), or a Gaussian (torchvision's kaiming-normal
convolutions, the ViT class token, the BNNeck classifiers) drawn by PyTorch's float32 Box-Muller, whose radius
is at most sqrt(-2 ln 2^-24) = 5.77 std (1e8 draws reach 5.76; 2.4M, the largest tensor here, about 5.3).
Position tables (T2T's sinusoid) lie in [-1, 1] with a spread of ~0.7. So no freshly initialised tensor has a
value more than 6 of its own standard deviations from its own mean (OUTLIER_STDS), while timm's
``trunc_normal_(t, std=0.02)`` with its absolute bounds +-2 gives an exact -2.0 about once in 2^24 draws: 100
std, 114 of the tensor's measured std. Tensors without spread (norm weights 1, biases 0, PReLU 0.25) are
checked to be finite only.

The default 'pytorch' statistics: a Linear/Conv2d of fan-in n has weights U(+-1/sqrt(n)) (kaiming-uniform with
a = sqrt(5)), std 1/sqrt(3 n), and biases U(+-1/sqrt(n)); LayerNorm/BatchNorm weight 1 and bias 0; PReLU 0.25.
The measured std of m uniform draws has a relative standard error sqrt(0.8 / (4 m)) = 0.45/sqrt(m); the tolerance
is 6 of those.
"""
import math

import pytest
import torch
import torch.nn as nn
from torch.nn.init import _calculate_fan_in_and_fan_out

from model import build_model
from model.backbones import backbone_names, build_cnn, build_transformer
from model.fusion import FUSION_INITS
from model.weight_init import trunc_normal_
from tests.helpers import tiny_cfg

NUM_CLASSES, NUM_CAMS = 7, 3
OUTLIER_STDS = 6.0
TRUNC_STD = 0.02 * 0.8796  # std of N(0, 0.02^2) truncated at +-2 std

FUSION_CONFIGS = {
    "seu_mfu": [],
    "seu": ["MODEL.FUSION.HTM_ORDER", "seu"],
    "mfu_seu": ["MODEL.FUSION.HTM_ORDER", "mfu_seu"],
    "mfu": ["MODEL.FUSION.HTM_ORDER", "mfu"],
    "unshared_seu": ["MODEL.FUSION.SHARE_SEU", "False"],
    "shared_mfu": ["MODEL.FUSION.SHARE_MFU", "True"],
    "unshared_seu_shared_mfu_mfu_seu": ["MODEL.FUSION.SHARE_SEU", "False", "MODEL.FUSION.SHARE_MFU", "True",
                                        "MODEL.FUSION.HTM_ORDER", "mfu_seu"],
    "lru_only": ["MODEL.FUSION.HTM_LAYERS", "0"],
    "no_lru": ["MODEL.FUSION.LRU", "False", "MODEL.FUSION.HTM_LAYERS", "0"],
}
# ResNet50 + ViT-B/16* at 256x128, D=768, 12 heads, L=2: the paper's model, random backbones
PAPER = ["MODEL.CNN.NAME", "resnet50", "MODEL.TRANSFORMER.NAME", "vit_base_patch16_224", "MODEL.FUSION.DIM", "768",
         "MODEL.FUSION.NUM_HEADS", "12", "INPUT.SIZE_TRAIN", "[256, 128]", "INPUT.SIZE_TEST", "[256, 128]"]
PAPER_SEED = 0


def assert_no_outliers(tensors):
    """Every floating tensor finite; each with spread within OUTLIER_STDS of its own std from its own mean."""
    bad = []
    for name, t in tensors:
        if not t.is_floating_point():
            continue
        t = t.detach().double()
        assert torch.isfinite(t).all(), name
        if t.numel() < 2:
            continue
        std = t.std()
        if std == 0:
            continue
        worst = float((t - t.mean()).abs().max() / std)
        if worst > OUTLIER_STDS:
            bad.append(f"{name}: {worst:.1f} std (min {float(t.min()):.4g}, max {float(t.max()):.4g})")
    assert not bad, bad


def _std_close(t, expected):
    """The measured std of ``t`` (uniform draws) is ``expected`` within 6 standard errors."""
    tol = 6 * 0.45 / math.sqrt(t.numel())
    return abs(float(t.double().std()) / expected - 1) <= tol


def fusion_layers(model):
    """(name, module) of the LRU and HTM modules' layers, names relative to the model."""
    for prefix, part in (("lru", model.lru), ("htm", model.htm)):
        for name, m in part.named_modules():
            yield f"{prefix}.{name}", m


def check_pytorch_defaults(model):
    """The LRU/HTM layers have PyTorch's default initialisation (MODEL.FUSION.INIT 'pytorch')."""
    seen = set()
    for name, m in fusion_layers(model):
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            fan_in, _ = _calculate_fan_in_and_fan_out(m.weight)
            bound = 1 / math.sqrt(fan_in)
            w = m.weight.detach()
            assert w.abs().max() <= bound, name
            assert _std_close(w, bound / math.sqrt(3)), (name, float(w.std()), bound / math.sqrt(3))
            if m.bias is not None:
                b = m.bias.detach()
                assert b.abs().max() <= bound, name
                assert b.abs().max() > bound / 2, name  # spread over the range, not zeros
                assert _std_close(b, bound / math.sqrt(3)), (name, float(b.std()), bound / math.sqrt(3))
            seen.add(type(m))
        elif isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)):
            assert torch.equal(m.weight, torch.ones_like(m.weight)) and torch.equal(m.bias, torch.zeros_like(m.bias))
        elif isinstance(m, nn.PReLU):
            assert torch.equal(m.weight, torch.full_like(m.weight, 0.25)), name
    return seen


def check_trunc_normal(model):
    """MODEL.FUSION.INIT 'trunc_normal': Linear weights N(0, 0.02) within +-2 std, biases 0; convolutions
    kaiming-normal fan-out, biases 0; norms 1 and 0."""
    for name, m in fusion_layers(model):
        if isinstance(m, nn.Linear):
            w = m.weight.detach()
            assert w.abs().max() <= 2 * 0.02, name
            assert abs(float(w.std()) / TRUNC_STD - 1) < 0.05 + 6 * 0.5 / math.sqrt(w.numel()), name
        elif isinstance(m, nn.Conv2d):
            _, fan_out = _calculate_fan_in_and_fan_out(m.weight)
            w = m.weight.detach()
            assert abs(float(w.std()) / math.sqrt(2 / fan_out) - 1) < 6 * 0.71 / math.sqrt(w.numel()), name
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.LayerNorm, nn.BatchNorm2d)) and m.bias is not None:
            assert not m.bias.detach().any(), name
        if isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)):
            assert torch.equal(m.weight, torch.ones_like(m.weight)), name


# ----------------------------------------------------------------------------- the helper
def test_trunc_normal_is_bounded_relative_to_std_and_draws_as_timm():
    """Bounds at +-2 std (not timm's absolute +-2) and the same random stream afterwards as timm's call."""
    from timm.layers import trunc_normal_ as timm_trunc_normal_

    torch.manual_seed(0)
    t = trunc_normal_(torch.empty(1_000_000), std=0.02)
    after = torch.rand(4)
    assert t.abs().max() <= 0.04 and abs(float(t.std()) / TRUNC_STD - 1) < 0.01
    torch.manual_seed(0)
    timm_trunc_normal_(torch.empty(1_000_000), std=0.02)
    assert torch.equal(torch.rand(4), after)


# ----------------------------------------------------------------------------- backbones
# resnet50 and vit_base_patch16_224 are the paper-size model's (below)
@pytest.mark.parametrize("name", [n for n in backbone_names("cnn") if n != "resnet50"])
def test_cnn_random_init_has_no_outliers(name):
    torch.manual_seed(PAPER_SEED)
    assert_no_outliers(build_cnn(name, 1, (256, 128)).state_dict().items())


@pytest.mark.parametrize("name", [n for n in backbone_names("transformer") if n != "vit_base_patch16_224"])
def test_transformer_random_init_has_no_outliers(name):
    """The random start without a pretrained file (MODEL.PRETRAIN_CHOICE none): ViT/DeiT (timm's init with
    bounded truncation), T2T-ViT, the camera embedding."""
    torch.manual_seed(PAPER_SEED)
    net = build_transformer(name, (256, 128), (12, 12), num_cams=15)
    assert_no_outliers(net.state_dict().items())
    weights = [p for n, p in net.named_parameters() if n.endswith("weight") and p.dim() == 2]  # the Linears
    assert weights and all(p.abs().max() <= 0.04 for p in weights)
    assert net.sie_embed.abs().max() <= 0.04


# ----------------------------------------------------------------------------- fusion configurations
@pytest.mark.parametrize("init", FUSION_INITS)
@pytest.mark.parametrize("config", sorted(FUSION_CONFIGS))
def test_fusion_configurations_start_as_configured(config, init):
    """Every HTM order, sharing and LRU setting, both MODEL.FUSION.INIT values (read by build_model): no
    outliers in the whole model; the LRU/HTM layers with PyTorch's default statistics, or the truncated-normal
    ones."""
    torch.manual_seed(PAPER_SEED)
    model = build_model(tiny_cfg(*FUSION_CONFIGS[config], "MODEL.FUSION.INIT", init), NUM_CLASSES, NUM_CAMS)
    assert model.fusion_init == init
    assert_no_outliers(model.state_dict().items())
    if init == "pytorch":
        seen = check_pytorch_defaults(model)
        assert (nn.Conv2d in seen) == (config != "no_lru") and (nn.Linear in seen) == ("lru" not in config)
    else:
        check_trunc_normal(model)


@pytest.mark.parametrize("init", FUSION_INITS)
def test_paper_size_model_starts_without_outliers(init):
    """ResNet50 + ViT-B/16* (random), D=768, 12 heads, L=2, fixed seed: the exact -2.0 of an absolute-bound
    truncated normal shows only with tens of millions of draws (the HTMs hold 42M weights, the ViT-B 86M)."""
    torch.manual_seed(PAPER_SEED)
    model = build_model(tiny_cfg(*PAPER, "MODEL.FUSION.INIT", init), NUM_CLASSES, NUM_CAMS)
    assert len(model.htm) == 2 and model.lru["cnn"].pointwise[0].weight.shape == (768, 2048, 1, 1)
    assert_no_outliers(model.state_dict().items())
    if init == "pytorch":
        check_pytorch_defaults(model)
    else:
        check_trunc_normal(model)
