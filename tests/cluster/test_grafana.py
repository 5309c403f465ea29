"""The Grafana tenant dashboard is rendered from its source and charts only metrics the service defines."""

from __future__ import annotations

import json
import re

from cluster.grafana.render_dashboard import DASHBOARD_PATH, dashboard
from rec.feedback.rounds import METRIC_NAMES as READAPT_METRICS
from serve_apps.metrics import METRIC_NAMES


def test_the_dashboard_is_current_and_queries_only_defined_metrics():
    assert json.loads(DASHBOARD_PATH.read_text()) == dashboard(), "re-render: python -m cluster.grafana.render_dashboard"
    known = {f"ray_{n}" for n in (*METRIC_NAMES, *READAPT_METRICS)}
    exprs = [t["expr"] for p in dashboard()["panels"] for t in p["targets"]]
    used = {re.sub(r"_(bucket|sum|count)$", "", m) for e in exprs for m in re.findall(r"ray_fewshot_[a-z_]+", e)}
    assert used and used <= known, used - known
    assert {p["title"] for p in dashboard()["panels"]} >= {"Click-through (15 min)", "Latency p50 / p99 (ms)"}
