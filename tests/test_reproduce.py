"""tools/reproduce.py: which runs a table has, which are skipped, the table/plot/CSV assembled from fixture
results.json files (no training, no model builds), the verdict on hand-made numbers, and one end-to-end run
over three seeds on the tiny synthetic config (six 1-epoch trainings, then a second invocation that reuses
them)."""
import csv
import json
import logging
import os
import sys

import numpy as np
import pytest

from tools import reproduce as rp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join("configs", "Synthetic", "tiny.yml")


@pytest.fixture
def root(tmp_path):
    """A repository root of its own: the real configs, an empty output folder."""
    os.symlink(os.path.join(ROOT, "configs"), tmp_path / "configs")
    return str(tmp_path)


def write_results(root, output_dir, mAP, rank1):
    folder = os.path.join(root, output_dir)
    os.makedirs(folder, exist_ok=True)
    entry = {"mAP": mAP, "rank1": rank1, "rank5": 0.9, "epoch": 180}
    with open(os.path.join(folder, "results.json"), "w") as f:
        json.dump({"latest": entry, "best": dict(entry, mAP=mAP + 0.01)}, f)


def test_dry_run_lists_every_row_and_trains_nothing(root, capsys):
    runs = rp.list_runs("2", root)
    assert [r.row.name for r in runs][:2] == ["ResNet50 only", "ViT-B only"]
    failed = rp.train_missing(runs, rp.ResultIndex(root=root), dry_run=True)
    out = capsys.readouterr().out.splitlines()
    assert failed == [] and len(out) == 7
    assert out[-1] == f"would run: {sys.executable} train_net.py --config_file configs/MSMT17/table2/method5_full.yml"
    assert not os.path.exists(os.path.join(root, "output"))


def test_finished_and_twin_runs_are_skipped(root, capsys):
    write_results(root, "output/MSMT17/table2/method1_dfe", 0.6, 0.8)
    # Table V's GeMP row is the same experiment as Table II's Method5: its results serve both
    write_results(root, "output/MSMT17/table5/gemp", 0.69, 0.86)
    index = rp.ResultIndex(["SOLVER.SEED", "1"], root=root)
    rp.train_missing(rp.list_runs("2", root), index, "torchrun", 4, dry_run=True)
    out = capsys.readouterr().out
    assert "method1_dfe" not in out and "method5_full" not in out
    assert ("would run: torchrun --nproc_per_node=4 train_net.py --config_file configs/MSMT17/table2/"
            "method2_lru.yml SOLVER.SEED 1") in out
    assert out.count("would run") == 5


def test_seeded_runs_have_their_own_folders_and_reuse_the_single_run(root, capsys):
    # the single run of a row trained with the default seed (1111) is that row's seed-1111 run
    write_results(root, "output/MSMT17/table5/gap", 0.686, 0.862)
    index = rp.ResultIndex(root=root, seeds=[1111, 1112])
    rp.train_missing(rp.list_runs("5", root), index, dry_run=True, seeds=[1111, 1112])
    out = capsys.readouterr().out.splitlines()
    base = f"would run: {sys.executable} train_net.py --config_file configs/MSMT17/table5/"
    assert out == [base + "gemp.yml SOLVER.SEED 1111 OUTPUT_DIR ./output/MSMT17/table5/gemp/seed_1111",
                   base + "gemp.yml SOLVER.SEED 1112 OUTPUT_DIR ./output/MSMT17/table5/gemp/seed_1112",
                   base + "gap.yml SOLVER.SEED 1112 OUTPUT_DIR ./output/MSMT17/table5/gap/seed_1112"]
    # an OUTPUT_DIR override is the root of every run's folder, which keeps the YAML's layout
    runs = rp.list_runs("5", root)
    cfg = rp.resolve_run(runs[1], ["OUTPUT_DIR", "/scratch"], 7, root)
    assert (cfg.OUTPUT_DIR, cfg.SOLVER.SEED) == ("/scratch/MSMT17/table5/gap/seed_7", 7)


