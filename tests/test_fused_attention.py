"""Fused attention (``scaled_dot_product_attention``) in the HTM units and the token backbones equals the
explicit softmax(q k^T / sqrt(d)) v in float64; the explicit path runs only when the attention weights are
asked for (visualisation), and gives the same features."""
import pytest
import torch
import torch.nn.functional as F

from model import build_model
from model.backbones.t2t_vit import TokenAttention
from model.fusion import MutualFusionUnit, SharedEncodingUnit
from tests.helpers import tiny_cfg

TOL = 1e-10
NUM_CLASSES, NUM_CAMS = 7, 3


@pytest.fixture
def sdpa_calls(monkeypatch):
    """A list that gets one entry per call of ``F.scaled_dot_product_attention``."""
    calls, original = [], F.scaled_dot_product_attention

    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return original(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", counting)
    return calls


def _explicit(q, k, v, scale):
    """softmax(q k^T * scale) v and the weights."""
    weights = (q @ k.transpose(-2, -1) * scale).softmax(dim=-1)
    return weights @ v, weights


def _max_diff(a, b):
    return (a - b).abs().max().item()


def test_mfu_fused_equals_explicit(sdpa_calls):
    torch.manual_seed(0)
    mfu = MutualFusionUnit(64, 4).double().eval()
    query, context = torch.randn(3, 64).double(), torch.randn(3, 10, 64).double()
    fused = mfu(query, context)
    assert len(sdpa_calls) == 1
    with_weights, weights = mfu(query, context, return_attention=True)
    assert len(sdpa_calls) == 1  # the weights come from the explicit path
    mfu.fused_attn = False
    explicit = mfu(query, context)
    assert len(sdpa_calls) == 1
    assert _max_diff(fused, explicit) <= TOL and _max_diff(fused, with_weights) <= TOL
    # the returned weights are softmax(q k^T / sqrt(d)) of this forward (Eqs. 6-7)
    q = mfu._heads(mfu.q(mfu.norm_q(query)[:, None]))
    k = mfu._heads(mfu.k(mfu.norm_k(context)))
    _, ref = _explicit(q, k, k, mfu.scale)
    assert _max_diff(weights, ref[:, :, 0]) <= TOL
    assert torch.allclose(weights.sum(-1), torch.ones(3, 4, dtype=torch.float64))


def test_seu_fused_equals_explicit(sdpa_calls):
    torch.manual_seed(0)
    seu = SharedEncodingUnit(64, 4).double().eval()
    tokens = torch.randn(3, 11, 64).double()
    assert seu.block.attn.fused_attn
    fused = seu(tokens)
    with_weights, weights = seu(tokens, return_attention=True)
    assert len(sdpa_calls) == 2  # the features come from the fused forward in both calls
    seu.block.attn.fused_attn = False  # timm's explicit path
    explicit = seu(tokens)
    assert _max_diff(fused, explicit) <= TOL and _max_diff(fused, with_weights) <= TOL
    attn = seu.block.attn
    q, k, _ = attn.qkv(seu.block.norm1(tokens)).reshape(3, 11, 3, 4, 16).permute(2, 0, 3, 1, 4)
    _, ref = _explicit(q, k, k, attn.scale)
    assert _max_diff(weights, ref[:, :, 0]) <= TOL


def test_t2t_token_attention_fused_equals_explicit(sdpa_calls):
    torch.manual_seed(0)
    attn = TokenAttention(27, 16).double().eval()
    x = torch.randn(2, 12, 27).double()
    out = attn(x)
    assert len(sdpa_calls) == 1
    q, k, v = attn.qkv(x).reshape(2, 12, 3, 1, 16).permute(2, 0, 3, 1, 4)
    attended, _ = _explicit(q, k, v, attn.scale)
    ref = v.transpose(1, 2).reshape(2, 12, 16) + attn.proj(attended.transpose(1, 2).reshape(2, 12, 16))
    assert _max_diff(out, ref) <= TOL


@pytest.mark.parametrize("transformer", ["vit_tiny_patch16_224", "t2t_vit_t_14"])
def test_model_features_fused_explicit_and_with_weights_agree(transformer, sdpa_calls):
    """float64, eval: the fused model, the model with every attention explicit, and the forward that also
    returns the HTM attention weights give the same features."""
    cfg = tiny_cfg("MODEL.TRANSFORMER.NAME", transformer)
    torch.manual_seed(0)
    model = build_model(cfg, NUM_CLASSES, NUM_CAMS).double().eval()
    torch.manual_seed(1)
    images, cams = torch.randn(2, 3, *cfg.INPUT.SIZE_TRAIN).double(), torch.tensor([0, 2])
    with torch.no_grad():
        fused = model.extract(images, cams)
        assert sdpa_calls
        maps = {}
        with_weights = model.extract(images, cams, attention=maps)
        for m in model.modules():
            if hasattr(m, "fused_attn"):
                m.fused_attn = False
        explicit = model.extract(images, cams)
    assert maps
    for name in fused:
        assert _max_diff(fused[name], with_weights[name]) <= TOL, name
        assert _max_diff(fused[name], explicit[name]) <= TOL, name
