"""FusionReID is built from the config in one place (model/spec.py, FusionReID.from_config): every model key
of the config is read by exactly one spec field, backbone options are checked by name at both ends (a factory
parameter that is not an option, an option that no backbone of its kind knows), and the retrieval policy
(model/retrieval.py) is what the model's eval mode returns."""
import pytest
import torch

from configs import ConfigError
from model import FusionReID, build_model
from model.backbones import build_backbone, build_cnn, build_transformer, option_names, register_backbone
from model.backbones import registry as backbone_registry
from model.backbones.vit import ReIDVisionTransformer
from model.retrieval import RetrievalPolicy, flip_average
from model.spec import CNNOptions, FusionSpec, ModelSpec, TransformerOptions, config_value
from tests.helpers import tiny_cfg

SIZE = (64, 32)
NUM_CLASSES, NUM_CAMS = 5, 3


@pytest.fixture
def registry_copy(monkeypatch):
    monkeypatch.setattr(backbone_registry, "_BACKBONES", {k: dict(v) for k, v in backbone_registry._BACKBONES.items()})


# ----------------------------------------------------------------------------- unknown options are errors
def test_a_misspelt_transformer_option_names_the_option_the_backbone_and_what_it_takes():
    with pytest.raises(ConfigError) as e:
        build_transformer("vit_tiny_patch16_224", SIZE, (16, 16), num_cams=2, t2t_atn_scale="embed_dim")
    msg = str(e.value)
    assert "'t2t_atn_scale'" in msg and "'vit_tiny_patch16_224'" in msg and "MODEL.TRANSFORMER.NAME" in msg
    takes = "img_size, stride_size, num_cams, sie_coe, drop_path_rate, drop_rate, attn_drop_rate"
    assert f"it takes {takes} (" in msg
    assert msg.endswith(", ".join(option_names("transformer")) + ")")


def test_a_misspelt_cnn_option_is_an_error_too():
    with pytest.raises(ConfigError, match=r"unknown option 'last_strid' for the CNN backbone 'resnet18' "
                                          r"\(MODEL.CNN.NAME\); it takes img_size, last_stride"):
        build_backbone("cnn", "resnet18", img_size=SIZE, last_strid=2)
    with pytest.raises(ConfigError, match=r"unknown options 'stride_size', 'num_cams' for the CNN backbone"):
        build_cnn("resnet18", 1, SIZE, stride_size=(16, 16), num_cams=2)  # Transformer options are not CNN ones


def test_an_option_of_the_kind_that_a_factory_does_not_use_is_left_out():
    """The config carries every Transformer option; a ViT does not take T2T-ViT's (and is built as without)."""
    torch.manual_seed(0)
    vit = build_transformer("vit_tiny_patch16_224", SIZE, (16, 16), t2t_attn_scale="embed_dim", drop_path_rate=0.0)
    torch.manual_seed(0)
    plain = build_transformer("vit_tiny_patch16_224", SIZE, (16, 16), drop_path_rate=0.0)
    assert all(torch.equal(a, b) for a, b in zip(vit.state_dict().values(), plain.state_dict().values()))


def test_a_factory_parameter_that_is_no_option_is_refused_at_registration(registry_copy):
    with pytest.raises(ValueError) as e:
        @register_backbone("toy_cnn", "cnn")
        def toy_cnn(img_size=(256, 128), last_strid=1):  # never set from the config: refused
            raise AssertionError("not built")
    msg = str(e.value)
    assert "'toy_cnn'" in msg and "'last_strid' is not CNN option" in msg and msg.endswith("img_size, last_stride")
    assert "toy_cnn" not in backbone_registry.backbone_names("cnn")

    @register_backbone("toy_cnn_kw", "cnn")  # **options: takes every CNN option
    def toy_cnn_kw(**options):
        return options

    assert build_backbone("cnn", "toy_cnn_kw", img_size=SIZE, last_stride=2) == {"img_size": SIZE, "last_stride": 2}


def test_an_option_reaches_a_new_factory_from_the_config_through_the_spec(registry_copy):
    """A factory registered in a test gets each config value of the options it names, by name."""
    seen = {}

    @register_backbone("toy_vit", "transformer")
    def toy_vit(img_size=(256, 128), stride_size=(16, 16), num_cams=0, drop_rate=0.0, attn_drop_rate=0.0):
        seen.update(img_size=img_size, stride_size=stride_size, num_cams=num_cams, drop_rate=drop_rate,
                    attn_drop_rate=attn_drop_rate)
        return ReIDVisionTransformer(img_size=img_size, stride_size=stride_size, num_cams=num_cams, embed_dim=48,
                                     depth=1, num_heads=2, drop_rate=drop_rate, attn_drop_rate=attn_drop_rate,
                                     name="toy_vit")

    cfg = tiny_cfg("MODEL.TRANSFORMER.NAME", "toy_vit", "MODEL.TRANSFORMER.DROP_RATE", "0.25",
                   "MODEL.TRANSFORMER.ATTN_DROP_RATE", "0.125", "MODEL.TRANSFORMER.STRIDE_SIZE", "[12, 12]")
    model = FusionReID.from_config(cfg, NUM_CLASSES, NUM_CAMS)
    assert seen == dict(img_size=SIZE, stride_size=(12, 12), num_cams=NUM_CAMS, drop_rate=0.25, attn_drop_rate=0.125)
    assert model.feature_dims["transformer"] == 48
    FusionReID.from_config(tiny_cfg("MODEL.TRANSFORMER.NAME", "toy_vit", "MODEL.TRANSFORMER.SIE_CAMERA", "False"),
                           NUM_CLASSES, NUM_CAMS)
    assert seen["num_cams"] == 0


