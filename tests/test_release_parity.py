"""The defaults compute what the authors' released model computes (docs/RELEASE_DIFFERENCES.md).

Each test pins one item of that list: LayerNorm eps, the retrieval feature (f_a normalised as a
whole), GeM precision, and T2T-ViT-14 as the released FusionReID builds and loads it.
"""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from helpers import tiny_cfg
from model import build_model
from model.backbones import build_transformer
from model.backbones.t2t_vit import T2TViT, sinusoid_position_table
from model.fusion import MutualFusionUnit, SharedEncodingUnit
from model.pooling import GeneralizedMeanPooling

NUM_CLASSES, NUM_CAMS = 6, 3


def _layer_norms(module):
    return [(name, m) for name, m in module.named_modules() if isinstance(m, nn.LayerNorm)]


def _batch(cfg, n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    h, w = cfg.INPUT.SIZE_TEST
    return torch.randn(n, 3, h, w, generator=g), torch.arange(n) % NUM_CAMS


# ----------------------------------------------------------------------------- LayerNorm eps
def test_fusion_layer_norms_use_pytorch_default_eps():
    model = build_model(tiny_cfg(), NUM_CLASSES, NUM_CAMS)
    fusion = _layer_norms(model.htm)
    # per HTM: SEU block (2) + SEU final norm (1) + two MFUs x (query, key, FFN) norms (6)
    assert len(fusion) == 2 * 9
    assert all(m.eps == 1e-5 for _, m in fusion), [(n, m.eps) for n, m in fusion if m.eps != 1e-5]
    # the ViT backbone keeps timm's/the ImageNet checkpoints' 1e-6
    vit = _layer_norms(model.transformer)
    assert vit and all(m.eps == 1e-6 for _, m in vit)


def test_t2t_layer_norms_use_pytorch_default_eps():
    t2t = build_transformer("t2t_vit_t_14", (64, 32), (16, 16))
    norms = _layer_norms(t2t)
    assert len(norms) == 2 * 2 + 14 * 2 + 1  # two token transformers, 14 blocks, final norm
    assert all(m.eps == 1e-5 for _, m in norms), [(n, m.eps) for n, m in norms if m.eps != 1e-5]


def test_seu_eps_changes_its_output():
    """The eps matters at the released code's scale (a test that would pass for any eps proves nothing)."""
    torch.manual_seed(0)
    seu = SharedEncodingUnit(32, 4).double().eval()
    x = torch.randn(2, 5, 32, dtype=torch.float64) * 1e-3  # small activations make eps visible
    out = seu(x)
    for m in seu.modules():
        if isinstance(m, nn.LayerNorm):
            m.eps = 1e-6
    assert not torch.allclose(out, seu(x), atol=1e-6)


# ----------------------------------------------------------------------------- retrieval feature
def _parts(model, images, cams):
    with torch.no_grad():
        feats = model.extract(images, cams)
    return [feats[n] for n in model.feature_dims]


def _float64_eval(*overrides):
    """(model, eval output, the six parts) of a tiny float64 model on a fixed batch."""
    cfg = tiny_cfg(*overrides)
    torch.manual_seed(1)
    model = build_model(cfg, NUM_CLASSES, NUM_CAMS).double().eval()
    images, cams = _batch(cfg)
    images = images.double()
    with torch.no_grad():
        out = model(images, cams)
    return model, out, _parts(model, images, cams)


def test_eval_feature_is_f_a_normalised_as_a_whole():
    _, out, parts = _float64_eval()
    f_a = torch.cat(parts, dim=1)
    expected = f_a / f_a.norm(dim=1, keepdim=True)
    assert out.dtype == torch.float64
    assert torch.allclose(out, expected, rtol=0, atol=1e-12)
    per_part = torch.cat([F.normalize(p, dim=1) for p in parts], dim=1)
    per_part = per_part / per_part.norm(dim=1, keepdim=True)
    assert (out - per_part).abs().max() > 1e-3  # the two protocols really differ on this model


def test_part_norm_option_normalises_each_part_first():
    _, out, parts = _float64_eval("TEST.PART_NORM", "True")
    expected = torch.cat([F.normalize(p, dim=1) for p in parts], dim=1) / math.sqrt(len(parts))
    assert torch.allclose(out, expected, rtol=0, atol=1e-12)


def test_feat_norm_off_returns_the_raw_concatenation():
    cfg = tiny_cfg("TEST.FEAT_NORM", "False")
    torch.manual_seed(1)
    model = build_model(cfg, NUM_CLASSES, NUM_CAMS).eval()
    images, cams = _batch(cfg)
    with torch.no_grad():
        out = model(images, cams)
    assert torch.equal(out, torch.cat(_parts(model, images, cams), dim=1))


def test_fp16_features_are_normalised_without_overflow():
    """A sum of squares of 5888 fp16 values overflows 65504: normalisation must run wider."""
    cfg = tiny_cfg("TEST.FEAT", "cnn")
    model = build_model(cfg, NUM_CLASSES, NUM_CAMS).eval()
    big = torch.full((2, 512), 40.0, dtype=torch.float16)  # squared sum 819200 > fp16 max
    out = model.retrieval_feature({"cnn": big})
    assert torch.isfinite(out).all() and torch.allclose(out.float().norm(dim=1), torch.ones(2), atol=1e-3)


# ----------------------------------------------------------------------------- GeM precision
def _gem_reference(x, p, eps=1e-6):
    return x.clamp(min=eps).pow(p).mean(dim=(-2, -1)).pow(1.0 / p)


def test_gem_keeps_float64():
    torch.manual_seed(2)
    gem = GeneralizedMeanPooling(3.0).double()
    x = torch.rand(2, 5, 4, 3, dtype=torch.float64) * 3
    out = gem(x)
    assert out.dtype == torch.float64
    # a float32 round trip would leave ~1e-7 relative error
    assert torch.allclose(out, _gem_reference(x, 3.0), rtol=1e-14, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_gem_computes_half_precision_inputs_in_float32(dtype):
    torch.manual_seed(3)
    gem = GeneralizedMeanPooling(3.0)
    x = (torch.rand(2, 5, 4, 3) * 40).to(dtype)  # 40^3 = 64000: the cube of a few such values overflows fp16
    out = gem(x)
    assert out.dtype == dtype
    assert torch.isfinite(out.float()).all()
    assert torch.allclose(out.float(), _gem_reference(x.float(), 3.0).to(dtype).float(), rtol=0, atol=0)


# ----------------------------------------------------------------------------- T2T-ViT-14
def _manual_block_attention(block, x, scale):
    """The attention branch of a timm Block, written out with an explicit scale."""
    attn = block.attn
    B, N, C = x.shape
    h = block.norm1(x)
    q, k, v = attn.qkv(h).reshape(B, N, 3, attn.num_heads, C // attn.num_heads).permute(2, 0, 3, 1, 4)
    w = (q @ k.transpose(-2, -1) * scale).softmax(dim=-1)
    return attn.proj((w @ v).transpose(1, 2).reshape(B, N, C))


@pytest.mark.parametrize("attn_scale,scale", [("head_dim", 64 ** -0.5), ("embed_dim", 384 ** -0.5)])
def test_t2t_attention_scale(attn_scale, scale):
    torch.manual_seed(4)
    t2t = T2TViT((64, 32), attn_scale=attn_scale).double().eval()
    block = t2t.blocks[0]
    x = torch.randn(2, 9, 384, dtype=torch.float64)
    with torch.no_grad():
        got = block.attn(block.norm1(x))
        want = _manual_block_attention(block, x, scale)
        other = _manual_block_attention(block, x, 384 ** -0.5 if attn_scale == "head_dim" else 64 ** -0.5)
    assert torch.allclose(got, want, rtol=0, atol=1e-10)
    assert not torch.allclose(got, other, atol=1e-4)


def test_t2t_default_is_the_released_build():
    cfg = tiny_cfg("MODEL.TRANSFORMER.NAME", "t2t_vit_t_14")
    model = build_model(cfg, NUM_CLASSES, NUM_CAMS)
    assert model.transformer.attn_scale == "head_dim" and model.transformer.pos_embed_source == "checkpoint"


def _official_t2t_file(tmp_path, table, container="state_dict", **extra):
    torch.manual_seed(5)
    state = dict(T2TViT((224, 224)).state_dict())
    state["pos_embed"] = table
    state["head.weight"], state["head.bias"] = torch.randn(1000, 384), torch.randn(1000)
    path = tmp_path / "t2t.pth.tar"
    torch.save({container: state, **extra}, path)
    return str(path), state


def test_t2t_position_table_is_resized_from_the_checkpoint(tmp_path):
    table = torch.randn(1, 1 + 14 * 14, 384)
    path, _ = _official_t2t_file(tmp_path, table)
    t2t = build_transformer("t2t_vit_t_14", (256, 128), (16, 16))
    t2t.load_pretrained(path)
    # written out independently of timm: bilinear, no antialiasing, corners not aligned
    grid = table[:, 1:].reshape(1, 14, 14, 384).permute(0, 3, 1, 2)
    resized = F.interpolate(grid, size=(16, 8), mode="bilinear", align_corners=False)
    expected = torch.cat([table[:, :1], resized.permute(0, 2, 3, 1).reshape(1, 16 * 8, 384)], dim=1)
    assert t2t.pos_embed.shape == (1, 1 + 16 * 8, 384)
    assert torch.allclose(t2t.pos_embed, expected, atol=1e-6)
    # the table is part of the model's state, so a trained FusionReID checkpoint keeps it
    assert "pos_embed" in t2t.state_dict()


def test_t2t_sinusoid_option_ignores_the_checkpoint_table(tmp_path):
    path, _ = _official_t2t_file(tmp_path, torch.randn(1, 197, 384))
    t2t = T2TViT((256, 128), pos_embed="sinusoid")
    t2t.load_pretrained(path)
    assert torch.equal(t2t.pos_embed, sinusoid_position_table(1 + 16 * 8, 384))


def test_t2t_reads_state_dict_before_the_ema(tmp_path):
    """As the released FusionReID reads the official file: 'state_dict' wins over 'state_dict_ema'."""
    path, state = _official_t2t_file(tmp_path, torch.randn(1, 197, 384))
    ckpt = torch.load(path, weights_only=True)
    ckpt["state_dict_ema"] = {k: v + 1.0 for k, v in ckpt["state_dict"].items()}
    torch.save(ckpt, path)
    t2t = build_transformer("t2t_vit_t_14", (256, 128), (16, 16))
    t2t.load_pretrained(path)
    assert torch.equal(t2t.blocks[0].mlp.fc1.weight, state["blocks.0.mlp.fc1.weight"])
