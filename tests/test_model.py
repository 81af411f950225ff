"""FusionReID: features of every ablation, gradients, camera embedding, patch grids, paper Params/FLOPs."""
import pytest
import torch

from configs.paper_tables import TABLES
from model import FEATURE_NAMES, build_model
from model.backbones import build_transformer, patch_grid
from model.complexity import count_macs, count_params
from model.fusion import HeterogenousTransmissionModule, MutualFusionUnit, SharedEncodingUnit
from tests.helpers import tiny_cfg

NUM_CLASSES, NUM_CAMS = 7, 3

ALL = set(FEATURE_NAMES)
ABLATIONS = {
    # Table II rows
    "cnn_only": (["MODEL.TRANSFORMER.NAME", "''", "MODEL.FUSION.LRU", "False", "MODEL.FUSION.HTM_LAYERS", "0"],
                 {"cnn"}),
    "transformer_only": (["MODEL.CNN.NAME", "''", "MODEL.FUSION.LRU", "False", "MODEL.FUSION.HTM_LAYERS", "0"],
                         {"transformer"}),
    "dfe": (["MODEL.FUSION.LRU", "False", "MODEL.FUSION.HTM_LAYERS", "0"], {"cnn", "transformer"}),
    "lru": (["MODEL.FUSION.HTM_LAYERS", "0"], {"cnn", "transformer", "lru_cnn", "lru_transformer"}),
    "seu": (["MODEL.FUSION.HTM_ORDER", "seu"], ALL),
    "mfu": (["MODEL.FUSION.HTM_ORDER", "mfu"], ALL),
    "full": ([], ALL),
    # Table III-V, Fig. 5, Table VI backbones
    "mfu_seu": (["MODEL.FUSION.HTM_ORDER", "mfu_seu"], ALL),
    "shared_both": (["MODEL.FUSION.SHARE_MFU", "True"], ALL),
    "unshared_both": (["MODEL.FUSION.SHARE_SEU", "False"], ALL),
    "gap": (["MODEL.FUSION.POOLING", "avg"], ALL),
    "one_layer": (["MODEL.FUSION.HTM_LAYERS", "1"], ALL),
    "three_layers": (["MODEL.FUSION.HTM_LAYERS", "3"], ALL),
    "t2t": (["MODEL.TRANSFORMER.NAME", "t2t_vit_t_14"], ALL),
    "deit_no_overlap": (["MODEL.TRANSFORMER.NAME", "deit_base_patch16_224", "MODEL.TRANSFORMER.STRIDE_SIZE",
                         "[16, 16]", "INPUT.SIZE_TRAIN", "[32, 32]", "INPUT.SIZE_TEST", "[32, 32]"], ALL),
}


def _batch(cfg, n=4):
    h, w = cfg.INPUT.SIZE_TRAIN
    torch.manual_seed(0)
    return torch.randn(n, 3, h, w), torch.arange(n) % NUM_CAMS


@pytest.mark.parametrize("name", sorted(ABLATIONS))
def test_every_ablation_has_its_features_and_shapes(name):
    overrides, expected = ABLATIONS[name]
    cfg = tiny_cfg(*overrides)
    model = build_model(cfg, NUM_CLASSES, NUM_CAMS).train()
    images, cams = _batch(cfg)
    out = model(images, cams)
    assert set(out) == expected
    assert list(out) == [n for n in FEATURE_NAMES if n in expected]  # concatenation order of f_a
    widths = {"cnn": 512, "transformer": 384 if "t2t" in name else (768 if "deit" in name else 192)}
    for feat_name, (logits, feat) in out.items():
        assert logits.shape == (4, NUM_CLASSES)
        assert feat.shape == (4, widths.get(feat_name, 64))
        assert torch.isfinite(feat).all()
    model.eval()
    with torch.no_grad():
        f_a = model(images, cams)
    assert f_a.shape == (4, sum(f.shape[1] for _, f in out.values()))


