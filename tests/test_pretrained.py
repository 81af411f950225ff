"""Pretrained weights from local files in every supported format; wrong files fail with the key named."""
import logging

import numpy as np
import pytest
import torch
import torch.nn as nn
import torchvision
from safetensors.torch import save_file
from timm.models.vision_transformer import VisionTransformer

from model import WeightsError, build_model
from model.backbones import build_cnn, build_transformer
from model.backbones.t2t_vit import T2TViT
from tests.helpers import tiny_cfg


def _imagenet_vit(seed=0, depth=12):
    """A ViT-Tiny in timm's own ImageNet layout (224x224, 14x14 grid, with a classification head)."""
    torch.manual_seed(seed)
    return VisionTransformer(img_size=224, patch_size=16, num_classes=1000, embed_dim=192, depth=depth, num_heads=3,
                             qkv_bias=True)


def _check_vit_loaded(vit, ref_state):
    """Blocks copied exactly; pos_embed = class position + the 14x14 grid resized bilinearly to vit's grid."""
    own = vit.state_dict()
    for k in ("blocks.3.attn.qkv.weight", "blocks.11.mlp.fc2.bias", "patch_embed.proj.weight", "norm.weight",
              "cls_token"):
        assert torch.equal(own[k], ref_state[k]), k
    pos = ref_state["pos_embed"]
    assert torch.equal(own["pos_embed"][:, :1], pos[:, :1])
    grid = pos[:, 1:].reshape(1, 14, 14, -1).permute(0, 3, 1, 2)
    resized = nn.functional.interpolate(grid, size=vit.grid_size, mode="bilinear", align_corners=False)
    assert torch.allclose(own["pos_embed"][:, 1:], resized.flatten(2).transpose(1, 2), atol=1e-6)


@pytest.mark.parametrize("fmt", ["pth", "safetensors", "deit_dict"])
def test_vit_checkpoint_formats_load_with_resampled_position_embedding(tmp_path, fmt):
    ref = _imagenet_vit().state_dict()
    path = tmp_path / f"vit.{'safetensors' if fmt == 'safetensors' else 'pth'}"
    if fmt == "safetensors":
        save_file(ref, str(path))
    elif fmt == "deit_dict":
        torch.save({"model": ref, "epoch": 300}, path)
    else:
        torch.save(ref, path)
    vit = build_transformer("vit_tiny_patch16_224", (256, 128), (12, 12), num_cams=4)
    vit.load_pretrained(str(path))
    _check_vit_loaded(vit, ref)


def test_distilled_deit_drops_the_distillation_token(tmp_path):
    ref = _imagenet_vit().state_dict()
    deit = dict(ref)
    deit["dist_token"] = torch.randn(1, 1, 192)
    deit["pos_embed"] = torch.cat([ref["pos_embed"][:, :1], torch.randn(1, 1, 192), ref["pos_embed"][:, 1:]], dim=1)
    deit["head_dist.weight"], deit["head_dist.bias"] = torch.randn(1000, 192), torch.randn(1000)
    torch.save({"model": deit}, tmp_path / "deit.pth")
    vit = build_transformer("vit_tiny_patch16_224", (128, 64), (16, 16), num_cams=2)
    vit.load_pretrained(str(tmp_path / "deit.pth"))
    _check_vit_loaded(vit, ref)


