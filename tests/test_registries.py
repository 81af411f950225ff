"""The backbone and dataset registries are the only lists of names: every registered backbone implements
the Backbone interface (checked at a tiny size), the builders accept exactly the registered names (the config
loader leaves them to the registries), and a backbone or dataset registered here, in a test, is buildable from a
config with no edit anywhere else, registered before or after the config is loaded."""
import copy

import pytest
import torch
import torch.nn as nn

import datasets
from configs import ConfigError, load_cfg
from datasets import registry as dataset_registry
from model import build_model
from model.backbones import (Backbone, BackboneOutput, CameraEmbedding, backbone_kind, backbone_names,
                             build_backbone, build_cnn, build_transformer, register_backbone, split_tokens)
from model.backbones import registry as backbone_registry
from tests.helpers import tiny_cfg
from tests.toys import ToyCNN

CNNS = backbone_names("cnn")
TRANSFORMERS = backbone_names("transformer")
SIZE = (64, 32)  # not square, so that a swapped (H, W) shows
NUM_CAMS = 3


def _images(n=2, size=SIZE, seed=0):
    return torch.randn(n, 3, *size, generator=torch.Generator().manual_seed(seed))


def _build(name, size=SIZE, seed=0, num_cams=NUM_CAMS, last_stride=1, **options):
    torch.manual_seed(seed)
    if backbone_kind(name) == "cnn":
        return build_cnn(name, last_stride, size).eval()
    return build_transformer(name, size, (16, 16), num_cams=num_cams, drop_path_rate=0.0, **options).eval()


def _build_on_meta(name, **kwargs):
    """Built on the meta device: shapes and structure without weights (fast for the ViT-B sized ones)."""
    with torch.device("meta"):
        return _build(name, **kwargs)


def test_the_registries_are_filled_and_disjoint():
    assert len(CNNS) >= 2 and len(TRANSFORMERS) >= 2
    assert not set(CNNS) & set(TRANSFORMERS)
    assert {backbone_kind(n) for n in CNNS} == {"cnn"} and {backbone_kind(n) for n in TRANSFORMERS} == {"transformer"}
    assert len(datasets.dataset_names()) >= 2


# ----------------------------------------------------------------------------- the Backbone interface
# One backbone of each name at a time (module-scoped parametrised fixtures: pytest runs the tests of one
# name together); the tests only read them. T2T-ViT's 'checkpoint' position table is resized from a square
# grid (an ImageNet file's), so at this non-square size it uses the computed one (the ViTs ignore the option).
@pytest.fixture(scope="module", params=CNNS)
def cnn(request):
    return _build(request.param)


@pytest.fixture(scope="module", params=TRANSFORMERS)
def transformer(request):
    return _build(request.param, t2t_pos_embed="sinusoid")


def test_every_cnn_gives_a_map_of_its_out_dim_and_grid(cnn):
    assert isinstance(cnn, Backbone) and cnn.name in CNNS and not cnn.has_camera_embedding
    with torch.no_grad():
        out = cnn(_images(), torch.tensor([0, 1]))
    assert isinstance(out, BackboneOutput) and out.cls_token is None  # f^_c is the pooled map
    assert out.feature_map.shape == (2, cnn.out_dim, *cnn.grid_size)
    assert cnn.no_weight_decay() == set()


@pytest.mark.parametrize("name", CNNS)
def test_cnn_grid_follows_the_input_size_and_last_stride(name):
    for size, last_stride, grid in (((256, 128), 1, (16, 8)),  # 2048x16x8 for ResNet50 (Sec. III-A)
                                    ((256, 128), 2, (8, 4)), ((384, 128), 1, (24, 8)),
                                    ((63, 33), 2, (2, 2))):     # odd sizes round as the convolutions do
        cnn = _build_on_meta(name, size=size, last_stride=last_stride)
        out = cnn(torch.empty(1, 3, *size, device="meta"))
        assert cnn.grid_size == tuple(out.feature_map.shape[-2:]) == grid, (size, last_stride)


def test_every_transformer_gives_its_class_token_and_token_grid(transformer):
    trans = transformer
    assert isinstance(trans, Backbone) and isinstance(trans, CameraEmbedding) and trans.name in TRANSFORMERS
    captured = []
    hook = trans.norm.register_forward_hook(lambda m, i, o: captured.append(o))  # the tokens after the final norm
    try:
        with torch.no_grad():
            out = trans(_images(), torch.tensor([0, 2]))
    finally:
        hook.remove()
    tokens = captured[0]
    h, w = trans.grid_size
    assert tokens.shape == (2, 1 + h * w, trans.out_dim)
    assert out.cls_token.shape == (2, trans.out_dim) and out.feature_map.shape == (2, trans.out_dim, h, w)
    assert torch.equal(out.cls_token, tokens[:, 0])
    assert torch.equal(out.feature_map[:, :, 1, 0], tokens[:, 1 + w])  # row-major: token 1 + i * w + j
    assert torch.equal(out.feature_map[:, :, h - 1, w - 1], tokens[:, -1])
    assert {"cls_token", "sie_embed"} <= trans.no_weight_decay()


