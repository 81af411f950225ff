"""tools/extract_features.py reads identities and cameras from every layout it is pointed at (Market-1501 and
MSMT17 file names, per-identity subfolders, a CSV file, an MSMT17 list file), and the ranked-list figure is
coloured by them (checked on the data the figure is drawn from, not on its pixels)."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

from model import build_model
from tests.helpers import TINY, tiny_cfg
from tools import extract_features as tool
from utils.errors import UsageError
from processor.feature_extractor import FeatureExtractor

NUM_CLASSES, NUM_CAMS = 4, 3
MARKET_QUERY = ["0002_c1s1_000451_03.jpg", "0005_c3s1_000002_00.jpg"]
MARKET_GALLERY = ["0002_c2s1_000551_01.jpg", "0005_c1s1_000004_01.jpg", "0000_c3s1_000003_01.jpg",
                  "-1_c1s1_000005_01.jpg"]
MSMT_FILES = ["0000/0000_000_01_0303morning_0015_0.jpg", "0000/0000_001_03_0303noon_0016_0.jpg",
              "0004/0004_000_02_0303afternoon_0100_1.jpg"]


def write_images(folder, names, seed=0):
    """Random RGB images at ``folder/name`` for each name (sub-paths allowed); returns the paths."""
    rng = np.random.default_rng(seed)
    paths = []
    for name in names:
        path = os.path.join(str(folder), name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (48, 24, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def weight(tmp_path_factory):
    """A tiny model with 3 cameras, saved as train_net saves it."""
    torch.manual_seed(0)
    model = build_model(tiny_cfg(), NUM_CLASSES, NUM_CAMS)
    with torch.no_grad():
        model.transformer.sie_embed.normal_()  # cameras that make a difference
    path = str(tmp_path_factory.mktemp("model") / "model_best.pth")
    torch.save({"model": model.state_dict(), "epoch": 1}, path)
    return path


def labels(image_set):
    return [(os.path.basename(p), pid, cam) for p, pid, cam in zip(
        image_set.paths, image_set.pids or [None] * len(image_set.paths),
        image_set.camids or [None] * len(image_set.paths))]


# ----------------------------------------------------------------------------- reading the layouts
def test_market_file_names(tmp_path):
    write_images(tmp_path, MARKET_GALLERY)
    image_set = tool.read_image_set(str(tmp_path))
    assert image_set.labels_from == "Market-1501 file names"
    # sorted paths; pid as in the name (junk -1 and distractor 0 included), camera 0-based
    assert labels(image_set) == [("-1_c1s1_000005_01.jpg", -1, 0), ("0000_c3s1_000003_01.jpg", 0, 2),
                                 ("0002_c2s1_000551_01.jpg", 2, 1), ("0005_c1s1_000004_01.jpg", 5, 0)]


def test_duke_file_names(tmp_path):
    write_images(tmp_path, ["0001_c2_f0046182.jpg", "0019_c8_f0057432.jpg"])
    assert labels(tool.read_image_set(str(tmp_path))) == [("0001_c2_f0046182.jpg", 1, 1),
                                                         ("0019_c8_f0057432.jpg", 19, 7)]


def test_msmt_file_names_in_identity_folders(tmp_path):
    write_images(tmp_path, MSMT_FILES)
    image_set = tool.read_image_set(str(tmp_path))
    assert image_set.labels_from == "MSMT17 file names"
    assert labels(image_set) == [("0000_000_01_0303morning_0015_0.jpg", 0, 0),
                                 ("0000_001_03_0303noon_0016_0.jpg", 0, 2),
                                 ("0004_000_02_0303afternoon_0100_1.jpg", 4, 1)]


def test_per_identity_subfolders(tmp_path):
    write_images(tmp_path, ["0002/a.jpg", "0002/b.jpg", "alice/c.png"])
    image_set = tool.read_image_set(str(tmp_path))
    assert image_set.labels_from == "per-identity subfolders"
    # '0002' is the integer 2, the same identity as a file named 0002_c1...; other names stay names
    assert labels(image_set) == [("a.jpg", 2, None), ("b.jpg", 2, None), ("c.png", "alice", None)]


@pytest.mark.parametrize("names", [["photo1.jpg", "photo2.jpg"],
                                   ["0002_c1s1_000451_03.jpg", "holiday.jpg"],  # not every name parses
                                   ["2023_05_01.jpg", "2023_05_02_1200.jpg"]])  # dates are no MSMT17 names
def test_unknown_identities(tmp_path, names):
    write_images(tmp_path, names)
    image_set = tool.read_image_set(str(tmp_path))
    assert image_set.pids is None and image_set.camids is None


def test_csv_file(tmp_path):
    write_images(tmp_path / "imgs", ["x.jpg", "y.jpg", "z.jpg"])
    csv_file = tmp_path / "query.csv"
    csv_file.write_text("path,pid,camid\nimgs/y.jpg,5,2\nimgs/x.jpg,-1,0\nimgs/z.jpg,7,0\n")
    image_set = tool.read_image_set(str(csv_file))
    assert image_set.labels_from == "the CSV file" and image_set.folder == str(tmp_path)
    assert labels(image_set) == [("y.jpg", 5, 2), ("z.jpg", 7, 0)]  # file order; junk skipped as in training


def test_msmt_list_file(tmp_path):
    base = tmp_path / "MSMT17_V1"
    os.makedirs(base / "train")
    write_images(base / "test", MSMT_FILES)
    (base / "list_query.txt").write_text("".join(f"{n} {int(n[:4])}\n" for n in MSMT_FILES))
    image_set = tool.read_image_set(str(base / "list_query.txt"))
    assert image_set.labels_from == "the MSMT17 list"
    assert [(os.path.relpath(p, base), pid, cam) for p, pid, cam in zip(*image_set[:3])] == [
        (os.path.join("test", MSMT_FILES[0]), 0, 0), (os.path.join("test", MSMT_FILES[1]), 0, 2),
        (os.path.join("test", MSMT_FILES[2]), 4, 1)]


def test_bad_sources(tmp_path):
    other = tmp_path / "notes.json"
    other.write_text("{}")
    with pytest.raises(UsageError, match="notes.json: expected a folder of images, a CSV file"):
        tool.read_image_set(str(other))
    empty = tmp_path / "empty.csv"
    empty.write_text("path,pid,camid\n")
    with pytest.raises(UsageError, match="empty.csv lists no images"):
        tool.read_image_set(str(empty))
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        tool.read_image_set(str(tmp_path / "nowhere"))


# ----------------------------------------------------------------------------- the figure's colours
def test_ranked_matches():
    ranking = np.array([[2, 0, -1], [1, 2, 0]])  # -1: no gallery image at that rank
    assert tool.ranked_matches(ranking, [5, 2], [2, 2, 5]) == [[True, False, False], [True, False, True]]
    assert tool.ranked_matches(ranking, None, [2, 2, 5]) is None
    assert tool.ranked_matches(ranking, [5, 2], None) is None


@pytest.fixture
def figure_data(monkeypatch):
    """What ``plot_ranked_list`` is called with (the figure itself is not drawn)."""
    from processor import visualization

    calls = []
    monkeypatch.setattr(visualization, "plot_ranked_list",
                        lambda query_images, gallery_images, ranking, path, matches=None, *rest, **kw:
                        calls.append({"ranking": ranking, "matches": matches}))
    return calls


def run_tool(weight, tmp_path, query, gallery, *options):
    """The arrays of the npz written by the tool for ``--query query --gallery gallery``."""
    out = tmp_path / "r.npz"
    tool.main(["--query", str(query), "--gallery", str(gallery), "--out", str(out), "--topk", "3",
               *options, "TEST.WEIGHT", weight] + list(TINY))
    with np.load(out) as arrays:
        return dict(arrays)


def test_market_folders_colour_the_figure(weight, tmp_path, figure_data):
    write_images(tmp_path / "query", MARKET_QUERY)
    write_images(tmp_path / "gallery", MARKET_GALLERY, seed=1)
    out = run_tool(weight, tmp_path, tmp_path / "query", tmp_path / "gallery", "--topk", "4")
    assert out["query_pids"].tolist() == [2, 5] and out["query_camids"].tolist() == [0, 2]
    assert out["gallery_pids"].tolist() == [-1, 0, 2, 5] and out["gallery_camids"].tolist() == [0, 2, 1, 0]
    (drawn,) = figure_data
    ranking = out["ranking"]
    expected = [[out["gallery_pids"][g] == out["query_pids"][q] for g in row] for q, row in enumerate(ranking)]
    assert drawn["matches"] == expected and (drawn["ranking"] == ranking).all()
    assert [row.count(True) for row in drawn["matches"]] == [1, 1]  # the whole gallery: one image per query's pid


def test_csv_query_against_subfolders(weight, tmp_path, figure_data):
    write_images(tmp_path / "imgs", ["q2.jpg", "q9.jpg"])
    (tmp_path / "query.csv").write_text("path,pid,camid\nimgs/q2.jpg,2,1\nimgs/q9.jpg,9,0\n")
    write_images(tmp_path / "gallery", ["0002/a.jpg", "0009/b.jpg", "0009/c.jpg"], seed=1)
    out = run_tool(weight, tmp_path, tmp_path / "query.csv", tmp_path / "gallery")
    assert "gallery_camids" not in out and out["gallery_pids"].tolist() == [2, 9, 9]
    (drawn,) = figure_data
    expected = [[[2, 9, 9][g] == [2, 9][q] for g in row] for q, row in enumerate(out["ranking"])]
    assert drawn["matches"] == expected and sum(map(sum, expected)) == 3  # top-3 of 3: every match shown


def test_unknown_identities_draw_grey(weight, tmp_path, figure_data):
    write_images(tmp_path / "query", ["a.jpg"])
    write_images(tmp_path / "gallery", MARKET_GALLERY)
    out = run_tool(weight, tmp_path, tmp_path / "query", tmp_path / "gallery")
    assert "query_pids" not in out and "gallery_pids" in out
    assert figure_data[0]["matches"] is None


# ----------------------------------------------------------------------------- cameras
def test_known_cameras_are_given_to_the_model(weight, tmp_path, figure_data):
    paths = write_images(tmp_path / "query", MARKET_QUERY)
    write_images(tmp_path / "gallery", ["0002_c2s1_000551_01.jpg"])
    out = run_tool(weight, tmp_path, tmp_path / "query", tmp_path / "gallery")
    extract = FeatureExtractor(tiny_cfg(), weight, device="cpu")
    np.testing.assert_allclose(out["query_features"], extract(paths, [0, 2]).numpy(), rtol=1e-5, atol=1e-6)
    mean = run_tool(weight, tmp_path, tmp_path / "query", tmp_path / "gallery", "--mean-camera")
    np.testing.assert_allclose(mean["query_features"], extract(paths).numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(mean["query_features"], out["query_features"], atol=1e-4)


def test_cameras_beyond_the_checkpoint(weight, tmp_path, figure_data):
    write_images(tmp_path / "query", ["0002_c1s1_000451_03.jpg", "0005_c6s1_000002_00.jpg"])  # camera 5 of 0..2
    write_images(tmp_path / "gallery", ["0002_c2s1_000551_01.jpg"])
    with pytest.raises(SystemExit, match=r"0005_c6s1_000002_00.jpg: camera 5 \(0-based\) is not one of the "
                                         r"checkpoint's 3 cameras; pass --mean-camera"):
        run_tool(weight, tmp_path, tmp_path / "query", tmp_path / "gallery")
    out = run_tool(weight, tmp_path, tmp_path / "query", tmp_path / "gallery", "--mean-camera")
    assert out["query_camids"].tolist() == [0, 5]  # still recorded