def _to_jax_npz(state, path, heads=3):
    """Write a timm ViT state dict in Google's JAX .npz layout (the original ViT release)."""
    d = state["cls_token"].shape[-1]
    hd = d // heads
    w = {"embedding/kernel": state["patch_embed.proj.weight"].permute(2, 3, 1, 0),
         "embedding/bias": state["patch_embed.proj.bias"], "cls": state["cls_token"],
         "Transformer/posembed_input/pos_embedding": state["pos_embed"],
         "Transformer/encoder_norm/scale": state["norm.weight"], "Transformer/encoder_norm/bias": state["norm.bias"]}
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    for i in range(depth):
        b, p = f"blocks.{i}.", f"Transformer/encoderblock_{i}/"
        for n, ln in (("norm1", "LayerNorm_0"), ("norm2", "LayerNorm_2")):
            w[f"{p}{ln}/scale"], w[f"{p}{ln}/bias"] = state[b + n + ".weight"], state[b + n + ".bias"]
        qkv_w, qkv_b = state[b + "attn.qkv.weight"].chunk(3), state[b + "attn.qkv.bias"].chunk(3)
        for n, wt, bs in zip(("query", "key", "value"), qkv_w, qkv_b):
            w[f"{p}MultiHeadDotProductAttention_1/{n}/kernel"] = wt.T.reshape(d, heads, hd)
            w[f"{p}MultiHeadDotProductAttention_1/{n}/bias"] = bs.reshape(heads, hd)
        w[f"{p}MultiHeadDotProductAttention_1/out/kernel"] = state[b + "attn.proj.weight"].reshape(d, heads, hd).permute(1, 2, 0)
        w[f"{p}MultiHeadDotProductAttention_1/out/bias"] = state[b + "attn.proj.bias"]
        for r in range(2):
            w[f"{p}MlpBlock_3/Dense_{r}/kernel"] = state[b + f"mlp.fc{r + 1}.weight"].T
            w[f"{p}MlpBlock_3/Dense_{r}/bias"] = state[b + f"mlp.fc{r + 1}.bias"]
    np.savez(path, **{k: v.detach().numpy() for k, v in w.items()})


def test_vit_npz_checkpoint_loads(tmp_path):
    ref = _imagenet_vit().state_dict()
    _to_jax_npz(ref, tmp_path / "vit.npz")
    vit = build_transformer("vit_tiny_patch16_224", (256, 128), (12, 12), num_cams=4)
    vit.load_pretrained(str(tmp_path / "vit.npz"))
    _check_vit_loaded(vit, ref)


def test_vit_of_another_width_fails_naming_the_key(tmp_path):
    torch.save(_imagenet_vit().state_dict(), tmp_path / "tiny.pth")
    vit = build_transformer("vit_small_patch16_224", (64, 32), (16, 16), num_cams=0)
    with pytest.raises(WeightsError, match=r"MODEL.TRANSFORMER.PRETRAIN_PATH: .*tiny.pth.*shape"):
        vit.load_pretrained(str(tmp_path / "tiny.pth"))


def test_resnet_torchvision_state_dict_loads_without_fc(tmp_path):
    torch.manual_seed(1)
    ref = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(ref, tmp_path / "resnet18-f37072fd.pth")
    cnn = build_cnn("resnet18", last_stride=1)
    cnn.load_pretrained(str(tmp_path / "resnet18-f37072fd.pth"))
    own = cnn.state_dict()
    assert all(torch.equal(own[k], ref[k]) for k in own)
    assert not any(k.startswith("fc.") for k in own)
    assert cnn.layer4[0].conv1.stride == (1, 1)  # last stride 1 kept after loading


def test_resnet_of_another_depth_fails_listing_keys(tmp_path):
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), tmp_path / "resnet34.pth")
    with pytest.raises(WeightsError) as e:
        build_cnn("resnet18").load_pretrained(str(tmp_path / "resnet34.pth"))
    msg = str(e.value)
    assert "MODEL.CNN.PRETRAIN_PATH" in msg and "resnet34.pth" in msg and "unexpected" in msg and "layer" in msg


def test_missing_or_corrupt_files_name_the_key(tmp_path):
    cfg = tiny_cfg("MODEL.PRETRAIN_CHOICE", "imagenet", "MODEL.CNN.PRETRAIN_PATH", str(tmp_path / "nope.pth"))
    with pytest.raises(WeightsError, match=r"MODEL.CNN.PRETRAIN_PATH: weight file not found: .*nope.pth"):
        build_model(cfg, 5, 2)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    cfg = tiny_cfg("MODEL.PRETRAIN_CHOICE", "imagenet", "MODEL.TRANSFORMER.PRETRAIN_PATH", str(tmp_path / "junk.pth"))
    with pytest.raises(WeightsError, match=r"MODEL.TRANSFORMER.PRETRAIN_PATH: cannot read .*junk.pth"):
        build_model(cfg, 5, 2)
    with pytest.raises(WeightsError, match="MODEL.PRETRAIN_PATH is empty"):
        build_model(tiny_cfg("MODEL.PRETRAIN_CHOICE", "self"), 5, 2)