# ----------------------------------------------------------------------------- the config is read in one place
def _section_keys(cfg, section):
    node = config_value(cfg, section)
    return {f"{section}.{k}" for k in node}


def test_every_model_key_of_the_config_is_read_by_one_spec_field():
    """A key added to MODEL.CNN / MODEL.TRANSFORMER / MODEL.FUSION without a spec field would never reach the
    model (and a field whose key does not exist fails here too)."""
    cfg = tiny_cfg()
    read = [k for cls in (CNNOptions, TransformerOptions, FusionSpec, ModelSpec, RetrievalPolicy)
            for k in cls.config_keys().values() if k]
    read_once = set(read) - {"INPUT.SIZE_TRAIN"}  # both backbone kinds take the image size
    assert len(read_once) == len(read) - 2
    names = {"MODEL.CNN.NAME", "MODEL.TRANSFORMER.NAME", "MODEL.TRANSFORMER.SIE_CAMERA"}  # ModelSpec.from_config
    weights = {"MODEL.CNN.PRETRAIN_PATH", "MODEL.TRANSFORMER.PRETRAIN_PATH"}              # build_model
    for section in ("MODEL.CNN", "MODEL.TRANSFORMER", "MODEL.FUSION"):
        assert _section_keys(cfg, section) - names - weights == {k for k in read_once if k.startswith(section + ".")}
    assert {k for k in read_once if k.startswith("TEST.")} == {
        "TEST.FEAT", "TEST.NECK_FEAT", "TEST.FEAT_NORM", "TEST.PART_NORM", "TEST.FLIP"}
    for key in read:
        config_value(cfg, key)  # exists


def test_the_spec_holds_the_config_values():
    cfg = tiny_cfg("MODEL.FUSION.HTM_ORDER", "mfu_seu", "MODEL.TRANSFORMER.SIE_COE", "1.5", "MODEL.GEM_P", "4.0",
                   "MODEL.CNN.LAST_STRIDE", "2", "TEST.FEAT", "htm_cnn", "TEST.FLIP", "True")
    spec = ModelSpec.from_config(cfg, NUM_CLASSES, NUM_CAMS)
    assert spec.fusion.htm_order == "mfu_seu" and spec.fusion.dim == 64 and spec.gem_p == 4.0
    assert spec.cnn.name == "resnet18" and spec.cnn.options == CNNOptions(img_size=SIZE, last_stride=2)
    assert spec.transformer.options.sie_coe == 1.5 and spec.transformer.options.num_cams == NUM_CAMS
    assert spec.num_classes == NUM_CLASSES
    no_cnn = ModelSpec.from_config(tiny_cfg("MODEL.CNN.NAME", "''", "MODEL.FUSION.LRU", "False",
                                            "MODEL.FUSION.HTM_LAYERS", "0"), NUM_CLASSES, NUM_CAMS)
    assert no_cnn.cnn is None
    model = build_model(cfg, NUM_CLASSES, NUM_CAMS)
    assert model.spec == spec
    assert model.retrieval == RetrievalPolicy(feat="htm_cnn", neck_feat="before", feat_norm=True, part_norm=False,
                                              flip=True)


# ----------------------------------------------------------------------------- the retrieval policy
def _model(*overrides):
    torch.manual_seed(0)
    return build_model(tiny_cfg(*overrides), NUM_CLASSES, NUM_CAMS).eval()


def _batch():
    return torch.randn(3, 3, *SIZE, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1, 2])


@pytest.mark.parametrize("overrides", [(), ("TEST.FEAT", "lru_transformer", "TEST.NECK_FEAT", "after"),
                                       ("TEST.FLIP", "True", "TEST.PART_NORM", "True", "TEST.FEAT_NORM", "False")])
def test_eval_mode_returns_the_policy_s_feature(overrides):
    model = _model(*overrides)
    images, cams = _batch()
    policy = model.retrieval
    with torch.no_grad():
        feats = model.extract(images, cams)
        if policy.flip:
            feats = flip_average(feats, model.extract(images.flip(-1), cams))
        names = list(model.feature_dims) if policy.feat == "all" else [policy.feat]
        parts = [model.heads[n](feats[n]).bn_feature if policy.neck_feat == "after" else feats[n] for n in names]
        if policy.part_norm:
            parts = [torch.nn.functional.normalize(p, dim=1) for p in parts]
        expected = torch.cat(parts, dim=1)
        if policy.feat_norm:
            expected = torch.nn.functional.normalize(expected, dim=1)
        assert torch.equal(model(images, cams), expected)
    assert model.test_dim == expected.shape[1] == policy.dim(model.feature_dims)


def test_the_policy_changes_no_parameter_and_flip_is_settable():
    a, b = _model(), _model("TEST.FEAT", "cnn", "TEST.NECK_FEAT", "after", "TEST.FLIP", "True")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    b.flip = False
    assert b.retrieval == RetrievalPolicy.from_config(tiny_cfg("TEST.FEAT", "cnn", "TEST.NECK_FEAT", "after"))
    b.retrieval = a.retrieval
    images, cams = _batch()
    with torch.no_grad():
        assert torch.equal(a(images, cams), b(images, cams))


def test_a_feature_the_model_lacks_is_a_config_error():
    with pytest.raises(ConfigError, match="TEST.FEAT 'htm_cnn' is not produced by this model; it has all, cnn, "
                                          "transformer, lru_cnn, lru_transformer$"):
        _model("TEST.FEAT", "htm_cnn", "MODEL.FUSION.HTM_LAYERS", "0")
