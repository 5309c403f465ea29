"""Property tests (hypothesis): no tenant id or item id given to the HTTP API reaches a file outside
that tenant's own folders, a path built from any string stays inside them or is refused, and a key
of tenant A never opens tenant B.

Files opened while a request is served are watched with a Python audit hook (``open`` events).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from rec.serving.auth import ApiKeyChecker, create_api_key
from rec.serving.store import ArtifactRoot

_OPENED: list[str] | None = None


def _audit(event: str, args: tuple) -> None:
    if _OPENED is not None and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        _OPENED.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)  # hooks cannot be removed; it records only while _OPENED is a list

tenant_like = st.one_of(st.text(max_size=80), st.sampled_from(["..", ".", "../books", "books/../courses", "a\n", "%2e%2e",
                                                                "books\x00", "/etc/passwd", "podcasts/"]))


@given(tenant_like)
@settings(max_examples=300, deadline=None)
def test_paths_from_any_tenant_id_stay_in_its_folders_or_are_refused(s):
    store = ArtifactRoot("/srv/root")
    try:
        paths = [store.tenant_dir(s), store.keys_path(s), store.pointer_path(s), store.version_dir(s, 3), store.events_dir(s)]
    except ValueError:
        return
    for p in paths:
        rel = Path(os.path.normpath(p)).relative_to("/srv/root")
        assert rel.parts[:2] in (("tenants", s), ("events", s)), p


@pytest.fixture(scope="module")
def served(serving_world, tmp_path_factory):
    from serve_apps.api import serve_in_process

    root = tmp_path_factory.mktemp("iso") / "root"
    shutil.copytree(serving_world.root, root)
    # Redirects are not followed: a 307 (e.g. a trailing slash) is an answer that reads nothing.
    with serve_in_process({"artifact_root": str(root), "poll_interval_s": 0}) as (app, _), \
            TestClient(app, follow_redirects=False) as c:
        yield root.resolve(), c


def _allowed(root: Path, tenant: str, path: str) -> bool:
    p = Path(os.path.normpath(os.path.join(os.getcwd(), path)))
    if not p.is_relative_to(root):
        return True  # not the artifact root (Python's own imports, /proc ...): not a tenant's file
    rel = p.relative_to(root).parts
    return rel[:1] == ("model",) or rel[:2] in (("tenants", tenant), ("events", tenant))


@given(tenant=tenant_like, item=st.text(min_size=1, max_size=40), real=st.sampled_from(["podcasts", "books", "courses", None]))
@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_opens_another_tenants_file(served, tenant, item, real):
    global _OPENED
    root, c = served
    tenant = real or tenant
    _OPENED = []
    try:
        url = f"/v1/tenants/{quote(tenant, safe='')}"
        answers = [c.post(url + "/recommendations", json={"history": [item], "candidates": [item], "k": 2}),
                   c.post(url + "/events", json={"events": [{"type": "click", "item_id": item}]}), c.get(url)]
        opened = list(_OPENED)
    finally:
        _OPENED = None
    assert all(r.status_code < 500 for r in answers), [(r.status_code, r.text[:200]) for r in answers]
    bad = [p for p in opened if not _allowed(root, tenant, p)]
    assert not bad, (tenant, bad)


@given(a=st.from_regex(r"[a-z0-9][a-z0-9_-]{0,20}", fullmatch=True), b=st.from_regex(r"[a-z0-9][a-z0-9_-]{0,20}", fullmatch=True))
@settings(max_examples=15, deadline=None)  # scrypt: ~50 ms per check by design
def test_a_key_of_one_tenant_never_opens_another(tmp_path_factory, a, b):
    if a == b:
        return
    store = ArtifactRoot(tmp_path_factory.mktemp("keys"))
    key_a, key_b = create_api_key(store.keys_path(a)), create_api_key(store.keys_path(b))
    checker = ApiKeyChecker(store.keys_path)
    assert checker.check(a, key_a) is None and checker.check(b, key_b) is None
    assert checker.check(b, key_a) is not None and checker.check(a, key_b) is not None
    reason = checker.check(b, key_a)
    assert key_a not in reason and key_a.split("_", 2)[2] not in reason  # a refusal never echoes the key
