"""The event log on a full disk (a real size-limited tmpfs the test mounts over the artifact root's
events/ folder) and per-tenant quotas, through the real FastAPI ingress in process.

A full disk: every request either gets 201 and its events are in the log, or gets 503 with
Retry-After and nothing of it is acknowledged; when space returns the service writes again and
every acknowledged event reads back.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from rec.serving.events import EventLog
from rec.serving.store import ArtifactRoot
from serve_apps.quota import TenantQuota
from tests.fixtures.tmpfs import size_limited_tmpfs


@pytest.fixture
def small_events_fs(serving_world, tmp_path):
    """A copy of the artifact root whose events/ is a 96 KiB tmpfs (root only; skipped otherwise)."""
    root = tmp_path / "root"
    shutil.copytree(serving_world.root, root)
    events = root / "events"
    events.mkdir(exist_ok=True)
    with size_limited_tmpfs(events, "96k"):
        yield root


def _fill(path: Path) -> None:
    """Take every free block of the filesystem holding ``path``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while os.write(fd, b"\0" * 1024):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)


def test_a_full_events_disk_is_503_acknowledges_nothing_lost_and_recovers(small_events_fs):
    from serve_apps.api import serve_in_process

    root = small_events_fs
    log = EventLog(ArtifactRoot(root).events_dir)
    with serve_in_process({"artifact_root": str(root)}) as (app, _), TestClient(app) as c:
        ev = {"events": [{"type": "click", "item_id": f"b-{i:04d}", "user_id": "u" * 100} for i in range(20)]}
        acked, refused = 0, []
        for _ in range(200):  # ~4.5 KB per request: the 96 KiB disk fills well before
            r = c.post("/v1/tenants/books/events", json=ev)
            assert r.status_code in (201, 503), r.text
            if r.status_code == 201:
                acked += r.json()["accepted"]
            else:
                refused.append(r)
                if len(refused) >= 3:
                    break
        assert acked > 0 and refused, (acked, len(refused))
        assert all(r.headers["Retry-After"] and "nothing was recorded" in r.json()["detail"] for r in refused)
        assert len(log.read("books")) == acked  # what was acknowledged is on disk, and nothing else reads back

        filler = root / "events" / "filler"
        _fill(filler)  # a disk full because of someone else: still 503, still nothing half-acknowledged
        assert c.post("/v1/tenants/books/events", json=ev).status_code == 503
        filler.unlink()  # space returns
        r = c.post("/v1/tenants/books/events", json={"events": [{"type": "purchase", "item_id": "b-9999"}]})
        assert r.status_code == 201, r.text
        back = log.read("books")
        assert len(back) == acked + 1 and back[-1]["item_id"] == "b-9999"  # the first write after recovery reads back
        assert c.post("/v1/tenants/books/recommendations", json={"history": [], "k": 2}).status_code == 200


def test_token_bucket_refills_at_its_rate():
    now = [0.0]
    q = TenantQuota(requests_per_s=2, burst=3, clock=lambda: now[0])
    assert [q.take("a") for _ in range(3)] == [None, None, None]
    assert q.take("a") == 1  # empty: a token is back in 0.5 s, said as whole seconds
    assert q.take("b") is None  # another tenant has its own bucket
    now[0] += 0.5
    assert q.take("a") is None and q.take("a") == 1
    now[0] += 10
    assert [q.take("a") for _ in range(4)] == [None, None, None, 1]  # refills to the burst, no more


def test_a_flooding_tenant_gets_429_and_the_others_are_served(serving_world, tmp_path):
    from serve_apps.api import serve_in_process

    root = tmp_path / "root"
    shutil.copytree(serving_world.root, root)
    with serve_in_process({"artifact_root": str(root), "quota": {"requests_per_s": 5, "burst": 10}}) as (app, _), \
            TestClient(app) as c:  # one event loop for the block: @serve.batch's queue lives on it
        body = {"history": [], "k": 2}
        flood = [c.post("/v1/tenants/podcasts/recommendations", json=body) for _ in range(40)]
        codes = [r.status_code for r in flood]
        assert codes[:10] == [200] * 10 and codes.count(429) >= 25, codes
        limited = next(r for r in flood if r.status_code == 429)
        assert int(limited.headers["Retry-After"]) >= 1 and "quota" in limited.json()["detail"]
        assert c.post("/v1/tenants/books/recommendations", json=body).status_code == 200
        assert c.get("/v1/tenants/courses").status_code == 200


def test_the_proxy_quota_answers_the_flood_before_the_app_sees_it(serving_world, tmp_path):
    """serve_apps.proxy_quota in front of the real ingress app, as Serve's proxy installs it: the
    flood's 429s (the app's own body and Retry-After) never reach the app; other tenants, other
    paths and invalid ids (the app's 422) pass."""
    from serve_apps.api import serve_in_process
    from serve_apps.proxy_quota import ProxyQuota

    root = tmp_path / "root"
    shutil.copytree(serving_world.root, root)
    with serve_in_process({"artifact_root": str(root)}) as (app, _):
        reached: list[str] = []

        async def seen(scope, receive, send):  # records what got past the proxy quota, then the real app
            if scope["type"] == "http":
                reached.append(scope["path"])
            await app(scope, receive, send)

        with TestClient(ProxyQuota(seen, requests_per_s=5, burst=10)) as c:
            body = {"history": [], "k": 2}
            flood = [c.post("/v1/tenants/podcasts/recommendations", json=body) for _ in range(40)]
            codes = [r.status_code for r in flood]
            assert codes[:10] == [200] * 10 and codes.count(429) >= 25, codes
            limited = next(r for r in flood if r.status_code == 429)
            assert int(limited.headers["Retry-After"]) >= 1 and limited.headers["content-type"] == "application/json"
            assert "quota" in limited.json()["detail"] and "podcasts" in limited.json()["detail"]
            assert reached.count("/v1/tenants/podcasts/recommendations") == codes.count(200)
            assert c.post("/v1/tenants/books/recommendations", json=body).status_code == 200
            assert c.get("/v1/tenants/courses").status_code == 200
            assert all(c.get("/readyz").status_code == 200 for _ in range(15))  # not a tenant path: never limited
            bad = [c.post("/v1/tenants/Not-Valid/recommendations", json=body).status_code for _ in range(15)]
            assert bad == [422] * 15  # the app's validation answers invalid ids, the bucket never holds them