def test_every_transformer_has_the_one_camera_embedding(transformer):
    trans = transformer
    assert trans.has_camera_embedding and trans.num_cameras == NUM_CAMS
    assert trans.sie_embed.shape == (NUM_CAMS, 1, trans.out_dim)
    assert "sie_embed" in trans.state_dict()  # the key of FusionReID checkpoints: transformer.sie_embed
    images = _images()
    with torch.no_grad():
        a = trans(images, torch.tensor([0, 0]))
        b = trans(images, torch.tensor([1, 1]))
        with pytest.raises(ValueError, match="camera ids"):
            trans(images)
    assert not torch.allclose(a.cls_token, b.cls_token)
    plain = _build_on_meta(trans.name, num_cams=0)  # MODEL.TRANSFORMER.SIE_CAMERA False
    assert not plain.has_camera_embedding and plain.sie_embed is None and "sie_embed" not in plain.state_dict()


def _check_loads_own_weights(source, tmp_path):
    path = tmp_path / f"{source.name}.pth"
    torch.save(source.state_dict(), path)
    target = copy.deepcopy(source)
    with torch.no_grad():
        for param in target.parameters():  # buffers stay: T2T-ViT's computed position table is not read
            param.zero_()
    first = next(iter(source.state_dict()))
    assert not torch.equal(target.state_dict()[first], source.state_dict()[first])
    target.load_pretrained(str(path), "SOME.KEY")
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key
    images, cams = _images(), torch.tensor([0, 1])
    with torch.no_grad():
        assert torch.equal(target(images, cams).feature_map, source(images, cams).feature_map)


def test_every_cnn_loads_its_own_weights_through_load_pretrained(cnn, tmp_path):
    _check_loads_own_weights(cnn, tmp_path)


def test_every_transformer_loads_its_own_weights_through_load_pretrained(transformer, tmp_path):
    _check_loads_own_weights(transformer, tmp_path)


def test_split_tokens_lays_patches_out_row_by_row():
    tokens = torch.arange(2 * 7 * 3, dtype=torch.float32).reshape(2, 7, 3)  # class token + a 2x3 grid
    out = split_tokens(tokens, (2, 3))
    assert torch.equal(out.cls_token, tokens[:, 0])
    for i in range(2):
        for j in range(3):
            assert torch.equal(out.feature_map[:, :, i, j], tokens[:, 1 + 3 * i + j])
    with pytest.raises(ValueError, match="3x3 grid"):
        split_tokens(tokens, (3, 3))


# ----------------------------------------------------------------------------- the camera embedding
class _Tokens(CameraEmbedding, nn.Module):
    def __init__(self, num_cams, dim=4, coe=2.0):
        super().__init__()
        self.init_camera_embedding(num_cams, dim, coe)


def test_camera_embedding_adds_the_scaled_row_and_the_mean_camera():
    torch.manual_seed(0)
    m = _Tokens(3)
    assert m.sie_embed.shape == (3, 1, 4) and m.sie_embed.requires_grad
    assert 0 < m.sie_embed.std() < 0.05  # trunc-normal, std 0.02
    x, cams = torch.randn(2, 5, 4), torch.tensor([2, 0])
    assert torch.equal(m.add_camera_embedding(x, cams), x + 2.0 * m.sie_embed[cams])
    with pytest.raises(ValueError, match="MODEL.TRANSFORMER.SIE_CAMERA"):
        m.add_camera_embedding(x, None)
    table = m.sie_embed.detach().clone()
    assert m.add_mean_camera() == 3
    assert m.sie_embed.shape == (4, 1, 4) and not m.sie_embed.requires_grad
    assert torch.equal(m.sie_embed[:3], table) and torch.allclose(m.sie_embed[3], table.mean(0))
    assert list(dict(m.named_parameters())) == ["sie_embed"]  # still the module's own parameter
    none = _Tokens(0)
    assert none.sie_embed is None and none.add_mean_camera() is None and none.add_camera_embedding(x, None) is x


def test_fusion_model_keeps_the_checkpoint_names_of_the_camera_embedding():
    model = build_model(tiny_cfg(), 5, NUM_CAMS)
    assert model.state_dict()["transformer.sie_embed"].shape == (NUM_CAMS, 1, 192)
    assert model.no_weight_decay() == {"transformer.pos_embed", "transformer.cls_token", "transformer.sie_embed"}
    assert "pool_cnn.p" in model.state_dict()  # f^_c's GeM stays the model's, as in earlier checkpoints


