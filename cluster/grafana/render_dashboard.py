"""Render ``tenant-dashboard.json``: Grafana's per-tenant view of the recommender's Ray metrics.

Ray ships dashboards for the cluster, Serve and Train; this one adds what a platform team asks
per tenant: traffic, errors, latency, impressions and click-through, the serving version and
policy, and re-adaptation rounds by gate decision. Every query uses only metric names defined in
``serve_apps.metrics`` and ``rec.feedback`` (a test checks it). Re-render after changing a panel:

    python -m cluster.grafana.render_dashboard
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["DASHBOARD_PATH", "dashboard", "main"]

DASHBOARD_PATH = Path(__file__).with_name("tenant-dashboard.json")
T = '{tenant=~"$tenant"}'

# (title, unit, [(legend, PromQL)])
PANELS = [
    ("Requests per second", "reqps", [
        ("{{tenant}} {{route}}", f"sum by (tenant, route) (rate(ray_fewshot_requests_total{T}[1m]))")]),
    ("Errors per second (4xx, 5xx)", "reqps", [
        ("{{tenant}} {{status}}",
         'sum by (tenant, status) (rate(ray_fewshot_requests_total{tenant=~"$tenant",status=~"[45].."}[1m]))')]),
    ("Latency p50 / p99 (ms)", "ms", [
        ("p50 {{tenant}}", f"histogram_quantile(0.5, sum by (le, tenant) (rate(ray_fewshot_request_latency_ms_bucket{T}[5m])))"),
        ("p99 {{tenant}}", f"histogram_quantile(0.99, sum by (le, tenant) (rate(ray_fewshot_request_latency_ms_bucket{T}[5m])))")]),
    ("Impressions and clicks per second", "short", [
        ("impressions {{tenant}}", f"sum by (tenant) (rate(ray_fewshot_impressions_total{T}[1m]))"),
        ("clicks {{tenant}}", 'sum by (tenant) (rate(ray_fewshot_events_total{tenant=~"$tenant",type="click"}[1m]))')]),
    ("Click-through (15 min)", "percentunit", [
        ("{{tenant}}", 'sum by (tenant) (rate(ray_fewshot_events_total{tenant=~"$tenant",type="click"}[15m])) / '
                       f"sum by (tenant) (rate(ray_fewshot_impressions_total{T}[15m]))")]),
    ("Serving adapter version", "none", [
        ("{{tenant}}", f"max by (tenant) (ray_fewshot_serving_version{T})")]),
    ("Exploration policy", "none", [
        ("{{tenant}} {{policy}}", f"max by (tenant, policy) (ray_fewshot_policy{T}) > 0")]),
    ("Re-adaptation rounds by gate decision (1 h)", "short", [
        ("{{tenant}} {{decision}}", f"sum by (tenant, decision) (increase(ray_fewshot_readapt_rounds_total{T}[1h]))")]),
]


def _panel(i: int, title: str, unit: str, targets: list[tuple[str, str]]) -> dict:
    return {
        "id": i + 1,
        "type": "timeseries",
        "title": title,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [{"refId": chr(65 + j), "expr": expr, "legendFormat": legend} for j, (legend, expr) in enumerate(targets)],
    }


def dashboard() -> dict:
    """The dashboard as Grafana's JSON model (schemaVersion 39)."""
    return {
        "uid": "fewshot-rec-tenants",
        "title": "fewshot-rec: tenants",
        "tags": ["fewshot-rec", "ray", "serve"],
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": [
            {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"},
            {"name": "tenant", "type": "query", "label": "tenant", "multi": True, "includeAll": True,
             "datasource": {"type": "prometheus", "uid": "${datasource}"},
             "query": {"query": "label_values(ray_fewshot_requests_total, tenant)", "refId": "tenants"},
             "refresh": 2, "current": {"text": "All", "value": "$__all"}},
        ]},
        "panels": [_panel(i, *p) for i, p in enumerate(PANELS)],
    }


def main() -> None:
    DASHBOARD_PATH.write_text(json.dumps(dashboard(), indent=2) + "\n")
    print(DASHBOARD_PATH)


if __name__ == "__main__":
    main()
