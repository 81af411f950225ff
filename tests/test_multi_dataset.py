"""Several datasets at once: DATASETS.NAMES as a list (training on the union, ids and cameras offset per
dataset), DATASETS.TEST_NAMES (each test set evaluated separately, results.json's top level = the first),
and the mean camera embedding for the cameras of a test set that was not trained on.

Two more generated datasets are registered for the module (and removed after it): ``synthetic_b``
(another seed, 3 cameras, like tiny.yml's ``synthetic``) and ``synthetic_c`` (another seed, 5 cameras:
more than the model was trained with).
"""
import dataclasses
import json
import os
import types

import pytest
import torch

import test_net
import train_net
from configs import ConfigError, load_cfg
from datasets import registry as dataset_registry
from datasets.base import ImageRecord, TrainingUnion
from datasets.loader import ImageDataset, SeededDataLoader, make_dataloader
from datasets.market1501 import MarketLayoutDataset
from datasets.synthetic import SyntheticReID
from datasets.synthetic_generator import SyntheticParams, ensure_generated
from datasets.transforms import build_transforms
from model import build_model
from processor.inference import extract_features, model_camera_ids, results_entry
from utils.misc import resolve_amp

from helpers import tiny_cfg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(REPO, "configs", "Synthetic", "tiny.yml")
EPOCHS = 2
METRICS = {"mAP", "rank1", "rank5", "rank10", "mINP"}
# tiny.yml's synthetic with 8 identities per split: each dataset has 48 training images (given in full so
# that tests without tiny.yml read the same generated files)
SMALL = ["DATASETS.SYNTHETIC.NUM_TRAIN_IDS", "8", "DATASETS.SYNTHETIC.NUM_TEST_IDS", "8",
         "DATASETS.SYNTHETIC.NUM_CAMS", "3", "DATASETS.SYNTHETIC.IMAGES_PER_CAM", "2",
         "DATASETS.SYNTHETIC.IMAGE_SIZE", "[64, 32]"]
TRAIN_NAMES, TEST_NAMES = ["synthetic", "synthetic_b"], ["synthetic_b", "synthetic", "synthetic_c"]


def synthetic_variant(name: str, seed: int, num_cams: int) -> type:
    """A generated dataset ``name`` (DATASETS.SYNTHETIC.* with this seed and number of cameras) in its own folder."""

    class Variant(SyntheticReID):
        folder_names = (name,)

        def __init__(self, root, cfg=None):
            self.params = dataclasses.replace(SyntheticParams.from_cfg(cfg), seed=seed, num_cams=num_cams)
            ensure_generated(os.path.join(root, name), self.params)
            self.published = self.params.expected_statistics()
            MarketLayoutDataset.__init__(self, root, cfg)

        def find_dataset_dir(self, root):
            return os.path.join(root, name)

    return Variant