# ----------------------------------------------------------------------------- registry errors
def test_unregistered_backbone_names_the_key_and_lists_the_registered():
    with pytest.raises(ConfigError) as e:
        build_transformer("vit_huge_patch14", SIZE, (16, 16))
    msg = str(e.value)
    assert msg.startswith("MODEL.TRANSFORMER.NAME: 'vit_huge_patch14'") and msg.endswith(", ".join(TRANSFORMERS))
    with pytest.raises(ConfigError, match=r"^MODEL.CNN.NAME: .*" + ", ".join(CNNS)):
        build_cnn(TRANSFORMERS[0])  # a name of the other kind is not a CNN


def test_a_name_is_registered_once_and_kinds_are_checked(monkeypatch):
    monkeypatch.setattr(backbone_registry, "_BACKBONES", {k: dict(v) for k, v in backbone_registry._BACKBONES.items()})
    with pytest.raises(ValueError, match="registered twice"):
        register_backbone(CNNS[0], "transformer")(lambda **kw: None)
    with pytest.raises(ValueError, match="kind"):
        register_backbone("toy", "rnn")
    with pytest.raises(ValueError, match="registered twice"):
        dataset_registry.register_dataset(datasets.dataset_names()[0])(type("Dup", (), {}))


# ----------------------------------------------------------------------------- the builders read the registries
@pytest.mark.parametrize("name", datasets.dataset_names())
def test_every_registered_dataset_name_passes_the_check_of_the_data_builder(name):
    cfg = load_cfg("", ["DATASETS.NAMES", name, "DATASETS.TEST_NAMES", f"['{name}']"])
    assert cfg.DATASETS.NAMES == cfg.DATASETS.TEST_NAMES == (name,)
    datasets.check_dataset_names(cfg)  # what make_dataloader runs first


def test_the_builders_refuse_unregistered_names_naming_the_key():
    cfg = load_cfg("", ["DATASETS.NAMES", "cuhk03"])  # loading does not read the registries
    names = ", ".join(map(repr, datasets.dataset_names()))
    with pytest.raises(ConfigError, match=rf"^DATASETS.NAMES = \('cuhk03',\): 'cuhk03' is not one of {names} "):
        datasets.check_dataset_names(cfg)
    with pytest.raises(ConfigError, match="^MODEL.CNN.NAME: 'resnet51' is not a registered CNN backbone"):
        build_model(tiny_cfg("MODEL.CNN.NAME", "resnet51"), 5, NUM_CAMS)
    with pytest.raises(ConfigError, match="^MODEL.TRANSFORMER.NAME: 'vit_huge' is not a registered Transformer"):
        build_model(tiny_cfg("MODEL.TRANSFORMER.NAME", "vit_huge"), 5, NUM_CAMS)


def test_a_backbone_registered_in_one_place_builds_the_whole_model(monkeypatch):
    monkeypatch.setattr(backbone_registry, "_BACKBONES", {k: dict(v) for k, v in backbone_registry._BACKBONES.items()})
    cfg = tiny_cfg("MODEL.CNN.NAME", "toy_cnn")  # loaded before the backbone is registered
    with pytest.raises(ConfigError, match="MODEL.CNN.NAME: 'toy_cnn' is not a registered CNN backbone"):
        build_model(cfg, 5, NUM_CAMS)

    @register_backbone("toy_cnn", "cnn")
    def toy_cnn(img_size=(256, 128)):  # takes only the options it uses; last_stride is not passed
        return ToyCNN(img_size)

    model = build_model(cfg, 5, NUM_CAMS).train()
    assert isinstance(model.cnn, ToyCNN) and model.feature_dims["cnn"] == 24
    out = model(_images(4), torch.arange(4) % NUM_CAMS)
    assert out["cnn"][1].shape == (4, 24) and out["htm_cnn"][1].shape == (4, 64)
    assert build_backbone("cnn", "toy_cnn", img_size=(32, 16), last_stride=2).grid_size == (4, 2)


def test_a_dataset_registered_in_one_place_is_a_config_value(monkeypatch, tmp_path):
    monkeypatch.setattr(dataset_registry, "DATASET_REGISTRY", dict(dataset_registry.DATASET_REGISTRY))

    @dataset_registry.register_dataset("toy_people")
    class ToyPeople:
        def __init__(self, root, cfg=None):
            self.root, self.cfg = root, cfg

    assert "toy_people" in datasets.dataset_names()
    cfg = load_cfg("", ["DATASETS.NAMES", "toy_people"])
    datasets.check_dataset_names(cfg)
    ds = datasets.build_dataset(cfg.DATASETS.NAMES[0], str(tmp_path), cfg)
    assert isinstance(ds, ToyPeople) and ToyPeople.name == "toy_people" and ds.cfg is cfg
