"""tools/model_stats.py: the one-model JSON line and the paper-table printout."""
import json

import pytest

from model import build_model
from model.complexity import count_params
from tests.helpers import TINY, tiny_cfg
from tools import model_stats


def test_last_line_is_json_with_params_and_flops(capsys):
    model_stats.main(TINY)
    last = capsys.readouterr().out.strip().splitlines()[-1]
    stats = json.loads(last)
    expected = count_params(build_model(tiny_cfg(), model_stats.NUM_CLASSES, model_stats.NUM_CAMS))[0] / 1e6
    assert stats["params_m"] == pytest.approx(expected, abs=1e-4)
    assert 0 < stats["flops_g"] < stats["flops_g_total"]
    assert stats["htm_params_m"] > 0


def test_table_rows_use_the_htm_scope_for_tables_iii_and_iv(capsys, monkeypatch):
    calls = []

    def fake_measure(cfg, num_cams=15):
        calls.append(cfg.MODEL.FUSION.HTM_ORDER)
        return {"params_m": 100.0, "flops_g": 20.0, "htm_params_m": 21.0, "htm_flops_g": 2.8}

    monkeypatch.setattr(model_stats, "measure", fake_measure)
    model_stats.main(["--table", "3"])
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["rows"]
    assert calls == ["seu_mfu", "seu", "mfu_seu", "mfu"]
    assert [r["params_m"] for r in rows] == [21.0] * 4 and rows[3]["paper_params_m"] == 14.2


def test_bad_override_is_one_line_error():
    with pytest.raises(SystemExit, match="MODEL.FUSION.NOPE"):
        model_stats.main(["MODEL.FUSION.NOPE", "1"])
