"""`rec ope`: off-policy estimates over a tenant's real event log (written through EventLog)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rec.cli import main
from rec.feedback.ope_report import NoLoggedSlates, ope_report, read_tenant_log
from rec.serving.events import EventLog
from rec.serving.policies import PolicyConfig, choose
from rec.serving.store import ArtifactRoot

REPO = Path(__file__).resolve().parents[3]
CANDS, K, TENANT = 20, 5, "shop"
REL_P = 1.0 / np.arange(1, CANDS + 1) / (1.0 / np.arange(1, CANDS + 1)).sum()  # P(user wants rank-r candidate)


def write_log(root: Path, policy: str, n: int, seed: int, epsilon: float = 0.3) -> None:
    """Serve ``n`` answers with the service's own policy code and log them as the service does:
    one impression record per answer (batched, as the group-commit writer does), then the click a
    user posts (quoting the answer's ``request_id``) when the item they wanted was shown."""
    rng = np.random.default_rng(seed)
    log = EventLog(ArtifactRoot(root).events_dir, clock=lambda: 1.8e9)
    items = np.array([f"item-{j}" for j in range(CANDS)])
    cfg = PolicyConfig(policy, epsilon=epsilon)
    impressions, clicks = [], []
    for i in range(n):
        slate = choose(np.arange(CANDS), np.linspace(1, 0, CANDS), None, K, cfg, None, rng)
        rid = f"{policy}-{seed}-{i}"
        impressions.append({"kind": "impression", "request_id": rid, "items": items[slate.rows].tolist(),
                            "positions": list(range(1, K + 1)), "propensities": slate.propensities.tolist(),
                            "z": slate.z.tolist(), "model_rank": (slate.rows + 1).tolist(), "policy": slate.policy,
                            "model_version": "test", "adapter_version": "v1", "timestamp": 1.8e9})
        wanted = rng.choice(CANDS, p=REL_P)
        if wanted in slate.rows:
            clicks.append({"kind": "event", "type": "click", "item_id": items[wanted], "request_id": rid, "timestamp": 1.8e9})
    log.append_unkeyed(TENANT, impressions)
    for j, click in enumerate(clicks):
        log.append(TENANT, [click], idempotency_key=f"click-{policy}-{seed}-{j}")


def test_on_policy_target_reproduces_the_logged_value_exactly(tmp_path):
    write_log(tmp_path, "greedy", 800, seed=0)
    report = ope_report(read_tenant_log(tmp_path, TENANT), TENANT, "greedy")
    (logged,) = report.logging
    assert logged.policy == "greedy" and logged.slates == report.logged_slates == 800
    assert 0 < logged.ctr <= logged.clicks_per_slate
    for est in report.estimates:  # every weight is 1 and DR's residual cancels its model: all equal the mean
        assert est.value == pytest.approx(logged.clicks_per_slate, abs=1e-12), est.estimator
        assert est.ci_low < est.value < est.ci_high


def test_greedy_estimated_from_an_epsilon_log_matches_the_truth(tmp_path):
    write_log(tmp_path, "epsilon", 5000, seed=1)
    report = ope_report(read_tenant_log(tmp_path, TENANT), TENANT, "greedy", candidates=CANDS)
    truth = REL_P[:K].sum()  # greedy shows the top-K candidates; one wanted item per user
    assert report.logging[0].policy == "epsilon" and report.logging[0].clicks_per_slate < truth
    by_name = {e.estimator: e for e in report.estimates}
    assert set(by_name) == {"ips", "snips", "dr"}
    for est in by_name.values():
        assert abs(est.value - truth) / truth < 0.06, (est.estimator, est.value, truth)
        assert est.ci_low < truth < est.ci_high
    assert by_name["dr"].ci_high - by_name["dr"].ci_low < by_name["ips"].ci_high - by_name["ips"].ci_low
    # the epsilon target between greedy and uniform: (1 - e) greedy + e * K / N
    eps = ope_report(read_tenant_log(tmp_path, TENANT), TENANT, "epsilon:0.5", ("snips",), candidates=CANDS)
    assert eps.estimates[0].value == pytest.approx(0.5 * truth + 0.5 * K / CANDS, rel=0.06)


def test_cli_table_and_json(tmp_path, capsys):
    write_log(tmp_path, "epsilon", 600, seed=2)
    assert main(["ope", "--root", str(tmp_path), "--tenant", TENANT, "--target", "greedy", "--candidates", str(CANDS)]) == 0
    out = capsys.readouterr().out
    for word in ("estimator", "ips", "snips", "dr", "logged by epsilon: 600 slates", "CTR"):
        assert word in out
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0"}
    r = subprocess.run([sys.executable, "-m", "rec.cli", "ope", "--root", str(tmp_path), "--tenant", TENANT,
                        "--target", "epsilon:0.1", "--estimators", "snips", "--alpha", "0.1", "--json"],
                       capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    want = ope_report(read_tenant_log(tmp_path, TENANT), TENANT, "epsilon:0.1", ("snips",), alpha=0.1)
    assert data["logged_slates"] == 600 and data["alpha"] == 0.1
    assert [e["estimator"] for e in data["estimates"]] == ["snips"]
    assert data["estimates"][0]["value"] == pytest.approx(want.estimates[0].value)


def _torn_only(root: Path) -> list[str]:
    folder = ArtifactRoot(root).events_dir(TENANT)
    folder.mkdir(parents=True)
    (folder / "2027-01-15.jsonl").write_text('{"kind": "impr')  # a crash left only a torn line
    return ["--tenant", TENANT, "--target", "greedy"]


def _clicks_only(root: Path) -> list[str]:
    EventLog(ArtifactRoot(root).events_dir).append(TENANT, [{"kind": "event", "type": "click", "item_id": "a"}])
    return ["--tenant", TENANT, "--target", "greedy"]


@pytest.mark.parametrize("setup, expected", [
    (lambda root: ["--tenant", "nobody", "--target", "greedy"], "neither published nor logged"),
    (lambda root: ["--tenant", "../etc", "--target", "greedy"], "tenant id"),
    (_torn_only, "empty event log"),
    (_clicks_only, "no impression records with propensities"),
    (lambda root: (write_log(root, "greedy", 5, 0), ["--tenant", TENANT, "--target", "thompson"])[1], "greedy, epsilon:<0..1>"),
    (lambda root: (write_log(root, "greedy", 5, 0), ["--tenant", TENANT, "--target", "greedy", "--alpha", "2"])[1], "alpha"),
])
def test_cli_bad_input_is_one_line_exit_2(tmp_path, capsys, setup, expected):
    args = setup(tmp_path)
    assert main(["ope", "--root", str(tmp_path), *args]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("rec ope: error:") and expected in err[0], err


def test_unknown_tenant_error_names_the_known_ones(tmp_path):
    write_log(tmp_path, "greedy", 3, 0)
    with pytest.raises(NoLoggedSlates, match="shop"):
        read_tenant_log(tmp_path, "other")
