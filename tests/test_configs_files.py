"""The experiment YAMLs under configs/<dataset>/: they load, resolve to defaults + the paper table row's
overrides (so the files and configs/paper_tables.py cannot drift apart), name registered datasets and
backbones, and a sample builds."""
import os

import pytest
import torch

from configs import iter_keys, load_cfg
from datasets import check_dataset_names
from model import build_model
from model.backbones import backbone_names
from tools.reproduce import DATASET_DIRS, TABLE_KEYS, all_config_files, config_path, list_runs, table_rows

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Keys that place an experiment (data, weights, output) without being the experiment itself.
PLACEMENT_KEYS = {"DATASETS.NAMES", "DATASETS.TEST_NAMES", "DATASETS.ROOT_DIR", "OUTPUT_DIR", "MODEL.PRETRAIN_CHOICE",
                  "MODEL.CNN.PRETRAIN_PATH", "MODEL.TRANSFORMER.PRETRAIN_PATH"}

# The ImageNet file each backbone starts from (configs/README.md says where they come from).
PRETRAINED = {
    "resnet50": "pretrained/resnet50-0676ba61.pth",
    "resnet101": "pretrained/resnet101-63fe2227.pth",
    "resnet152": "pretrained/resnet152-394f9c45.pth",
    "vit_base_patch16_224": "pretrained/jx_vit_base_p16_224-80ecf9dd.pth",
    "deit_base_patch16_224": "pretrained/deit_base_distilled_patch16_224-df68dfff.pth",
    "t2t_vit_t_14": "pretrained/81.7_T2T_ViTt_14.pth.tar",
}

ALL_RUNS = [run for key in TABLE_KEYS for run in list_runs(key)]


def _value(cfg, key):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def _rel(path):
    return os.path.relpath(path, ROOT)


def test_every_table_row_has_its_file_and_every_file_a_row():
    expected = {run.config for run in ALL_RUNS}
    missing = sorted(_rel(p) for p in expected if not os.path.isfile(p))
    assert not missing, f"table rows without a config file: {missing}"
    orphans = sorted(_rel(p) for p in set(all_config_files(ROOT)) - expected)
    assert not orphans, f"config files that no table row names: {orphans}"


@pytest.mark.parametrize("run", ALL_RUNS, ids=lambda r: _rel(r.config))
def test_file_resolves_to_defaults_plus_row_overrides(run):
    cfg = load_cfg(run.config)
    expected = load_cfg("", run.row.overrides)
    diff = {k: (_value(cfg, k), _value(expected, k)) for k in iter_keys(cfg)
            if k not in PLACEMENT_KEYS and _value(cfg, k) != _value(expected, k)}
    assert not diff, f"{_rel(run.config)} differs from defaults + row {run.row.name!r}: {diff}"
    # Placement: its dataset, ./data, ImageNet weights of its backbones, its own output folder.
    assert cfg.DATASETS.NAMES == cfg.DATASETS.TEST_NAMES == (run.dataset,)
    assert cfg.DATASETS.ROOT_DIR == "./data"
    assert cfg.MODEL.PRETRAIN_CHOICE == "imagenet"
    for name, path in ((cfg.MODEL.CNN.NAME, cfg.MODEL.CNN.PRETRAIN_PATH),
                       (cfg.MODEL.TRANSFORMER.NAME, cfg.MODEL.TRANSFORMER.PRETRAIN_PATH)):
        if name:
            assert path == PRETRAINED[name], f"{_rel(run.config)}: {name} should start from {PRETRAINED[name]}"
    folder = os.path.splitext(_rel(run.config))[0].split(os.sep, 1)[1]  # <dataset>/<table>/<row>
    assert cfg.OUTPUT_DIR == f"./output/{folder}"


def test_files_inherit_their_dataset_base():
    for path in all_config_files(ROOT):
        with open(path, encoding="utf-8") as f:
            assert "_BASE_: ../base.yml" in f.read(), f"{_rel(path)} does not inherit ../base.yml"
    for ds, folder in DATASET_DIRS.items():
        base = load_cfg(os.path.join(ROOT, "configs", folder, "base.yml"))
        assert base.DATASETS.NAMES == (ds,)


def test_files_name_registered_datasets_and_backbones():
    # load_cfg leaves registry names to the builders (make_dataloader, build_model); here without building
    for path in all_config_files(ROOT):
        cfg = load_cfg(path)
        check_dataset_names(cfg)
        assert cfg.MODEL.CNN.NAME in ("",) + backbone_names("cnn"), _rel(path)
        assert cfg.MODEL.TRANSFORMER.NAME in ("",) + backbone_names("transformer"), _rel(path)


def test_output_dirs_are_unique():
    dirs = [load_cfg(p).OUTPUT_DIR for p in all_config_files(ROOT)]
    assert len(dirs) == len(set(dirs))


def test_naming_rule_examples():
    title, rows = table_rows("2")
    assert _rel(config_path("2", rows[-1][0], rows[-1][1])) == os.path.join(
        "configs", "MSMT17", "table2", "method5_full.yml")
    assert len(list_runs("1")) == 12 and len(list_runs("6")) == 15
    assert [len(list_runs(k)) for k in ("2", "3", "4", "5", "fig5", "fig6")] == [7, 4, 4, 2, 6, 5]


SMALL = ["MODEL.PRETRAIN_CHOICE", "none", "MODEL.TRANSFORMER.DROP_PATH", "0.0"]


@pytest.mark.parametrize("rel, extra", [
    # real sizes: the CNN-only row and T2T-ViT-14 (no dataset, no weight file needed)
    ("configs/MSMT17/table6/resnet50_only.yml", []),
    ("configs/MSMT17/table6/t2t_vit_14_only.yml", []),
    # the fusion keys of Table III's MFU-front row on small backbones and inputs
    ("configs/MSMT17/table3/mfu_front_seu_back.yml",
     ["MODEL.CNN.NAME", "resnet18", "MODEL.TRANSFORMER.NAME", "vit_tiny_patch16_224", "MODEL.FUSION.DIM", "64",
      "MODEL.FUSION.NUM_HEADS", "4", "INPUT.SIZE_TRAIN", "[64, 32]", "INPUT.SIZE_TEST", "[64, 32]"]),
])
def test_sample_configs_build(rel, extra):
    cfg = load_cfg(os.path.join(ROOT, rel), SMALL + extra)
    model = build_model(cfg, num_classes=10, num_cams=15).eval()
    assert model.feature_dims
    if extra:  # small enough to run
        with torch.no_grad():
            out = model(torch.randn(2, 3, *cfg.INPUT.SIZE_TEST), torch.tensor([0, 3]))
        assert out.shape == (2, model.test_dim)
