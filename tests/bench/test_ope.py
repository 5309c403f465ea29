"""bench/ope.py --quick on real ML-100K: the estimators track greedy's replayed value."""

from __future__ import annotations

import json

import pytest

from bench import ope


@pytest.mark.realdata
def test_quick_ope_benchmark_writes_rows_that_bracket_the_replayed_value(datasets_dir, tmp_path, text_cache):
    assert ope.main(["--quick", "--out", str(tmp_path), "--text-cache", text_cache]) == 0
    payload = json.loads((tmp_path / "ope.json").read_text())
    rows = payload["rows"]
    assert {r["estimator"] for r in rows} == {"ips", "snips", "dr"} and {r["logged_events"] for r in rows} == {500, 2000}
    for r in rows:
        assert set(ope.COLUMNS) <= set(r)
        if r["logged_events"] == 2000:
            assert r["ci_low"] <= r["replay_value"] <= r["ci_high"], r
    assert (tmp_path / "ope.png").stat().st_size > 0 and (tmp_path / "ope.md").read_text().startswith("# ope")