@pytest.fixture(scope="module", autouse=True)
def variants():
    """``synthetic_b`` and ``synthetic_c`` registered while this module's tests run."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dataset_registry, "DATASET_REGISTRY", dict(dataset_registry.DATASET_REGISTRY))
        dataset_registry.register_dataset("synthetic_b")(synthetic_variant("synthetic_b", 11, 3))
        dataset_registry.register_dataset("synthetic_c")(synthetic_variant("synthetic_c", 12, 5))
        yield


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


def run_args(data_root, output_dir, *opts):
    """A two-epoch tiny run on the union of TRAIN_NAMES, tested on TEST_NAMES (command-line list form)."""
    return ["--config_file", TINY, "DATASETS.ROOT_DIR", str(data_root), "OUTPUT_DIR", str(output_dir), *SMALL,
            "DATASETS.NAMES", str(TRAIN_NAMES), "DATASETS.TEST_NAMES", str(TEST_NAMES),
            "SOLVER.MAX_EPOCHS", str(EPOCHS), "SOLVER.EVAL_PERIOD", "1", "SOLVER.CHECKPOINT_PERIOD", "1",
            "SOLVER.WARMUP_EPOCHS", "0", *opts]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_root):
    """(output folder, summary) of one run on two datasets with three test sets."""
    out = tmp_path_factory.mktemp("run")
    return out, train_net.main(run_args(data_root, out))


# ----------------------------------------------------------------------------- config
def test_names_accept_a_string_or_a_list_in_yaml_and_on_the_command_line(tmp_path):
    single = tmp_path / "single.yml"
    single.write_text("DATASETS:\n  NAMES: 'market1501'\n", encoding="utf-8")
    cfg = load_cfg(str(single))
    assert cfg.DATASETS.NAMES == cfg.DATASETS.TEST_NAMES == ("market1501",)
    both = tmp_path / "both.yml"
    both.write_text("DATASETS:\n  NAMES: [market1501, msmt17]\n  TEST_NAMES: dukemtmcreid\n", encoding="utf-8")
    cfg = load_cfg(str(both))
    assert cfg.DATASETS.NAMES == ("market1501", "msmt17") and cfg.DATASETS.TEST_NAMES == ("dukemtmcreid",)
    # the command line overrides the file in either form
    cfg = load_cfg(str(both), ["DATASETS.NAMES", "synthetic", "DATASETS.TEST_NAMES", "['synthetic','msmt17']"])
    assert cfg.DATASETS.NAMES == ("synthetic",) and cfg.DATASETS.TEST_NAMES == ("synthetic", "msmt17")
    cfg = load_cfg(str(single), ["DATASETS.NAMES", "['synthetic', 'market1501']", "DATASETS.TEST_NAMES", "[]"])
    assert cfg.DATASETS.NAMES == cfg.DATASETS.TEST_NAMES == ("synthetic", "market1501")


@pytest.mark.parametrize("opts,message", [
    (["DATASETS.NAMES", "['synthetic','cuhk03']"],  # the datasets registered now, synthetic_b among them
     r"DATASETS.NAMES = \('synthetic', 'cuhk03'\): 'cuhk03' is not one of .*'synthetic_b'.*registered datasets"),
    (["DATASETS.NAMES", "cuhk03"], r"DATASETS.NAMES = \('cuhk03',\): 'cuhk03' is not one of"),
    (["DATASETS.TEST_NAMES", "['synthetic', 'viper']"], r"DATASETS.TEST_NAMES = \('synthetic', 'viper'\): 'viper' is"),
    (["DATASETS.TEST_NAMES", "viper"], r"DATASETS.TEST_NAMES = \('viper',\): 'viper' is not one of"),
])
def test_unregistered_dataset_names_are_named_with_their_key_when_the_data_is_built(tmp_path, opts, message):
    cfg = load_cfg("", opts + ["DATASETS.ROOT_DIR", str(tmp_path)])  # registry names are not checked on loading
    with pytest.raises(ConfigError, match=message):
        make_dataloader(cfg)
    assert os.listdir(tmp_path) == []  # refused before any dataset is read or generated


# ----------------------------------------------------------------------------- union
def _fake(name, pids, camids, num_cams):
    train = [ImageRecord(f"{name}/{i}.jpg", p, c) for i, (p, c) in enumerate(zip(pids, camids))]
    return types.SimpleNamespace(name=name, train=train, num_train_pids=len(set(pids)), num_cams=num_cams)


def test_union_offsets_ids_and_cameras_so_they_never_collide():
    a = _fake("a", [0, 0, 1, 2], [0, 1, 1, 5], num_cams=6)
    b = _fake("b", [0, 1, 1], [0, 0, 2], num_cams=3)
    union = TrainingUnion([a, b])
    assert (union.num_train_pids, union.num_cams) == (3 + 2, 6 + 3)
    assert union.offsets == {"a": (0, 0), "b": (3, 6)}
    assert union.train[:4] == a.train  # the first dataset keeps its ids
    assert [(r.path, r.pid, r.camid) for r in union.train[4:]] == [("b/0.jpg", 3, 6), ("b/1.jpg", 4, 6),
                                                                   ("b/2.jpg", 4, 8)]
    pids_of = {name: {r.pid for r in union.train if r.path.startswith(name)} for name in "ab"}
    cams_of = {name: {r.camid for r in union.train if r.path.startswith(name)} for name in "ab"}
    assert not pids_of["a"] & pids_of["b"] and not cams_of["a"] & cams_of["b"]
    alone = TrainingUnion([a])
    assert alone.train == a.train and (alone.num_train_pids, alone.num_cams) == (3, 6)


def test_make_dataloader_trains_on_the_union_and_tests_each_set(data_root, caplog):
    cfg = tiny_cfg(*SMALL, "DATASETS.ROOT_DIR", str(data_root), "DATASETS.NAMES", str(TRAIN_NAMES),
                   "DATASETS.TEST_NAMES", str(TEST_NAMES), "DATALOADER.NUM_WORKERS", "0",
                   "DATALOADER.NUM_INSTANCE", "4", "SOLVER.IMS_PER_BATCH", "16")
    with caplog.at_level("INFO"):
        data = make_dataloader(cfg)
    assert (data.num_classes, data.num_cams) == (8 + 8, 3 + 3)
    records = data.train_loader.dataset.records
    assert len(records) == 2 * 8 * 3 * 2 and {r.pid for r in records} == set(range(16))
    assert {r.camid for r in records[:48]} == {0, 1, 2} and {r.camid for r in records[48:]} == {3, 4, 5}
    # P x K over the union: every identity of both datasets is drawn in an epoch
    sampler = data.train_loader.sampler
    sampler.set_epoch(1)
    assert {records[i].pid for i in sampler} == set(range(16))
    assert [(t.name, t.num_query, t.camera_offset) for t in data.test_sets] == \
        [("synthetic_b", 8 * 3, 3), ("synthetic", 8 * 3, 0), ("synthetic_c", 8 * 5, None)]
    assert (data.val_loader, data.num_query) == (data.test_sets[0].loader, data.test_sets[0].num_query)
    # test sets keep their own ids and cameras (what the metrics compare)
    assert {r.camid for r in data.test_sets[2].loader.dataset.records} == set(range(5))
    assert "training on the union of synthetic, synthetic_b" in caplog.text
    assert caplog.text.count("test set synthetic_c is not among the training datasets") == 1


# ----------------------------------------------------------------------------- cameras
def test_a_test_set_with_more_cameras_gets_the_mean_camera(data_root):
    cfg = tiny_cfg(*SMALL, "DATASETS.ROOT_DIR", str(data_root))
    torch.manual_seed(0)
    model = build_model(cfg, 8, 3).eval()
    table = model.transformer.sie_embed
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    other = dataset_registry.build_dataset("synthetic_c", str(data_root), cfg)
    records = (other.query + other.gallery)[:12]
    assert max(r.camid for r in records) >= 3  # cameras the model has no row for
    loader = SeededDataLoader(ImageDataset(records, build_transforms(cfg, is_train=False)), seed=0, batch_size=6)
    amp = resolve_amp("off", torch.device("cpu"))
    with model_camera_ids(model, None) as camera_of:
        assert model.transformer.sie_embed.shape[0] == 4
        assert camera_of(torch.tensor([0, 4, 2])).tolist() == [3, 3, 3]
        feats, _, camids = extract_features(model, loader, torch.device("cpu"), amp, camera_of=camera_of)
    assert camids.tolist() == [r.camid for r in records]  # the dataset's own cameras are returned
    # afterwards the very same parameter is back (the optimizer still holds it)
    assert model.transformer.sie_embed is table and any(p is table for p in optimizer.param_groups[0]["params"])
    averaged = build_model(cfg, 8, 3).eval()
    averaged.load_state_dict(model.state_dict())
    with torch.no_grad():  # every row = the mean: any camera id gives the mean embedding
        averaged.transformer.sie_embed.copy_(table.mean(0, keepdim=True).expand_as(table))
    expected, _, _ = extract_features(averaged, loader, torch.device("cpu"), amp, camera_of=torch.zeros_like)
    assert torch.allclose(feats, expected, atol=1e-5)
    with model_camera_ids(model, 5) as camera_of:  # a training dataset: its offset in the union
        assert camera_of(torch.tensor([0, 2])).tolist() == [5, 7]


def test_results_entry_is_the_first_test_set_with_every_set():
    entry = results_entry({"b": {"mAP": 0.5}, "a": {"mAP": 0.7}}, epoch=3)
    assert entry == {"mAP": 0.5, "epoch": 3, "per_dataset": {"b": {"mAP": 0.5}, "a": {"mAP": 0.7}}}
    assert list(entry["per_dataset"]) == ["b", "a"]


# ----------------------------------------------------------------------------- training and testing
def test_training_on_two_datasets_reports_each_test_set(trained):
    out, summary = trained
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"latest", "best", "provenance"}
    for entry in (results["latest"], results["best"]):
        assert list(entry["per_dataset"]) == TEST_NAMES
        assert all(set(m) == METRICS for m in entry["per_dataset"].values())
        assert {k: entry[k] for k in METRICS} == entry["per_dataset"]["synthetic_b"]  # top level = the first
    assert results["latest"]["epoch"] == EPOCHS
    assert results["best"]["mAP"] == max(e["mAP"] for e in (results["best"], results["latest"]))
    log = (out / "train.log").read_text()
    for name in TEST_NAMES:
        assert f"validation, epoch {EPOCHS}, {name}: mAP" in log
    assert log.count("test set synthetic_c is not among the training datasets") == 1  # once, for 3 evaluations
    assert summary["untrained"]["per_dataset"].keys() == set(TEST_NAMES)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    tags = EventAccumulator(str(out)).Reload().Tags()["scalars"]
    assert {"val/mAP", "val/synthetic_b/mAP", "val/synthetic/rank1", "val/synthetic_c/mINP"} <= set(tags)


def test_resume_keeps_every_test_set(trained, data_root, tmp_path):
    out, _ = trained
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    name = "checkpoint_epoch1.pth"
    (resumed / name).write_bytes((out / name).read_bytes())
    (resumed / "last_checkpoint").write_text(name + "\n")
    train_net.main(run_args(data_root, resumed) + ["--resume"])
    again, straight = (json.loads((d / "results.json").read_text()) for d in (resumed, out))
    assert again["latest"] == straight["latest"] and again["best"] == straight["best"]
    ckpt = torch.load(resumed / f"checkpoint_epoch{EPOCHS}.pth", map_location="cpu", weights_only=True)
    assert ckpt["latest"] == straight["latest"]


def test_test_net_evaluates_each_test_set(trained, data_root, tmp_path):
    out, _ = trained
    final = json.loads((out / "results.json").read_text())["latest"]
    weight = out / f"checkpoint_epoch{EPOCHS}.pth"
    feats = tmp_path / "feats.npz"
    metrics = test_net.main(run_args(data_root, tmp_path, "TEST.WEIGHT", str(weight))
                            + ["--save-features", str(feats)])
    written = json.loads((tmp_path / "test_results.json").read_text())
    assert list(written["per_dataset"]) == TEST_NAMES and metrics["per_dataset"] == written["per_dataset"]
    for name in TEST_NAMES:
        for key in METRICS:
            assert written["per_dataset"][name][key] == pytest.approx(final["per_dataset"][name][key], abs=1e-9)
        assert (tmp_path / f"feats_{name}.npz").is_file()
    assert {k: written[k] for k in METRICS} == written["per_dataset"]["synthetic_b"]
    # two test sets given in the other order: the first one is the top level
    metrics = test_net.main(run_args(data_root, tmp_path / "two", "TEST.WEIGHT", str(weight),
                                     "DATASETS.TEST_NAMES", "['synthetic_c','synthetic']"))
    assert list(metrics["per_dataset"]) == ["synthetic_c", "synthetic"]
    assert metrics["mAP"] == pytest.approx(final["per_dataset"]["synthetic_c"]["mAP"], abs=1e-9)