@pytest.mark.parametrize("order", ["seu_mfu", "seu", "mfu_seu", "mfu"])
def test_every_parameter_gets_a_gradient(order):
    cfg = tiny_cfg("MODEL.FUSION.HTM_ORDER", order, "MODEL.FUSION.SHARE_SEU", "False")
    model = build_model(cfg, NUM_CLASSES, NUM_CAMS).train()
    images, cams = _batch(cfg)
    out = model(images, cams)
    sum(logits.logsumexp(1).mean() + feat.pow(2).mean() for logits, feat in out.values()).backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None)]
    assert no_grad == []
    # a parameter that is used gets a non-zero gradient somewhere in each module group
    for prefix in ("cnn.", "transformer.", "lru.", "htm.", "heads."):
        grads = [p.grad.abs().sum() for n, p in model.named_parameters() if n.startswith(prefix) and p.grad is not None]
        assert grads and sum(grads) > 0, prefix


GRADIENT_FREE_VARIANTS = {
    "seu_mfu": [], "seu": ["MODEL.FUSION.HTM_ORDER", "seu"], "mfu_seu": ["MODEL.FUSION.HTM_ORDER", "mfu_seu"],
    "mfu": ["MODEL.FUSION.HTM_ORDER", "mfu"],
    "unshared_seu_shared_mfu": ["MODEL.FUSION.SHARE_SEU", "False", "MODEL.FUSION.SHARE_MFU", "True"],
    "seu_unshared": ["MODEL.FUSION.HTM_ORDER", "seu", "MODEL.FUSION.SHARE_SEU", "False"],
    # GAP: with GeM right after the LRU (and no HTM) the LRU's last PReLU slope gets no gradient either (GeM
    # clamps the negative values it scales), a case of the ablation that the switch leaves alone
    "lru_only_gap": ["MODEL.FUSION.HTM_LAYERS", "0", "MODEL.FUSION.POOLING", "avg"],
    "dfe_only": ["MODEL.FUSION.LRU", "False", "MODEL.FUSION.HTM_LAYERS", "0"],
}


@pytest.mark.parametrize("variant", sorted(GRADIENT_FREE_VARIANTS))
def test_frozen_parameters_are_exactly_the_gradient_free_ones(variant):
    """With SOLVER.FREEZE_GRADIENT_FREE on, besides the BNNeck biases a parameter is frozen iff the training loss
    has no gradient for it (a bias that a following BatchNorm, softmax or the BNNeck + triplet cancel), and the
    frozen ones are the model's gradient_free_parameter_names(). Checked in float64 with everything unfrozen:
    those get at most rounding noise, every other one a real gradient. PyTorch's default init of the fusion
    modules (MODEL.FUSION.INIT 'pytorch') gives every such bias a non-zero start."""
    from loss import build_loss

    cfg = tiny_cfg(*GRADIENT_FREE_VARIANTS[variant], "SOLVER.FREEZE_GRADIENT_FREE", "True")
    torch.manual_seed(0)
    model = build_model(cfg, NUM_CLASSES, NUM_CAMS).double().train()
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad and not n.startswith("heads.")}
    assert frozen == set(model.gradient_free_parameter_names())
    if variant == "seu_mfu":  # the default architecture: nine
        assert frozen == {"lru.cnn.pointwise.0.bias", "lru.transformer.pointwise.0.bias", "transformer.norm.bias",
                          *(f"htm.{k}.mfu.{b}.norm_k.bias" for k in (0, 1) for b in ("cnn", "transformer")),
                          "htm.1.mfu.cnn.ffn.fc2.bias", "htm.1.mfu.transformer.ffn.fc2.bias"}
    for p in model.parameters():
        p.requires_grad_(True)
    images, cams = _batch(cfg, 8)
    pids = torch.arange(8) % 4
    loss, _ = build_loss(cfg, NUM_CLASSES)(model(images.double(), cams), pids)
    loss.backward()
    top = max(p.grad.abs().max() for p in model.parameters())
    relative = {n: float(p.grad.abs().max() / top) for n, p in model.named_parameters()}
    gradient_free = {n for n, r in relative.items() if r < 3e-8}
    assert gradient_free == frozen, {n: relative[n] for n in gradient_free ^ frozen}
    assert min(r for n, r in relative.items() if n not in frozen) > 1e-6  # the others: far from rounding


def test_gradient_free_parameters_train_by_default_as_released():
    """SOLVER.FREEZE_GRADIENT_FREE False (default): the release trains the nine gradient-free parameters (weight
    decay shrinks them); only the BNNeck biases are frozen. freeze_gradient_free(False) undoes the switch."""
    model = build_model(tiny_cfg(), NUM_CLASSES, NUM_CAMS)
    names = model.gradient_free_parameter_names()
    assert len(names) == 9
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {f"heads.{n}.bn.bias" for n in model.feature_dims}
    model.freeze_gradient_free()
    assert {n for n, p in model.named_parameters() if not p.requires_grad} == frozen | set(names)
    model.freeze_gradient_free(False)
    assert {n for n, p in model.named_parameters() if not p.requires_grad} == frozen