def test_table_assembly_from_results(root):
    write_results(root, "output/MSMT17/table3/seu_only", 0.6512, 0.8523)
    rows = rp.collect(rp.list_runs("3", root), rp.ResultIndex(root=root), stats=False)
    by_name = {r["row"]: r for r in rows}
    assert by_name["SEU only"]["mAP"] == pytest.approx(65.12) and by_name["SEU only"]["rank1"] == pytest.approx(85.23)
    assert by_name["SEU only"]["paper_mAP"] == 68.7 and by_name["SEU only"]["paper_params"] == 7.1
    assert by_name["MFU only"]["mAP"] is None
    best = rp.collect(rp.list_runs("3", root), rp.ResultIndex(root=root), which="best", stats=False)
    assert best[1]["mAP"] == pytest.approx(66.12)
    text = rp.markdown_table("Table III", rows)
    assert ("| SEU only | 1 | 68.7 | 65.1 | n/a (n=1), gap -3.6 | 86.1 | 85.2 | n/a (n=1), gap -0.9 | 7.1 |  | 2.5 |  "
            "| configs/MSMT17/table3/seu_only.yml |") in text
    assert "| MFU only | 0 | 68.9 |  | not run | 86.0 |  | not run |" in text


def test_seeds_table_and_csv_from_results(root, tmp_path):
    seeds = [1111, 1112, 1113]
    for seed, (mAP, rank1) in zip(seeds, [(0.688, 0.861), (0.692, 0.866), (0.684, 0.858)]):
        write_results(root, f"output/MSMT17/table5/gemp/seed_{seed}", mAP, rank1)
    write_results(root, "output/MSMT17/table5/gap/seed_1112", 0.60, 0.80)
    rows = rp.collect(rp.list_runs("5", root), rp.ResultIndex(root=root, seeds=seeds), stats=False, seeds=seeds)
    gemp, gap = rows
    assert gemp["n"] == 3 and gemp["seeds"] == seeds
    assert gemp["mAP"] == pytest.approx(68.8) and gemp["mAP_std"] == pytest.approx(0.4)
    # paper 69.5: within 4.30 * 0.4 * sqrt(4/3) = 1.99 of the mean
    assert gemp["mAP_verdict"] == "reproduced" and gemp["mAP_gap"] == pytest.approx(-0.7)
    assert gemp["mAP_tolerance"] == pytest.approx(4.303 * 0.4 * (4 / 3) ** 0.5)
    assert gap["n"] == 1 and gap["mAP_verdict"] == "n/a (n=1), gap -8.6"
    text = rp.markdown_table("Table V", rows)
    assert "| GeMP | 3 | 69.5 | 68.8 ± 0.4 | reproduced | 86.7 | 86.2 ± 0.4 | reproduced |" in text
    path = rp.write_csv(rows, str(tmp_path / "t5.csv"))
    with open(path, newline="") as f:
        records = list(csv.DictReader(f))
    assert [r["row"] for r in records] == ["GeMP", "GAP"]
    assert records[0]["seeds"] == "1111;1112;1113" and float(records[0]["mAP_std"]) == pytest.approx(0.4)
    per_seed = dict(item.split(":") for item in records[0]["mAP_per_seed"].split(";"))
    assert float(per_seed["1112"]) == pytest.approx(69.2)
    assert records[1]["mAP_std"] == "" and records[1]["mAP_verdict"].startswith("n/a")


def test_verdict_rule():
    # within the prediction interval of one run: t(2) * s * sqrt(1 + 1/3), s = 1 -> 4.97 points
    assert rp.verdict([68.0, 69.0, 70.0], 73.9)["verdict"] == "reproduced"
    assert rp.verdict([68.0, 69.0, 70.0], 74.0)["verdict"] == "gap -5.0"
    assert rp.verdict([68.0, 69.0, 70.0], 64.0)["verdict"] == "gap +5.0"
    # the noise floor: seeds that agree exactly still allow 0.5 points
    assert rp.verdict([69.0, 69.0, 69.0], 69.5)["verdict"] == "reproduced"
    v = rp.verdict([69.0, 69.0, 69.0], 69.6)
    assert v["verdict"] == "gap -0.6" and v["tolerance"] == 0.5
    # many seeds: the interval tends to 1.96 std
    many = rp.verdict(list(np.linspace(60, 70, 200)), 100)
    assert many["tolerance"] == pytest.approx(1.972 * many["std"] * (1 + 1 / 200) ** 0.5, rel=1e-3)
    assert rp.t975(2) == 4.303 and rp.t975(31) == pytest.approx(2.040, abs=2e-3)
    assert rp.t975(120) == pytest.approx(1.980, abs=1e-3)
    assert rp.verdict([69.0], 69.5)["verdict"] == "n/a (n=1), gap -0.5"
    assert rp.verdict([1.0, 2.0], None)["verdict"] == "no paper value"
    assert rp.verdict([], 69.5) == {"n": 0, "mean": None, "std": None, "gap": None, "tolerance": None,
                                    "verdict": "not run"}


