"""bench/federated.py's bookkeeping: the grid it runs, --merge, and the target summary on means over seeds.

The rows themselves come from real federated runs (tests/rec/federated runs Flower on Ray); here the
question is whether the benchmark reports them right, including the committed results file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.federated import COLUMNS, jobs, merged, parse_args, row_key, summary

ROOT = Path(__file__).resolve().parents[2]


def _row(dataset: str, setting: str, seed: int, ndcg: float, method: str = "lora", eps: float | None = None, k=256) -> dict:  # noqa: ANN001
    return {"dataset": dataset, "setting": setting, "method": method, "optimizer": "sgd" if setting == "fedavg-dp" else "adamw",
            "seed": seed, "k": k, "target_epsilon": eps, "epsilon": eps, "ndcg@10": ndcg, "rounds": 100,
            "clipping_norm": 0.5 if setting == "fedavg-dp" else None}


def test_the_grid_crosses_dp_methods_with_epsilons_and_centralized_with_its_methods():
    a = parse_args(["--datasets", "ml-100k", "--seeds", "0", "--ks", "256", "all", "--dp-methods", "lora", "item-terms",
                    "--central-methods", "lora"])
    grid = jobs(a)
    assert len(grid) == 2 * (1 + 1 + 2 * 3 + 1)  # per K: centralized, fedavg, 2 methods x 3 epsilons, local-dp
    assert ("ml-100k", "fedavg-dp", "item-terms", 0, None, 1.0) in grid and ("ml-100k", "local-dp", "lora", 0, 256, 8.0) in grid
    assert {m for _, s, m, *_ in grid if s == "centralized"} == {"lora"}


def test_merge_replaces_only_what_is_re_measured(tmp_path: Path):
    path = tmp_path / "federated.json"
    old = [_row("office", "centralized", 0, 0.03), _row("office", "fedavg", 0, 0.02), _row("office", "fedavg-dp", 0, 0.01, eps=8.0)]
    path.write_text(json.dumps({"rows": old}))
    new = [_row("office", "fedavg", 0, 0.025), _row("office", "fedavg", 1, 0.027)]
    out = merged(path, new)
    assert len(out) == 4 and len({row_key(r) for r in out}) == 4
    assert [r["ndcg@10"] for r in out if r["setting"] == "fedavg" and r["seed"] == 0] == [0.025]
    assert merged(tmp_path / "absent.json", new) == new


def test_summary_divides_seed_means_by_centralized_lora_and_checks_the_targets():
    rows = [_row("ml-100k", "centralized", s, 0.04) for s in (0, 1)] + [_row("ml-100k", "centralized", 0, 0.05, method="item-terms")]
    rows += [_row("ml-100k", "fedavg", 0, 0.036), _row("ml-100k", "fedavg", 1, 0.040)]  # mean 0.038 / 0.04 = 0.95
    rows += [_row("ml-100k", "fedavg-dp", 0, 0.032, "item-terms", 8.0), _row("ml-100k", "fedavg-dp", 1, 0.036, "item-terms", 8.0)]
    text = summary(rows)
    assert "K=256 ml-100k fedavg lora/adamw, 100 rounds: 0.950x over 2 seed(s) (target >= 0.95: **met**)" in text
    assert "fedavg-dp item-terms/sgd, 100 rounds, C=0.5 eps=8: 0.850x over 2 seed(s) (target >= 0.9: **not met**)" in text
    assert "centralized item-terms/adamw: 1.250x over 1 seed(s)" in text  # a reference row, no target


def test_the_committed_rows_carry_the_issue_columns_and_their_centralized_reference():
    path = ROOT / "bench" / "results" / "federated.json"
    if not path.exists():
        pytest.skip("no committed federated results")
    data = json.loads(path.read_text())
    assert set(data) >= {"benchmark", "protocol", "machine", "rows"}
    need = {"dataset", "setting", "seed", "k", "epsilon", "delta", "rounds", "clients_per_round", "ndcg@10", "hr@10",
            "bytes_up_per_round", "wall_s"}
    assert need <= set(COLUMNS)
    rows = [r for r in data["rows"] if not str(r.get("note", "")).startswith(("failed", "skipped"))]
    assert len({row_key(r) for r in rows}) == len(rows), "two rows measure the same thing"
    for r in rows:
        assert need - {"epsilon", "delta", "clients_per_round", "bytes_up_per_round"} <= set(r), r
        assert any(c["setting"] == "centralized" and c.get("method", "lora") == "lora" and (c["dataset"], c["seed"], c["k"])
                   == (r["dataset"], r["seed"], r["k"]) for c in data["rows"]), f"no centralized LoRA row for {row_key(r)}"
        if r["setting"] == "fedavg-dp":
            assert abs(r["epsilon"] - r["target_epsilon"]) / r["target_epsilon"] < 0.01  # the noise was solved for it
            assert r["bytes_up_per_round"] <= r["clients_per_round"] * r["adapter_bytes"]  # upload <= the adapter per client


def test_plot_draws_a_panel_per_k_and_dataset(tmp_path: Path):
    from bench.federated import _curve_groups, plot

    rows = [dict(_row("ml-100k", "centralized", 0, 0.04), curve={"1": 0.03, "2": 0.04}),
            dict(_row("ml-100k", "fedavg-dp", 0, 0.03, "item-terms", 8.0), curve={"0": 0.01, "100": 0.02}),
            dict(_row("ml-100k", "fedavg-dp", 0, 0.03, "item-terms", 8.0), rounds=200, curve={"0": 0.01, "200": 0.03}),
            dict(_row("office", "fedavg", 0, 0.03, k="all"), curve={"0": 0.01, "100": 0.02})]
    groups = _curve_groups(rows, "ml-100k", "256")
    assert set(groups) == {("centralized", "lora", None, None), ("fedavg-dp", "item-terms", 8.0, 100), ("fedavg-dp", "item-terms", 8.0, 200)}
    assert _curve_groups(rows, "ml-100k", "all") == {}
    plot(rows, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 10_000


def test_a_failed_row_has_the_key_of_the_row_that_replaces_it():
    """A failed job's row carries the identity a run of the same job writes, so --merge replaces it."""
    from bench.federated import row_identity

    a = parse_args(["--dp-rounds", "200", "--clipping-norm", "1.0"])
    dp = row_identity(a, "office", "fedavg-dp", "item-terms", 1, None, 8.0)
    assert (dp["optimizer"], dp["rounds"], dp["clipping_norm"], dp["k"]) == ("sgd", 200, 1.0, "all")
    assert row_key({**dp, "note": "failed: x"}) == row_key({**dp, "ndcg@10": 0.03})
    fedavg = row_identity(a, "office", "fedavg", "lora", 1, 256, None)
    assert (fedavg["optimizer"], fedavg["rounds"], fedavg["clipping_norm"]) == ("adamw", 100, None)
    assert row_key(row_identity(a, "office", "centralized", "lora", 1, 256, None))[-2:] == (None, None)
