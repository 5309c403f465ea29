"""The per-tenant quota in Serve's HTTP proxy (serve_apps.proxy_quota), installed by Ray Serve itself
from the node environment, on a private head running the shipped config (bench/chaos_serve.py)."""

from __future__ import annotations

import shutil

import pytest
import requests

from serve_apps.args import Quota
from serve_apps.proxy_quota import PROXY_QUOTA_VAR, middlewares, proxy_quota_env


def test_the_node_environment_says_what_the_proxy_installs(monkeypatch):
    env = proxy_quota_env(Quota(requests_per_s=3, burst=4))
    assert env["RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"] == "serve_apps.proxy_quota.middlewares"
    monkeypatch.setenv(PROXY_QUOTA_VAR, env[PROXY_QUOTA_VAR])
    (mw,) = middlewares()
    assert mw.kwargs == {"requests_per_s": 3.0, "burst": 4}
    monkeypatch.delenv(PROXY_QUOTA_VAR)
    assert middlewares() == []  # the callback set without a quota: no middleware
    for bad in ('{"requests_per_s": -1}', "fast", '{"burst": 3}'):
        monkeypatch.setenv(PROXY_QUOTA_VAR, bad)
        with pytest.raises(ValueError, match=PROXY_QUOTA_VAR):
            middlewares()
    with pytest.raises(ValueError, match="requests_per_s"):
        proxy_quota_env(Quota())


@pytest.mark.slow
def test_serve_proxy_answers_the_flood_and_the_replica_has_no_quota(serving_world, tmp_path, monkeypatch):
    """No quota in the app's args: every 429 here is the proxy's, so Serve installed the middleware."""
    from bench.chaos_serve import config_session

    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    root = tmp_path / "root"
    shutil.copytree(serving_world.root, root)
    body = {"history": [], "k": 2}
    with config_session(root, replicas=1, env=proxy_quota_env(Quota(requests_per_s=1, burst=5))) as s:
        codes = [requests.post(f"{s.url}/v1/tenants/podcasts/recommendations", json=body, timeout=60).status_code
                 for _ in range(20)]
        assert codes[:5] == [200] * 5 and codes.count(429) >= 10, codes
        r = requests.post(f"{s.url}/v1/tenants/podcasts/recommendations", json=body, timeout=60)
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1 and "quota" in r.json()["detail"]
        assert requests.post(f"{s.url}/v1/tenants/books/recommendations", json=body, timeout=60).status_code == 200