def test_bnneck_bias_is_frozen_and_classifier_bias_free():
    model = build_model(tiny_cfg(), NUM_CLASSES, NUM_CAMS)
    for head in model.heads.values():
        assert not head.bn.bias.requires_grad
        assert head.classifier.bias is None
        assert head.classifier.weight.std() < 0.01  # N(0, 0.001) init


def test_camera_embedding_changes_the_output_only_when_enabled():
    for sie, should_change in (("True", True), ("False", False)):
        cfg = tiny_cfg("MODEL.TRANSFORMER.SIE_CAMERA", sie)
        model = build_model(cfg, NUM_CLASSES, NUM_CAMS).eval()
        images, _ = _batch(cfg, 2)
        with torch.no_grad():
            a = model(images, torch.tensor([0, 0]))
            b = model(images, torch.tensor([1, 1]))
        assert (not torch.allclose(a, b)) == should_change
    assert model.transformer.sie_embed is None


def test_camera_embedding_shape_and_coefficient():
    vit = build_transformer("vit_tiny_patch16_224", (64, 32), (16, 16), num_cams=5, sie_coe=3.0)
    assert vit.sie_embed.shape == (5, 1, 192)
    vit.eval()
    x = torch.randn(1, 3, 64, 32)
    with torch.no_grad():
        vit.sie_embed.zero_()
        base = vit(x, torch.tensor([2]))
        vit.sie_embed[2] = 1.0
        shifted = vit(x, torch.tensor([2]))
        vit.sie_coe = 0.0
        off = vit(x, torch.tensor([2]))
    for field in ("cls_token", "feature_map"):  # the embedding is added to every token
        assert not torch.allclose(getattr(base, field), getattr(shifted, field)), field
        assert torch.allclose(getattr(base, field), getattr(off, field)), field


@pytest.mark.parametrize("size,stride,grid", [((256, 128), (12, 12), (21, 10)), ((256, 128), (16, 16), (16, 8)),
                                              ((384, 128), (12, 12), (31, 10)), ((384, 128), (16, 16), (24, 8))])
def test_patch_grid_is_derived_from_input_size_and_stride(size, stride, grid):
    assert patch_grid(size, (16, 16), stride) == grid
    vit = build_transformer("vit_tiny_patch16_224", size, stride, num_cams=2)
    assert tuple(vit.grid_size) == grid
    assert vit.pos_embed.shape[1] == grid[0] * grid[1] + 1


def test_t2t_grid_tracks_height_and_width():
    t2t = build_transformer("t2t_vit_t_14", (256, 128), (16, 16), num_cams=2)
    assert t2t.grid_size == (16, 8)
    out = t2t(torch.randn(1, 3, 256, 128), torch.tensor([1]))
    assert out.cls_token.shape == (1, 384) and out.feature_map.shape == (1, 384, 16, 8)
    assert 21.0 < count_params(t2t)[0] / 1e6 < 21.2  # paper 21.0M, released architecture 21.1M (docs/PAPER.md)


def test_eval_feature_selection():
    for feat, neck, dim in (("all", "before", 512 + 192 + 4 * 64), ("htm_cnn", "before", 64),
                            ("cnn", "after", 512), ("transformer", "before", 192)):
        cfg = tiny_cfg("TEST.FEAT", feat, "TEST.NECK_FEAT", neck)
        model = build_model(cfg, NUM_CLASSES, NUM_CAMS).eval()
        images, cams = _batch(cfg, 2)
        with torch.no_grad():
            out = model(images, cams)
        assert out.shape == (2, dim) and model.test_dim == dim
        if feat != "all":
            assert torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-5)  # TEST.FEAT_NORM
    with pytest.raises(ValueError, match="htm_cnn"):
        build_model(tiny_cfg("TEST.FEAT", "htm_cnn", "MODEL.FUSION.HTM_LAYERS", "0"), NUM_CLASSES, NUM_CAMS)


