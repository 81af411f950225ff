"""tools/export.py: ONNX and TorchScript exports give FeatureExtractor's features, at any batch size."""
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model import build_model
from tests.helpers import TINY, tiny_cfg
from tests.test_cli import run_script
from tests.test_entry_points import assert_one_line_error
from tools import export
from processor.feature_extractor import FeatureExtractor

onnxruntime = pytest.importorskip("onnxruntime")

NUM_CLASSES, NUM_CAMS = 5, 3
# The whole architecture (ResNet18 + ViT-Tiny, LRUs, HTMs) with the camera embedding and test-time flip.
FUSED = list(TINY) + ["TEST.FLIP", "True"]
# A CNN-only model (GeM pooling, no camera embedding), each part normalised, features before the BNNeck.
CNN_ONLY = list(TINY) + ["MODEL.TRANSFORMER.NAME", "", "MODEL.FUSION.HTM_LAYERS", "0", "TEST.PART_NORM", "True",
                         "TEST.NECK_FEAT", "before"]


def save_trained(path, overrides):
    """A model of ``overrides`` saved as train_net saves it, with BN statistics and camera rows that matter."""
    torch.manual_seed(0)
    model = build_model(tiny_cfg(*overrides[len(TINY):]), NUM_CLASSES, NUM_CAMS)
    with torch.no_grad():
        if model.transformer is not None:
            model.transformer.sie_embed.normal_()
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    torch.save({"model": model.state_dict(), "epoch": 1}, path)
    return str(path)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    return {"fused": save_trained(root / "fused.pth", FUSED), "cnn": save_trained(root / "cnn.pth", CNN_ONLY)}


def run_export(fmt, out, overrides, *options):
    return export.main(["--format", fmt, "--out", str(out), *options, *overrides])


def extractor_features(overrides, weight, images, cams):
    """What processor/feature_extractor.py gives for these preprocessed images and camera ids (-1: unknown)."""
    extract = FeatureExtractor(tiny_cfg(*overrides[len(TINY):]), weight, device="cpu")
    return extract.features(images, extract.camera_ids(cams, len(images)))


def images_and_cams(batch, seed=123):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, 64, 32, generator=gen), [(i % (NUM_CAMS + 1)) - 1 for i in range(batch)]


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_gives_the_extractor_features_with_cameras(tmp_path, weights, fmt):
    out = tmp_path / f"fused.{'onnx' if fmt == 'onnx' else 'pt'}"
    report = run_export(fmt, out, FUSED + ["TEST.WEIGHT", weights["fused"]])
    assert report["inputs"] == ["images", "camids"] and report["ranking_same"]
    assert report["max_abs_diff"] <= export.DEFAULT_ATOL and set(report["per_batch"]) == {2, 8}
    images, cams = images_and_cams(3)  # neither the trace batch nor the check batch; unknown cameras included
    expected = extractor_features(FUSED, weights["fused"], images, cams)
    if fmt == "onnx":
        session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        spec = {i.name: (i.type, i.shape) for i in session.get_inputs()}
        assert spec["images"][0] == "tensor(float)" and spec["images"][1][1:] == [3, 64, 32]
        assert spec["camids"][0] == "tensor(int64)" and isinstance(spec["camids"][1][0], str)  # dynamic batch
        assert [o.name for o in session.get_outputs()] == ["features"]
        got = session.run(None, {"images": images.numpy(), "camids": np.array(cams, dtype=np.int64)})[0]
    else:
        with torch.no_grad():
            got = torch.jit.load(str(out))(images, torch.tensor(cams)).numpy()
    assert got.shape == tuple(expected.shape) == (3, 960)
    assert np.abs(got - expected.numpy()).max() < 1e-4


def test_cnn_only_model_takes_images_only(tmp_path, weights):
    out = tmp_path / "cnn.onnx"
    report = run_export("onnx", out, CNN_ONLY + ["TEST.WEIGHT", weights["cnn"]], "--check-batch", "5")
    assert report["inputs"] == ["images"] and set(report["per_batch"]) == {2, 5}
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    images, _ = images_and_cams(4)
    got = session.run(None, {"images": images.numpy()})[0]
    expected = extractor_features(CNN_ONLY, weights["cnn"], images, None)
    assert np.abs(got - expected.numpy()).max() < 1e-4
    # TEST.PART_NORM is in the graph: both parts (cnn 512-d, lru_cnn 64-d) of equal norm, the whole of norm 1
    assert np.allclose(np.linalg.norm(got[:, :512], axis=1), 0.5 ** 0.5, atol=1e-5)
    assert np.allclose(np.linalg.norm(got[:, 512:], axis=1), 0.5 ** 0.5, atol=1e-5)


def test_untrained_model_is_exported_with_a_warning(tmp_path, caplog):
    out = tmp_path / "untrained.pt"
    report = run_export("torchscript", out, CNN_ONLY, "--trace-batch", "3", "--check-batch", "4")
    assert os.path.isfile(out) and report["max_abs_diff"] <= export.DEFAULT_ATOL
    assert any("TEST.WEIGHT is empty" in r.getMessage() for r in caplog.records)


