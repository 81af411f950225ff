"""tools/reproduce.py: which runs a table has, which are skipped, and the table/plot assembled from
fixture results.json files (no training, no model builds)."""
import json
import os
import sys

import pytest

from tools import reproduce as rp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
    assert "| SEU only | 68.7 | 65.1 | 86.1 | 85.2 | 7.1 |  | 2.5 |  | configs/MSMT17/table3/seu_only.yml |" in text
    assert "| MFU only | 68.9 |  | 86.0 |  |" in text


def test_table1_rows_name_their_dataset(root):
    write_results(root, "output/DukeMTMC/table1/384x128_stride_12", 0.83, 0.91)
    rows = rp.collect(rp.list_runs("1", root), rp.ResultIndex(root=root), stats=False)
    duke = [r for r in rows if r["row"] == "DukeMTMC 384x128 stride 12"][0]
    assert (duke["paper_mAP"], duke["mAP"]) == (83.7, pytest.approx(83.0))


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
    assert "| L = 2 | 69.5 |" in out
