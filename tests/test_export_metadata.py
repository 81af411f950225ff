"""tools/export.py: the metadata written into ONNX and TorchScript files, the variants (preprocessing in the
graph, L2-normalised output) and their parity, the threshold hook, and --out checked before exporting."""
import json
import os

import numpy as np
import pytest
import torch
import yaml

from tests.helpers import TINY, tiny_cfg
from tests.test_export import CNN_ONLY, FUSED, NUM_CAMS, run_export, weights  # noqa: F401 - weights: a fixture
from tests.test_entry_points import assert_one_line_error
from tests.test_cli import run_script
from tools import export
from tracking.exported import ExportedExtractor, read_metadata, write_threshold
from processor.feature_extractor import FeatureExtractor
from utils.protocol import sha256_file

pytest.importorskip("onnxruntime")

SUFFIX = {"onnx": "onnx", "torchscript": "pt"}
# FEAT_NORM off, so that --l2-normalize changes the output
UNNORMALISED = FUSED + ["TEST.FEAT_NORM", "False"]
VARIANTS = {"plain": [], "baked": ["--bake-preprocessing"], "normalised": ["--l2-normalize"],
            "baked+normalised": ["--bake-preprocessing", "--l2-normalize"]}
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.[a-z_]*` is deprecated:FutureWarning")


def bgr_image(seed=7, size=(64, 32)):
    """A uint8 BGR image [H, W, 3] of random colour blocks."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (size[0] // 8, size[1] // 8, 3), dtype=np.uint8)
    return np.ascontiguousarray(np.kron(blocks, np.ones((8, 8, 1), np.uint8)).astype(np.uint8))


@pytest.fixture(scope="module")
def variants(weights, tmp_path_factory):  # noqa: F811
    """Every variant in both formats, exported from the fused model (FEAT_NORM off): {(fmt, variant): report}."""
    root = tmp_path_factory.mktemp("variants")
    reports = {}
    for fmt in SUFFIX:
        for name, options in VARIANTS.items():
            out = root / f"{name}.{SUFFIX[fmt]}"
            reports[fmt, name] = run_export(fmt, out, UNNORMALISED + ["TEST.WEIGHT", weights["fused"]], *options,
                                            "--threshold", "0.25")
    return reports


@pytest.mark.parametrize("fmt", list(SUFFIX))
def test_metadata_is_in_the_file_and_describes_it(variants, weights, fmt):  # noqa: F811
    report = variants[fmt, "plain"]
    meta = read_metadata(report["out"])
    assert meta == json.loads(json.dumps(report["metadata"]))  # what was written is what main() reports
    assert meta["format"] == fmt and meta["format_version"] == 1
    assert meta["input_size"] == [64, 32] and meta["layout"] == "NCHW" and meta["input_dtype"] == "float32"
    assert meta["colour_order"] == "RGB" and not meta["preprocessing_in_graph"]
    assert meta["pixel_mean"] == [0.5, 0.5, 0.5] and meta["pixel_std"] == [0.5, 0.5, 0.5]
    assert meta["output_dim"] == 960 and meta["l2_normalised"] is False
    assert meta["feature"] == {"TEST.FEAT": "all", "TEST.NECK_FEAT": "before", "TEST.FEAT_NORM": False,
                               "TEST.PART_NORM": False, "TEST.FLIP": True}
    assert [i["name"] for i in meta["inputs"]] == ["images", "camids"] and meta["num_cams"] == NUM_CAMS
    assert meta["recommended_threshold"] == 0.25
    config = yaml.safe_load(meta["config"])
    assert config["MODEL"]["CNN"]["NAME"] == "resnet18" and config["TEST"]["WEIGHT"] == weights["fused"]
    prov = meta["provenance"]
    assert prov["checkpoint"]["sha256"] == sha256_file(weights["fused"]) and prov["checkpoint"]["epoch"] == 1
    assert prov["versions"]["torch"] == torch.__version__ and "git_commit" in prov
    assert prov["parity"]["max_abs_diff"] == report["max_abs_diff"] and prov["parity"]["ranking_same"]
    baked = read_metadata(variants[fmt, "baked+normalised"]["out"])
    assert baked["layout"] == "NHWC" and baked["input_dtype"] == "uint8" and baked["colour_order"] == "BGR"
    assert baked["inputs"][0]["shape"] == ["batch", 64, 32, 3]
    assert baked["preprocessing_in_graph"] and baked["l2_normalised"] and baked["l2_normalize_in_graph"]


@pytest.mark.parametrize("fmt", list(SUFFIX))
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_variant_passes_its_parity_check(variants, fmt, variant):
    report = variants[fmt, variant]
    assert report["max_abs_diff"] <= export.DEFAULT_ATOL and report["ranking_same"], report
    assert set(report["per_batch"]) == {2, 8}
    assert read_metadata(report["out"])["provenance"]["parity"]["per_batch"] == \
        {str(b): d for b, d in report["per_batch"].items()}


@pytest.mark.parametrize("fmt", list(SUFFIX))
def test_baked_bgr_input_equals_the_extractor(variants, weights, fmt):  # noqa: F811
    """The uint8 BGR graph on an image equals FeatureExtractor on the same image given as RGB."""
    extract = FeatureExtractor(tiny_cfg(*UNNORMALISED[len(TINY):]), weights["fused"], device="cpu")
    bgr = np.stack([bgr_image(1), bgr_image(2), bgr_image(3)])
    cams = [-1, 0, 2]
    expected = extract(list(bgr[..., ::-1]), cams)
    run = ExportedExtractor(variants[fmt, "baked"]["out"]).run
    got = run(torch.from_numpy(bgr), torch.tensor(cams))
    assert (got - expected).abs().max().item() < 1e-5
    # the colour order matters: the same pixels read as RGB describe other images
    assert (run(torch.from_numpy(np.ascontiguousarray(bgr[..., ::-1])), torch.tensor(cams)) - expected).abs().max() > 1e-3
    # L2-normalised variant: unit rows, the plain variant's directions
    normed = ExportedExtractor(variants[fmt, "baked+normalised"]["out"]).run(torch.from_numpy(bgr), torch.tensor(cams))
    assert torch.allclose(normed.norm(dim=1), torch.ones(3), atol=1e-5)
    assert not torch.allclose(expected.norm(dim=1), torch.ones(3), atol=1e-2)
    assert (normed - torch.nn.functional.normalize(expected, dim=1)).abs().max().item() < 1e-5


@pytest.mark.parametrize("fmt", list(SUFFIX))
def test_write_threshold_updates_an_existing_export(variants, tmp_path, fmt):
    path = str(tmp_path / f"copy.{SUFFIX[fmt]}")
    with open(variants[fmt, "plain"]["out"], "rb") as src, open(path, "wb") as dst:
        dst.write(src.read())
    before = read_metadata(path)
    images = torch.randn(2, 3, 64, 32)
    feats = ExportedExtractor(path).run(images, torch.tensor([-1, 1]))
    export.write_threshold(path, 0.625)  # tools.export's name, for tools/calibrate.py
    after = read_metadata(path)
    assert after["recommended_threshold"] == 0.625 and dict(after, recommended_threshold=0.25) == before
    assert torch.equal(ExportedExtractor(path).run(images, torch.tensor([-1, 1])), feats)
    with pytest.raises(ValueError, match="finite"):
        write_threshold(path, float("nan"))


def test_a_file_without_metadata_is_a_clear_error(tmp_path):
    model = torch.jit.trace(torch.nn.Linear(2, 2), torch.randn(1, 2))
    path = str(tmp_path / "other.pt")
    torch.jit.save(model, path)
    with pytest.raises(ValueError, match=r"other\.pt has no 'fusionreid' metadata"):
        read_metadata(path)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(ValueError, match=r"junk\.onnx is neither a TorchScript archive nor an ONNX model"):
        read_metadata(str(junk))


def test_input_colour_needs_baked_preprocessing(tmp_path):
    with pytest.raises(SystemExit) as info:
        export.main(["--input-colour", "RGB", "--out", str(tmp_path / "m.onnx"), *CNN_ONLY])
    assert info.value.code == "export.py: error: --input-colour RGB applies with --bake-preprocessing only"


# ----------------------------------------------------------------------------- issue 16: --out checked first
def _no_export(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the model was built although --out cannot be written")
    monkeypatch.setattr(export, "build_exported", fail)


def test_out_naming_an_existing_folder_fails_before_exporting(tmp_path, monkeypatch):
    folder = tmp_path / "exports"
    folder.mkdir()
    _no_export(monkeypatch)
    with pytest.raises(SystemExit) as info:
        export.main(["--format", "torchscript", "--out", str(folder), *CNN_ONLY])
    assert info.value.code == (f"export.py: error: --out {folder} is a folder: name the file to write, e.g. "
                               f"{folder / 'model.pt'}")
    assert os.listdir(folder) == []


def test_out_below_a_regular_file_fails_before_exporting(tmp_path, monkeypatch):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file, not a folder")
    out = blocker / "sub" / "model.onnx"
    _no_export(monkeypatch)
    with pytest.raises(SystemExit) as info:
        export.main(["--out", str(out), *CNN_ONLY])
    assert info.value.code == (f"export.py: error: --out {out}: {blocker} is a file, not a folder, so nothing "
                               f"can be written below it")


def test_out_folder_from_the_command_line(tmp_path):
    rc, err = run_script("tools/export.py", "--out", str(tmp_path), *CNN_ONLY)
    assert_one_line_error(rc, err, "tools/export.py", str(tmp_path), "is a folder")


@pytest.mark.parametrize("fmt", list(SUFFIX))
def test_exported_camera_ids_are_checked_against_the_training_cameras(variants, fmt):
    extract = ExportedExtractor(variants[fmt, "plain"]["out"])
    assert extract.camera_ids([None, 0, -1, NUM_CAMS - 1], 4).tolist() == [-1, 0, -1, NUM_CAMS - 1]
    assert extract.camera_ids(None, 2).tolist() == [-1, -1]
    for bad in (NUM_CAMS, -2):
        with pytest.raises(ValueError, match=rf"camera ids must be in \[0, {NUM_CAMS}\) .* got \[{bad}\]"):
            extract([bgr_image()], cam_ids=[bad])
    with pytest.raises(ValueError, match="1 camera ids for 2 crops"):
        extract([bgr_image(), bgr_image(8)], cam_ids=[0])