def test_retrieval_uses_pre_bn_features():
    cfg = tiny_cfg("TEST.FEAT", "lru_cnn", "TEST.FEAT_NORM", "False")
    model = build_model(cfg, NUM_CLASSES, NUM_CAMS).eval()
    images, cams = _batch(cfg, 2)
    with torch.no_grad():
        feats = model.extract(images, cams)
        assert torch.equal(model(images, cams), feats["lru_cnn"])


def test_htm_stacking_reuses_the_initial_local_tokens():
    """Each HTM layer sees the previous global token and the *initial* LRU tokens (Sec. III-B)."""
    cfg = tiny_cfg("MODEL.FUSION.HTM_LAYERS", "2")
    model = build_model(cfg, NUM_CLASSES, NUM_CAMS).eval()
    seen = []
    for layer in model.htm:
        layer.register_forward_hook(lambda m, args, out: seen.append(args))
    images, cams = _batch(cfg, 2)
    with torch.no_grad():
        model(images, cams)
    (g_c0, l_c0, g_t0, l_t0), (g_c1, l_c1, g_t1, l_t1) = [a[:4] for a in seen]
    assert l_c0 is l_c1 and l_t0 is l_t1
    assert not torch.allclose(g_c0, g_c1)


def test_fusion_unit_parameter_counts_match_released_architecture():
    # docs/PAPER.md ("SEU", "MFU"): 7,087,104 parameters each at D=768
    assert sum(p.numel() for p in SharedEncodingUnit(768, 12).parameters()) == 7_087_104
    assert sum(p.numel() for p in MutualFusionUnit(768, 12).parameters()) == 7_087_104


@pytest.mark.parametrize("row", TABLES["3"][1] + TABLES["4"][1], ids=lambda r: r.name)
def test_one_htm_params_and_flops_match_tables_iii_and_iv(row):
    opts = dict(zip(row.overrides[::2], row.overrides[1::2]))
    htm = HeterogenousTransmissionModule(
        768, 12, order=opts.get("MODEL.FUSION.HTM_ORDER", "seu_mfu"),
        share_seu=opts.get("MODEL.FUSION.SHARE_SEU", "True") == "True",
        share_mfu=opts.get("MODEL.FUSION.SHARE_MFU", "False") == "True")
    assert abs(count_params(htm)[0] / 1e6 - row.params) <= 0.1

    class Wrap(torch.nn.Module):  # ResNet50 16x8 tokens and ViT-B* 21x10 tokens at 256x128
        def __init__(self):
            super().__init__()
            self.htm = htm

        def forward(self, x, cam=None):
            return self.htm(x[:, 0], x[:, 1:129], x[:, 0], x[:, 1:211])

    macs = count_macs(Wrap(), torch.randn(1, 211, 768))
    assert abs(macs["layers"] / 1e9 - row.flops) <= 0.15


def test_default_model_matches_paper_params_and_flops():
    """Table II Method5: 153.8M parameters, 28.1 GMACs (paper convention)."""
    from configs import load_cfg
    model = build_model(load_cfg("", ["MODEL.PRETRAIN_CHOICE", "none"]), 1041, 15)
    params = count_params(model)[0] / 1e6
    macs = count_macs(model, torch.randn(1, 3, 256, 128), torch.zeros(1, dtype=torch.long))
    assert abs(params - 153.8) <= 0.3
    assert abs(macs["layers"] / 1e9 - 28.1) <= 0.15
    assert macs["total"] > macs["layers"]  # attention products are the difference


def test_attention_maps_come_from_the_forward():
    cfg = tiny_cfg()
    model = build_model(cfg, NUM_CLASSES, NUM_CAMS).eval()
    images, cams = _batch(cfg, 2)
    maps = {}
    with torch.no_grad():
        with_maps = model.extract(images, cams, attention=maps)
        plain = model.extract(images, cams)
    for k in with_maps:
        assert torch.allclose(with_maps[k], plain[k], atol=1e-6)
    n_cnn, n_trans = 4 * 2, 5 * 2  # 64x32: ResNet18 (last stride 1) 4x2 map; ViT-Tiny at stride 12: 5x2 grid
    assert maps["htm1/seu/cnn"].shape == (2, 4, 1 + n_cnn)
    assert maps["htm2/mfu/cnn"].shape == (2, 4, n_trans)
    assert maps["htm2/mfu/transformer"].shape == (2, 4, n_cnn)
    for a in maps.values():
        assert torch.allclose(a.sum(-1), torch.ones_like(a.sum(-1)), atol=1e-5)