def test_scaled_dot_product_attention_exports(tmp_path):
    """Attention through F.scaled_dot_product_attention (timm's blocks; the MFU's one-token query) exports."""
    class OneTokenAttention(torch.nn.Module):
        def forward(self, images, cam_ids=None):
            tokens = images.flatten(2).transpose(1, 2).reshape(images.shape[0], 2, -1, 3)  # B, heads, N, d
            return F.scaled_dot_product_attention(tokens[:, :, :1], tokens, tokens).flatten(1)

    module = export.ExportedReID(OneTokenAttention(), None)
    path = str(tmp_path / "sdpa.onnx")
    example = torch.randn(2, 3, 4, 4)
    export.export_onnx(module, (example,), path, export.DEFAULT_OPSET, dynamo=False)
    x = torch.randn(5, 3, 4, 4)
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert torch.allclose(torch.from_numpy(session.run(None, {"images": x.numpy()})[0]), module(x), atol=1e-5)


# ----------------------------------------------------------------------------- failures
def _perturbed(change):
    """A ``load_runner`` whose features go through ``change`` (as a faulty export would)."""
    real = export.load_runner

    def load(fmt, path):
        run = real(fmt, path)
        return lambda images, cams: change(run(images, cams))
    return load


def test_parity_failure_is_one_line_and_writes_nothing(tmp_path, weights, monkeypatch):
    out = tmp_path / "bad.onnx"
    monkeypatch.setattr(export, "load_runner", _perturbed(lambda f: f + 1e-3))
    with pytest.raises(SystemExit) as info:
        run_export("onnx", out, CNN_ONLY + ["TEST.WEIGHT", weights["cnn"]])
    assert info.value.code.startswith("export.py: error: onnx export failed verification: max abs feature "
                                      "difference 0.001 > --atol 0.0001"), info.value.code
    assert not os.listdir(tmp_path)  # neither the output nor the partial file


def test_other_ranking_fails_even_within_atol(tmp_path, weights, monkeypatch):
    monkeypatch.setattr(export, "load_runner", _perturbed(lambda f: f.flip(0)))  # gallery order reversed
    with pytest.raises(SystemExit, match="ranking of 4 queries differs"):
        run_export("torchscript", tmp_path / "bad.pt", CNN_ONLY + ["TEST.WEIGHT", weights["cnn"]], "--atol", "10")
    assert not os.listdir(tmp_path)


def test_operation_without_onnx_form_is_one_line(tmp_path, monkeypatch):
    def unsupported(*args, **kwargs):
        raise torch.onnx.errors.OnnxExporterError("Unsupported: ONNX export of operator foo")

    monkeypatch.setattr(torch.onnx, "export", unsupported)
    with pytest.raises(SystemExit) as info:
        run_export("onnx", tmp_path / "m.onnx", CNN_ONLY)
    assert info.value.code == ("export.py: error: torch.onnx.export (opset 17) cannot export this model: Unsupported: "
                               "ONNX export of operator foo (try another --opset, or --format torchscript)")
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize("options, needle", [
    (["--format", "onnx", "--check-batch", "2"], "--check-batch (2)"),
    (["--format", "onnx", "--opset", "11"], "--opset 11"),
    (["--format", "torchscript", "--dynamo"], "--dynamo apply to --format onnx only"),
    (["--format", "onnx", "--atol", "-1"], "--atol"),
])
def test_bad_options(tmp_path, options, needle):
    with pytest.raises(SystemExit) as info:
        export.main([*options, "--out", str(tmp_path / "m"), *CNN_ONLY])
    assert info.value.code.startswith("export.py: error: ") and needle in info.value.code, info.value.code


def test_unknown_format_is_an_argument_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        export.main(["--format", "tflite", "--out", str(tmp_path / "m")])
    assert info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "error: argument --format: invalid choice: 'tflite'" in last, last


def test_missing_weight_file_from_the_command_line(tmp_path):
    missing = tmp_path / "no_such_model.pth"
    rc, err = run_script("tools/export.py", "--format", "onnx", "--out", str(tmp_path / "m.onnx"), *CNN_ONLY,
                         "TEST.WEIGHT", str(missing))
    assert_one_line_error(rc, err, "tools/export.py", "TEST.WEIGHT", str(missing))
    assert not os.listdir(tmp_path)


def test_dynamo_exporter(tmp_path, weights):
    """The torch.export-based exporter (optional: needs onnxscript, and is slow)."""
    pytest.importorskip("onnxscript")
    report = run_export("onnx", tmp_path / "dynamo.onnx", CNN_ONLY + ["TEST.WEIGHT", weights["cnn"]], "--dynamo")
    assert report["max_abs_diff"] <= export.DEFAULT_ATOL and report["ranking_same"]