def test_table1_rows_name_their_dataset(root):
    write_results(root, "output/DukeMTMC/table1/384x128_stride_12", 0.83, 0.91)
    rows = rp.collect(rp.list_runs("1", root), rp.ResultIndex(root=root), stats=False)
    duke = [r for r in rows if r["row"] == "DukeMTMC 384x128 stride 12"][0]
    assert (duke["paper_mAP"], duke["mAP"]) == (83.7, pytest.approx(83.0))


def test_base_config_runs_and_paper_values(root):
    """--base-config: the base plus each row's overrides; paper numbers only on the paper's dataset."""
    base = os.path.join(root, "configs", "MSMT17", "base.yml")
    runs = rp.list_runs("2", root, base, "msmt17")
    # on MSMT17's base, a row is the same experiment as its own YAML
    for run, own in zip(runs, rp.list_runs("2", root)):
        assert (run.row.mAP, run.row.params) == (own.row.mAP, own.row.params)
        assert rp.experiment_key(rp.resolve_run(run, root=root)) == rp.experiment_key(rp.resolve_run(own, root=root))
    tiny = os.path.join(root, TINY)
    runs = rp.list_runs("fig5", root, tiny, "synthetic")
    assert all(r.row.mAP is None and r.row.params is None for r in runs)
    cfg = rp.resolve_run(runs[0], ["OUTPUT_DIR", "/o"], 3, root)
    assert (cfg.OUTPUT_DIR, cfg.MODEL.FUSION.HTM_LAYERS, cfg.MODEL.FUSION.DIM) == ("/o/fig5/l_1/seed_3", 1, 48)
    # the command line: the row's overrides, the user's (their OUTPUT_DIR is the root), the seed, the run's folder
    assert rp.command_opts(runs[0], ["OUTPUT_DIR", "/o", "SOLVER.MAX_EPOCHS", "1"], cfg, 3) == [
        "MODEL.FUSION.HTM_LAYERS", "1", "SOLVER.MAX_EPOCHS", "1", "SOLVER.SEED", "3", "OUTPUT_DIR", "/o/fig5/l_1/seed_3"]
    (market, *_), (setting, dataset) = rp.list_runs("1", root, base, "market1501"), rp.table1_rows(["x"])[0]
    assert (market.row.mAP, rp.row_label(market)) == (91.7, "Market 256x128 stride 12")
    assert (setting.mAP, dataset) == (None, "x")  # a dataset the paper does not have
    assert [r.row.name for r in rp.select_rows(runs, ["L = 2", "l_5"])] == ["L = 2", "L = 5"]
    with pytest.raises(rp.UsageError, match="no row 'L = 9'"):
        rp.select_rows(runs, ["L = 9"])


def test_stats_use_the_paper_scope(monkeypatch, root):
    import tools.model_stats as ms

    seen = []

    def fake_measure(cfg, num_cams=15):
        seen.append((cfg.MODEL.PRETRAIN_CHOICE, cfg.MODEL.FUSION.HTM_ORDER, num_cams))
        return {"params_m": 150.0, "flops_g": 28.0, "htm_params_m": 21.3, "htm_flops_g": 2.9}

    monkeypatch.setattr(ms, "measure", fake_measure)
    rows = rp.collect(rp.list_runs("3", root)[:1] + rp.list_runs("5", root)[:1], rp.ResultIndex(root=root))
    assert (rows[0]["params"], rows[1]["params"]) == (21.3, 150.0)
    assert seen[0] == ("none", "seu_mfu", 15)  # no ImageNet weights are read to count