def test_imagenet_choice_loads_both_backbones(tmp_path):
    torch.manual_seed(2)
    cnn_ref = torchvision.models.resnet18(weights=None).state_dict()
    vit_ref = _imagenet_vit(3).state_dict()
    torch.save(cnn_ref, tmp_path / "r18.pth")
    torch.save(vit_ref, tmp_path / "vit.pth")
    cfg = tiny_cfg("MODEL.PRETRAIN_CHOICE", "imagenet", "MODEL.CNN.PRETRAIN_PATH", str(tmp_path / "r18.pth"),
                   "MODEL.TRANSFORMER.PRETRAIN_PATH", str(tmp_path / "vit.pth"))
    model = build_model(cfg, 5, 2)
    assert torch.equal(model.cnn.conv1.weight, cnn_ref["conv1.weight"])
    assert torch.equal(model.transformer.blocks[0].attn.qkv.weight, vit_ref["blocks.0.attn.qkv.weight"])


def test_t2t_official_checkpoint_loads(tmp_path):
    torch.manual_seed(4)
    src = T2TViT((224, 224), num_cams=0)
    state = {k: v for k, v in src.state_dict().items()}
    state["pos_embed"] = torch.randn(1, 197, 384)  # the official file stores its fixed table; it is recomputed
    state["head.weight"], state["head.bias"] = torch.randn(1000, 384), torch.randn(1000)
    torch.save({"state_dict_ema": state, "epoch": 309}, tmp_path / "81.7_T2T_ViTt_14.pth.tar")
    t2t = build_transformer("t2t_vit_t_14", (256, 128), (16, 16), num_cams=3)
    t2t.load_pretrained(str(tmp_path / "81.7_T2T_ViTt_14.pth.tar"))
    assert torch.equal(t2t.tokens_to_token.attention1.attn.qkv.weight, state["tokens_to_token.attention1.attn.qkv.weight"])
    assert torch.equal(t2t.blocks[13].mlp.fc1.weight, state["blocks.13.mlp.fc1.weight"])
    assert t2t.pos_embed.shape == (1, 1 + 16 * 8, 384)


def test_self_checkpoint_strips_module_prefix_and_skips_other_classifiers(tmp_path, caplog):
    cfg = tiny_cfg()
    torch.manual_seed(5)
    trained = build_model(cfg, 9, 3)
    state = {"module." + k: v for k, v in trained.state_dict().items()}
    torch.save({"model": state, "epoch": 3}, tmp_path / "ckpt.pth")
    cfg2 = tiny_cfg("MODEL.PRETRAIN_CHOICE", "self", "MODEL.PRETRAIN_PATH", str(tmp_path / "ckpt.pth"))
    with caplog.at_level(logging.INFO):
        other = build_model(cfg2, 4, 3)  # another dataset: 4 identities
    assert "re-made for this dataset: ID classifiers (9 -> 4 identities)" in caplog.text
    for k, v in other.state_dict().items():
        if not k.endswith("classifier.weight"):
            assert torch.equal(v, trained.state_dict()[k]), k
    # another architecture is an error that lists keys
    cfg3 = tiny_cfg("MODEL.PRETRAIN_CHOICE", "self", "MODEL.PRETRAIN_PATH", str(tmp_path / "ckpt.pth"),
                    "MODEL.FUSION.HTM_LAYERS", "1")
    with pytest.raises(WeightsError, match=r"not a checkpoint of this architecture: unexpected .*htm.1"):
        build_model(cfg3, 9, 3)