def test_figure_plot(root, tmp_path):
    write_results(root, "output/MSMT17/fig6/d_768", 0.69, 0.86)
    write_results(root, "output/MSMT17/fig6/d_1152", 0.70, 0.87)
    runs = rp.list_runs("fig6", root)
    rows = rp.collect(runs, rp.ResultIndex(root=root), stats=False)
    path = rp.plot_figure("fig6", runs, rows, str(tmp_path / "fig6.png"))
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_cli_dry_run(capsys):
    rp.main(["--table", "fig5", "--dry-run"])
    out = capsys.readouterr().out
    assert out.count("configs/MSMT17/fig5/l_") >= 6
    assert "| L = 2 | 0 | 69.5 |" in out


def _files(folder):
    return {os.path.join(d, n): os.stat(os.path.join(d, n)).st_mtime_ns
            for d, _, names in os.walk(folder) for n in names}


def test_three_seeds_end_to_end_on_the_tiny_config(tmp_path, capsys, caplog):
    """Fig. 5's L=1 and L=2 rows on the tiny synthetic config, 3 seeds x 1 epoch (six trainings, ~1 min on 2
    cores); the table, CSV and plot against the per-seed results.json files; a second invocation trains
    nothing."""
    out, data = tmp_path / "out", tmp_path / "data"
    argv = ["--table", "fig5", "--rows", "L = 1", "L = 2", "--seeds", "3", "--no-stats", "--base-config", TINY,
            "DATASETS.ROOT_DIR", str(data), "OUTPUT_DIR", str(out), "SOLVER.MAX_EPOCHS", "1"]
    caplog.set_level(logging.INFO, logger=rp.__name__)
    rows = rp.main(argv)
    first = capsys.readouterr().out
    assert first.count("running: ") == 6
    seeds = [1111, 1112, 1113]  # tiny.yml's seed is the default, 1111
    report = out / "reproduce"
    with open(report / "fig5.csv", newline="") as f:
        records = {r["row"]: r for r in csv.DictReader(f)}
    with open(report / "fig5.md") as f:
        markdown = f.read()
    assert markdown in first
    assert set(records) == {"L = 1", "L = 2"} and [r["row"] for r in rows] == ["L = 1", "L = 2"]
    for name, folder in (("L = 1", "l_1"), ("L = 2", "l_2")):
        values = {}
        for seed in seeds:
            with open(out / "fig5" / folder / f"seed_{seed}" / "results.json") as f:
                results = json.load(f)
            values[seed] = (100 * results["latest"]["mAP"], 100 * results["latest"]["rank1"])
            with open(out / "fig5" / folder / f"seed_{seed}" / "config.yaml") as f:
                assert f"SEED: {seed}" in f.read()
        record = records[name]
        assert record["n"] == "3" and record["seeds"] == "1111;1112;1113"
        assert record["paper_mAP"] == "" and record["mAP_verdict"] == "no paper value"  # synthetic: no paper
        for i, metric in enumerate(("mAP", "rank1")):
            per_seed = [values[s][i] for s in seeds]
            mean, std = float(np.mean(per_seed)), float(np.std(per_seed, ddof=1))
            assert float(record[f"{metric}_mean"]) == pytest.approx(mean)
            assert float(record[f"{metric}_std"]) == pytest.approx(std)
            assert record[f"{metric}_per_seed"] == ";".join(f"{s}:{v!r}" for s, v in zip(seeds, per_seed))
            assert f" {mean:.1f} ± {std:.1f} | no paper value |" in markdown.split(f"| {name} | 3 |")[1].split("\n")[0]
    with open(report / "fig5.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    # the second invocation reuses every run: nothing trained, no file of a run touched
    runs_before = _files(out / "fig5")
    caplog.clear()
    again = rp.main(argv)
    second = capsys.readouterr().out
    assert "running: " not in second
    assert sum("reused" in m for m in caplog.messages) == 6
    assert _files(out / "fig5") == runs_before
    assert [(r["mAP"], r["mAP_std"], r["rank1"]) for r in again] == [(r["mAP"], r["mAP_std"], r["rank1"]) for r in rows]
