"""The recommender Serve app over real HTTP on 127.0.0.1: real Ray, real ONNX Runtime, real bundles.

Serve starts once for the module (two replicas at 0.25 CPU each) and shuts down at the end. Tests
that publish, corrupt or kill run on the module's private copy of the artifact root, late in the
file, and restore what other tests rely on.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
import torch
import yaml

from rec.adaptation.artifacts import load_adapter
from rec.serving.auth import create_api_key, revoke_api_keys
from rec.serving.events import EventLog
from rec.export.publish import publish_tenant
from rec.serving.store import ArtifactRoot
from serve_apps.args import RecommenderArgs
from tests.conftest import METRICS_PORT_ENV

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
APP = "recommender"
LIMITS = {"max_body_bytes": 8192, "max_history": 30, "max_k": 20, "max_candidates": 50, "max_events": 10}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass
class Server:
    url: str
    root: Path
    world: object

    def post(self, path: str, body: object, **kw) -> requests.Response:
        return requests.post(self.url + path, json=body, timeout=30, **kw)

    def recommend(self, tenant: str, history: list[str], k: int = 10, **kw) -> requests.Response:
        body = {"history": history, "k": k, "exclude_history": kw.pop("exclude_history", False), **kw.pop("body", {})}
        return self.post(f"/v1/tenants/{tenant}/recommendations", body, **kw)


@pytest.fixture(scope="module")
def server(ray_local, serving_world, tmp_path_factory):
    from ray import serve

    from serve_apps.recommender import build_app

    root = tmp_path_factory.mktemp("served") / "root"
    shutil.copytree(serving_world.root, root)
    port = _free_port()
    args = {"artifact_root": str(root), "poll_interval_s": 0.2, "max_batch_size": 16, "batch_wait_timeout_s": 0.05,
            "limits": LIMITS, "record_timings": True}
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(build_app(RecommenderArgs.model_validate(args)), name=APP, route_prefix="/")
        srv = Server(f"http://127.0.0.1:{port}", root, serving_world)
        _wait_ready(srv)
        yield srv
    finally:
        serve.shutdown()


def _wait_ready(srv: Server, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if requests.get(srv.url + "/readyz", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise AssertionError("the app did not become ready")


def _ranker_stats() -> dict:
    from ray import serve

    from serve_apps.recommender import SINGLE_HOP

    return serve.get_deployment_handle(SINGLE_HOP, app_name=APP).stats.remote().result()


def offline(world, tenant: str, adapter_dir: Path | None, history: list[str]) -> np.ndarray:
    """Scores of the whole catalog from the torch model with the adapter merged the PEFT way."""
    loaded = world.loaded
    model = load_adapter(adapter_dir, loaded.model, loaded.checksum)[0] if adapter_dir else loaded.model
    t = world.tenants[tenant]
    rows = torch.tensor([t.item_index_of(i) for i in history])
    with torch.no_grad():
        cat = model.item_representations(torch.from_numpy(world.text_emb[tenant]))
        user = model.user_vector(cat[rows][None], torch.zeros(1, len(rows), dtype=torch.bool))
        return model.scores(user, cat)[0].numpy()


def _check_against(resp: dict, scores: np.ndarray, ids: np.ndarray) -> None:
    got_ids = [it["item_id"] for it in resp["items"]]
    got = np.array([it["score"] for it in resp["items"]])
    want = np.sort(scores)[::-1][: len(got)]
    np.testing.assert_allclose(got, want, atol=1e-4)
    index = {str(i): r for r, i in enumerate(ids)}
    np.testing.assert_allclose(scores[[index[i] for i in got_ids]], got, atol=1e-4)


def _hist(world, tenant: str, user: int = 0, n: int = 6) -> list[str]:
    t = world.tenants[tenant]
    seq = t.sequence(user)[:n]
    return [str(t.items.ids[i]) for i in seq]


# --- API surface -------------------------------------------------------------------------------
def test_openapi_docs_health(server):
    spec = requests.get(server.url + "/openapi.json", timeout=10).json()
    assert {"/v1/tenants/{tenant_id}/recommendations", "/v1/tenants/{tenant_id}/events", "/v1/tenants/{tenant_id}",
            "/healthz", "/readyz"} <= set(spec["paths"])
    rec = spec["paths"]["/v1/tenants/{tenant_id}/recommendations"]["post"]
    assert rec["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/RecommendRequest")
    assert {"404", "413", "422"} <= set(rec["responses"])
    schemas = spec["components"]["schemas"]
    assert {"history", "k", "exclude_history", "candidates", "user_id"} == set(schemas["RecommendRequest"]["properties"])
    assert {"adapter_version", "model_version", "zero_shot", "items"} <= set(schemas["RecommendResponse"]["properties"])
    assert "swagger" in requests.get(server.url + "/docs", timeout=10).text.lower()
    assert requests.get(server.url + "/healthz", timeout=10).json() == {"status": "ok"}
    ready = requests.get(server.url + "/readyz", timeout=10).json()
    assert ready["status"] == "ready" and ready["model_version"].startswith("fp32-")


def test_direct_ingress_replica_port_answers_like_the_proxy(server):
    """Throughput-optimized Serve (the session runs it, see tests/conftest.py): the replica's own
    port serves the same API as the proxy: same scores, same 4xx, same OpenAPI."""
    from serve_apps.direct_ingress import http_targets

    urls = http_targets(APP, host="127.0.0.1")
    direct = [u for u in urls if u != server.url]
    assert len(direct) == 1, urls  # one replica, on its own port (without direct ingress: only the proxy)
    hist = _hist(server.world, "podcasts")
    body = {"history": hist, "k": 7, "exclude_history": True}
    via_proxy = server.post("/v1/tenants/podcasts/recommendations", body).json()
    via_replica = requests.post(f"{direct[0]}/v1/tenants/podcasts/recommendations", json=body, timeout=30).json()
    assert len(via_proxy["items"]) == 7 and _stable(via_replica) == _stable(via_proxy)
    bad = requests.post(f"{direct[0]}/v1/tenants/podcasts/recommendations", json={"history": hist, "k": 0}, timeout=30)
    assert bad.status_code == 422 and "k" in bad.text
    assert requests.post(f"{direct[0]}/v1/tenants/nope/recommendations", json={"history": []}, timeout=30).status_code == 404
    assert "/v1/tenants/{tenant_id}/recommendations" in requests.get(f"{direct[0]}/openapi.json", timeout=10).json()["paths"]
    with pytest.raises(ValueError, match="no application 'absent'"):
        http_targets("absent")


def _deployment_names(app) -> set[str]:  # noqa: ANN001 - a serve Application
    names, todo = set(), [app]
    while todo:
        d = todo.pop()._bound_deployment
        names.add(d.name)
        todo += [a for a in (*d.init_args, *d.init_kwargs.values()) if hasattr(a, "_bound_deployment")]
    return names


@pytest.mark.parametrize("name, layout", [("config.yaml", {"Recommender"}), ("config.sharded.yaml", {"Ingress", "Ranker"})])
def test_shipped_configs_are_valid_serve_deploy_files(name, layout):
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
    from ray.serve.schema import ServeDeploySchema

    from serve_apps.recommender import build_app

    cfg = yaml.safe_load((REPO / "serve_apps" / name).read_text())
    schema = ServeDeploySchema.model_validate(cfg)
    app = schema.applications[0]
    assert app.import_path == "serve_apps.recommender:build_app"
    RecommenderArgs.model_validate(app.args)
    deployments = {d.name: d for d in app.deployments}
    # Serve refuses a config naming a deployment the app does not have: the YAML must match the
    # layout build_app picks from its args (one Recommender, or Ingress + Ranker when sharded).
    assert set(deployments) == layout == _deployment_names(call_user_app_builder_with_args_if_necessary(build_app, app.args))
    for d in deployments.values():
        assert 0 < d.ray_actor_options.num_cpus < 1
        assert d.autoscaling_config["min_replicas"] >= 1
        assert d.max_ongoing_requests >= app.args["max_batch_size"]
        assert d.graceful_shutdown_timeout_s >= 20 and d.graceful_shutdown_wait_loop_s <= 2  # drain, above the p99
    ingress = deployments["Recommender" if "Recommender" in deployments else "Ingress"]
    assert ingress.max_queued_requests > 0 and ingress.backpressure_config.status_code == 503  # overload: 503, not a queue
    with pytest.raises(ValueError, match="artifact_rot"):
        RecommenderArgs.model_validate({**app.args, "artifact_rot": "/x"})
    # What `serve run` / `serve deploy` do with the YAML: validate args through the builder's type.
    with pytest.raises(ValueError, match="max_batch_sise"):
        call_user_app_builder_with_args_if_necessary(build_app, {**app.args, "max_batch_sise": 3})


# --- correctness -------------------------------------------------------------------------------
@pytest.mark.parametrize("tenant", ["podcasts", "books", "courses"])
def test_routing_matches_offline_scores(server, tenant):
    w = server.world
    hist = _hist(w, tenant)
    r = server.recommend(tenant, hist, k=10)
    assert r.status_code == 200, r.text
    body = r.json()
    adapter = w.adapters.get(tenant)
    assert body["tenant"] == tenant
    assert body["method"] == {"podcasts": "lora", "books": "prompt", "courses": "zero-shot"}[tenant]
    assert body["zero_shot"] is (adapter is None)
    assert body["adapter_version"] == {"podcasts": "v2", "books": "v1", "courses": "v1"}[tenant]
    _check_against(body, offline(w, tenant, adapter, hist), w.tenants[tenant].items.ids)
    # The other tenants' adapters give different scores: the routing is what makes this pass.
    if adapter is not None:
        base = offline(w, tenant, None, hist)
        assert np.abs(np.sort(base)[::-1][:10] - np.array([i["score"] for i in body["items"]])).max() > 1e-3


def test_mixed_tenant_batch_equals_single_requests(server):
    w = server.world
    jobs = [(t, _hist(w, t, user=u, n=3 + u % 5)) for u in range(8) for t in ("podcasts", "books", "courses")]
    single = [server.recommend(t, h, k=5).json() for t, h in jobs]
    before = len(_ranker_stats()["batches"])
    barrier = threading.Barrier(len(jobs))

    def call(job):
        barrier.wait()
        return server.recommend(job[0], job[1], k=5).json()

    with ThreadPoolExecutor(len(jobs)) as pool:
        mixed = list(pool.map(call, jobs))
    for a, b in zip(single, mixed):
        assert [i["item_id"] for i in a["items"]] == [i["item_id"] for i in b["items"]]
        np.testing.assert_allclose([i["score"] for i in a["items"]], [i["score"] for i in b["items"]], atol=1e-5)
    stats = _ranker_stats()
    batches = stats["batches"][before:]
    assert max(tenants for _, tenants in batches) >= 2, f"no batch mixed tenants: {batches}"
    assert len(batches) < len(jobs)
    # One replica holds HTTP and model: every stage of the request path is timed in it.
    assert {"asgi", "handler", "call", "queue", "feed", "ort", "topk"} <= set(stats["timings"]), stats["timings"]


def test_exclude_history_candidates_and_unknown_items(server):
    w = server.world
    hist = _hist(w, "podcasts", n=5)
    body = server.recommend("podcasts", hist, k=20, exclude_history=True).json()
    assert not set(hist) & {i["item_id"] for i in body["items"]}
    cands = [str(i) for i in w.tenants["podcasts"].items.ids[10:16]]
    body = server.recommend("podcasts", hist, k=10, body={"candidates": cands + ["zzz"]}).json()
    assert {i["item_id"] for i in body["items"]} == set(cands)
    assert any("candidate" in m for m in body["warnings"])
    # Unknown ids are dropped and reported; the answer equals the one without them.
    with_unknown = server.recommend("podcasts", ["nope-1"] + hist + ["a-0001"], k=5).json()
    plain = server.recommend("podcasts", hist, k=5).json()
    assert with_unknown["unknown_items"] == ["nope-1", "a-0001"]
    assert with_unknown["items"] == plain["items"]


def test_zero_shot_and_cold_start(server):
    body = server.recommend("courses", [], k=5).json()
    assert body["zero_shot"] and body["cold_start"] and len(body["items"]) == 5
    body = server.recommend("podcasts", ["unknown-only"], k=5).json()
    assert body["cold_start"] and not body["zero_shot"] and body["unknown_items"] == ["unknown-only"]
    st = requests.get(server.url + "/v1/tenants/courses", timeout=10).json()
    assert st["zero_shot"] and st["method"] == "zero-shot" and st["catalog_size"] == 80
    st = requests.get(server.url + "/v1/tenants/podcasts", timeout=10).json()
    assert st["adapter_version"] == st["published_version"] == "v2" and st["method"] == "lora"
    assert st["fallback_reason"] is None and st["api_key_required"] is False


def test_onboarding_a_catalog_makes_the_tenant_live_at_once(server):
    w = server.world
    shop = dataclasses.replace(w.tenants["courses"], name="newshop", _index_of=None)
    r = server.recommend("newshop", [], k=3)
    assert r.status_code == 404 and "newshop" in r.json()["detail"]
    publish_tenant(server.root, w.loaded, shop, w.text_emb["courses"])
    r = server.recommend("newshop", _hist(w, "courses"), k=3)
    assert r.status_code == 200 and r.json()["zero_shot"] and r.json()["adapter_version"] == "v1"


# --- bad input -----------------------------------------------------------------------------------
BAD = [
    ("unknown tenant", "nosuch", {"history": []}, 404),
    ("invalid tenant id", "Bad.Tenant", {"history": []}, 422),
    ("k zero", "podcasts", {"history": [], "k": 0}, 422),
    ("k over max_k", "podcasts", {"history": [], "k": 21}, 422),
    ("k as string", "podcasts", {"history": [], "k": "5"}, 422),
    ("k as float", "podcasts", {"history": [], "k": 5.5}, 422),
    ("history not a list", "podcasts", {"history": "c-0001"}, 422),
    ("history of objects", "podcasts", {"history": [{"id": 1}]}, 422),
    ("history too long", "podcasts", {"history": ["c-0001"] * 31}, 422),
    ("empty item id", "podcasts", {"history": [""]}, 422),
    ("item id too long", "podcasts", {"history": ["x" * 200]}, 422),
    ("too many candidates", "podcasts", {"history": [], "candidates": ["c-0001"] * 51}, 422),
    ("unknown field", "podcasts", {"history": [], "kk": 3}, 422),
    ("exclude_history as string", "podcasts", {"history": [], "exclude_history": "yes"}, 422),
    ("body not an object", "podcasts", [1, 2], 422),
]


@pytest.mark.parametrize("name,tenant,body,status", BAD, ids=[b[0] for b in BAD])
def test_bad_recommendation_requests_are_4xx_with_a_message(server, name, tenant, body, status):
    r = server.post(f"/v1/tenants/{tenant}/recommendations", body)
    assert r.status_code == status, r.text
    assert r.json()["detail"]


def test_malformed_and_huge_payloads(server):
    url = server.url + "/v1/tenants/podcasts/recommendations"
    r = requests.post(url, data=b'{"history": [', headers={"Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 422 and r.json()["detail"]
    r = requests.post(url, data=b"history=1", headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=10)
    assert r.status_code == 422
    huge = json.dumps({"history": ["c-0001"] * 5000}).encode()
    r = requests.post(url, data=huge, headers={"Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 413 and "max_body_bytes" in r.json()["detail"]
    r = requests.post(url, data=iter([huge[:4096], huge[4096:]]), headers={"Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 413  # chunked upload without Content-Length
    assert requests.get(server.url + "/v1/tenants/" + "a" * 300, timeout=10).status_code == 422


BAD_EVENTS = [
    ("unknown tenant", "nosuch", {"events": [{"type": "click", "item_id": "c-0001"}]}, 404),
    ("unknown type", "podcasts", {"events": [{"type": "like", "item_id": "c-0001"}]}, 422),
    ("no events", "podcasts", {"events": []}, 422),
    ("missing item", "podcasts", {"events": [{"type": "click"}]}, 422),
    ("negative time", "podcasts", {"events": [{"type": "click", "item_id": "c-1", "timestamp": -5}]}, 422),
    ("too many", "podcasts", {"events": [{"type": "click", "item_id": "c-1"}] * 11}, 422),
]


@pytest.mark.parametrize("name,tenant,body,status", BAD_EVENTS, ids=[b[0] for b in BAD_EVENTS])
def test_bad_events_are_4xx(server, name, tenant, body, status):
    r = server.post(f"/v1/tenants/{tenant}/events", body)
    assert r.status_code == status, r.text


# --- security ------------------------------------------------------------------------------------
def test_api_keys_isolate_tenants(server):
    store = ArtifactRoot(server.root)
    key_books = create_api_key(store.keys_path("books"))
    key_courses = create_api_key(store.keys_path("courses"))
    stored = store.keys_path("books").read_text()
    assert key_books.split("_", 2)[2] not in stored  # only the scrypt hash is stored
    try:
        hist = _hist(server.world, "books")
        assert server.recommend("books", hist).status_code == 401
        assert server.recommend("books", hist, headers={"X-API-Key": key_courses}).status_code == 403
        assert server.recommend("books", hist, headers={"Authorization": "Bearer rk_bad_key"}).status_code == 403
        assert server.recommend("books", hist, headers={"Authorization": f"Bearer {key_books}"}).status_code == 200
        assert server.recommend("courses", [], headers={"X-API-Key": key_books}).status_code == 403
        assert requests.get(server.url + "/v1/tenants/courses", headers={"X-API-Key": key_books}, timeout=10).status_code == 403
        ev = {"events": [{"type": "click", "item_id": "b-0001"}]}
        assert server.post("/v1/tenants/courses/events", ev, headers={"X-API-Key": key_books}).status_code == 403
        st = requests.get(server.url + "/v1/tenants/books", headers={"X-API-Key": key_books}, timeout=10).json()
        assert st["api_key_required"] is True
        assert server.recommend("podcasts", []).status_code == 200  # a tenant without keys stays open
    finally:
        revoke_api_keys(store.keys_path("books"))
        revoke_api_keys(store.keys_path("courses"))
    assert server.recommend("books", _hist(server.world, "books")).status_code == 200


# --- hot publish, rollback, corruption -----------------------------------------------------------
def test_hot_publish_under_load_then_rollback(server):
    w = server.world
    hist = _hist(w, "podcasts")
    ids = w.tenants["podcasts"].items.ids
    expected = {"v2": offline(w, "podcasts", w.adapters["podcasts"], hist), "v3": offline(w, "podcasts", None, hist)}
    stop = threading.Event()
    seen: list[dict] = []
    errors: list[str] = []

    def hammer() -> None:
        with requests.Session() as s:
            while not stop.is_set():
                r = s.post(server.url + "/v1/tenants/podcasts/recommendations", json={"history": hist, "k": 10, "exclude_history": False}, timeout=30)
                (seen.append(r.json()) if r.status_code == 200 else errors.append(f"{r.status_code} {r.text}"))

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        res = publish_tenant(server.root, w.loaded, w.tenants["podcasts"], w.text_emb["podcasts"])  # v3 = zero-shot
        assert res.version == 3
        deadline = time.time() + 20
        while time.time() < deadline and not any(b["adapter_version"] == "v3" for b in seen[-5:]):
            time.sleep(0.1)
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors[:3]
    versions = [b["adapter_version"] for b in seen]
    assert set(versions) == {"v2", "v3"}, set(versions)
    assert versions.index("v3") > 0 and "v2" not in versions[versions.index("v3") + 8 :]
    for b in seen:  # every answer is entirely the version it names
        _check_against(b, expected[b["adapter_version"]], ids)
        assert b["zero_shot"] is (b["adapter_version"] == "v3")

    from rec.cli import main

    assert main(["rollback", "--root", str(server.root), "--tenant", "podcasts"]) == 0
    assert ArtifactRoot(server.root).current_version("podcasts") == 2
    deadline = time.time() + 10
    while time.time() < deadline:
        body = server.recommend("podcasts", hist).json()
        if body["adapter_version"] == "v2":
            break
        time.sleep(0.1)
    assert body["adapter_version"] == "v2" and body["method"] == "lora"
    _check_against(body, expected["v2"], ids)
    assert main(["rollback", "--root", str(server.root), "--tenant", "podcasts", "--to", "9"]) == 2


def test_corrupt_version_falls_back_and_is_reported(server):
    store = ArtifactRoot(server.root)
    bad = store.version_dir("courses", 2)
    shutil.copytree(store.version_dir("courses", 1), bad)
    cat = bad / "catalog.safetensors"
    data = bytearray(cat.read_bytes())
    data[-10:] = b"\x00" * 10
    cat.write_bytes(bytes(data))
    (store.pointer_path("courses")).write_text(json.dumps({"version": 2}))  # simulate a bad publish
    try:
        deadline = time.time() + 10
        while time.time() < deadline:
            st = requests.get(server.url + "/v1/tenants/courses", timeout=10).json()
            if st.get("fallback_reason"):
                break
            time.sleep(0.1)
        assert st["adapter_version"] == "v1" and st["published_version"] == "v2"
        assert "v2" in st["failed_versions"] and "checksum" in st["failed_versions"]["v2"]
        r = server.recommend("courses", _hist(server.world, "courses"), k=3)
        assert r.status_code == 200 and r.json()["adapter_version"] == "v1"
        assert any("fallback" in m for m in r.json()["warnings"])
        assert server.recommend("books", _hist(server.world, "books")).status_code == 200
        assert requests.get(server.url + "/readyz", timeout=10).status_code == 200
    finally:
        store.set_current("courses", 1)
        shutil.rmtree(bad)


# --- tenant sharding ------------------------------------------------------------------------------
def test_multiplexed_sharding_answers_the_same(server):
    from ray import serve

    from serve_apps.recommender import build_app

    args = {"artifact_root": str(server.root), "poll_interval_s": 0.2, "multiplex": True, "max_tenants_per_replica": 2,
            "limits": LIMITS}
    serve.run(build_app(args), name="sharded", route_prefix="/sharded")
    try:
        w = server.world
        for tenant in ("podcasts", "books", "courses", "podcasts", "books"):
            hist = _hist(w, tenant)
            a = server.recommend(tenant, hist, k=5).json()
            b = server.post(f"/sharded/v1/tenants/{tenant}/recommendations", {"history": hist, "k": 5, "exclude_history": False})
            assert b.status_code == 200, b.text
            assert _stable(b.json()) == _stable(a)
        assert server.post("/sharded/v1/tenants/nosuch/recommendations", {"history": []}).status_code == 404
        st = requests.get(server.url + "/sharded/v1/tenants/courses", timeout=10).json()
        assert st["catalog_size"] == 80
        stats = serve.get_deployment_handle("Ranker", app_name="sharded").stats.remote().result()
        assert len(stats["loaded"]) <= 2, stats  # the registry's LRU, bounded like Serve's multiplex LRU
        assert stats["loads"] >= 4  # tenants were unloaded and loaded again
        assert stats["timings"] == {}  # record_timings is off by default: nothing is recorded
    finally:
        serve.delete("sharded")


# --- overload ------------------------------------------------------------------------------------
def test_overload_is_a_fast_503_with_retry_after(server):
    """With the request queue bounded (config.yaml: max_queued_requests), a burst beyond it is
    refused at once with 503 + Retry-After, and every accepted request is answered."""
    from ray import serve
    from ray.serve.config import BackpressureConfig

    from serve_apps.api import Ingress
    from serve_apps.recommender import RecommenderArgs

    plain = RecommenderArgs.model_validate({"artifact_root": str(server.root), "limits": LIMITS}).model_dump(mode="json")
    tight = Ingress.options(name="Tight", max_ongoing_requests=1, max_queued_requests=1, ray_actor_options={"num_cpus": 0.1},
                            backpressure_config=BackpressureConfig(status_code=503, retry_after_s=2))
    serve.run(tight.bind(plain), name="tight", route_prefix="/tight")
    try:
        hist = _hist(server.world, "books")
        body = {"history": hist, "k": 5, "exclude_history": False}
        with ThreadPoolExecutor(40) as pool:
            got = list(pool.map(lambda _: server.post("/tight/v1/tenants/books/recommendations", body), range(40)))
        codes = [r.status_code for r in got]
        assert set(codes) <= {200, 503}, codes
        assert codes.count(503) > 0 and codes.count(200) > 0, codes
        refused = next(r for r in got if r.status_code == 503)
        assert refused.headers.get("Retry-After") == "2" and refused.text
        assert all(len(r.json()["items"]) == 5 for r in got if r.status_code == 200)
    finally:
        serve.delete("tight")


# --- durability ----------------------------------------------------------------------------------
def test_feedback_event_survives_a_replica_kill(server):
    import ray

    log = EventLog(ArtifactRoot(server.root).events_dir)
    before = len(log.read("books"))
    ev = {"events": [{"type": "purchase", "item_id": "a-0007", "user_id": "u1", "timestamp": 1700000000},
                     {"type": "click", "item_id": "a-0008"}]}
    r = server.post("/v1/tenants/books/events", ev)
    assert r.status_code == 201 and r.json() == {"tenant": "books", "accepted": 2, "duplicate": False}
    from serve_apps.recommender import SINGLE_HOP

    replicas = [a for a in ray.util.list_named_actors(all_namespaces=True)
                if SINGLE_HOP in a["name"] and a["name"].startswith("SERVE_REPLICA")]
    assert replicas
    for a in replicas:
        ray.kill(ray.get_actor(a["name"], namespace=a["namespace"]), no_restart=True)
    after = log.read("books")
    assert [e["item_id"] for e in after[before:] if e["kind"] == "event"] == ["a-0007", "a-0008"]
    assert after[before]["timestamp"] == 1700000000 and after[before]["type"] == "purchase"
    deadline = time.time() + 60
    while time.time() < deadline:  # Serve replaces the replica; the log keeps growing from there
        try:
            r = server.post("/v1/tenants/books/events", {"events": [{"type": "impression", "item_id": "a-0009"}]})
            if r.status_code == 201:
                break
        except requests.RequestException:
            pass
        time.sleep(0.5)
    assert r.status_code == 201
    assert [e["item_id"] for e in log.read("books")[before:] if e["kind"] == "event"] == ["a-0007", "a-0008", "a-0009"]


def _stable(answer: dict) -> dict:
    """An answer without its per-call request id."""
    return {k: v for k, v in answer.items() if k != "request_id"}


# --- attribution and idempotent writes ------------------------------------------------------------
def test_answers_are_logged_as_impressions_and_events_join_them(server):
    log = EventLog(ArtifactRoot(server.root).events_dir)
    hist = _hist(server.world, "courses")
    r = server.post("/v1/tenants/courses/recommendations", {"history": hist, "k": 4, "user_id": "u-9"})
    assert r.status_code == 200, r.text
    ans = r.json()
    assert ans["policy"] == "greedy" and [i["position"] for i in ans["items"]] == [1, 2, 3, 4]
    # the impression is durable before the answer: it is in the log already
    imp = [e for e in log.read("courses") if e.get("request_id") == ans["request_id"] and e["kind"] == "impression"]
    assert len(imp) == 1 and imp[0]["user_id"] == "u-9" and imp[0]["items"] == [i["item_id"] for i in ans["items"]]
    assert imp[0]["propensities"] == [1.0] * 4 and imp[0]["adapter_version"] == ans["adapter_version"]
    click = {"events": [{"type": "click", "item_id": ans["items"][1]["item_id"], "request_id": ans["request_id"]}]}
    assert server.post("/v1/tenants/courses/events", click).status_code == 201
    joined = [e for e in log.read("courses") if e.get("request_id") == ans["request_id"]]
    assert [e["kind"] for e in joined] == ["impression", "event"]


def test_a_retried_event_post_with_an_idempotency_key_is_logged_once(server):
    log = EventLog(ArtifactRoot(server.root).events_dir)
    before = len(log.read("courses"))
    ev = {"events": [{"type": "purchase", "item_id": "c-0001"}, {"type": "click", "item_id": "c-0002"}]}
    headers = {"Idempotency-Key": "order-77-attempt"}
    first = requests.post(server.url + "/v1/tenants/courses/events", json=ev, headers=headers, timeout=30)
    again = requests.post(server.url + "/v1/tenants/courses/events", json=ev, headers=headers, timeout=30)
    assert first.status_code == again.status_code == 201
    assert first.json()["duplicate"] is False and again.json() == {"tenant": "courses", "accepted": 2, "duplicate": True}
    new = [e for e in log.read("courses")[before:] if e["kind"] == "event"]
    assert [e["item_id"] for e in new] == ["c-0001", "c-0002"]
    bad = requests.post(server.url + "/v1/tenants/courses/events", json=ev, headers={"Idempotency-Key": "has space"}, timeout=30)
    assert bad.status_code == 422 and "Idempotency-Key" in bad.text


# --- the closed loop (bench/closed_loop.py's replay client) ----------------------------------------
def test_a_replayed_tenant_learns_from_its_clicks_and_nothing_acknowledged_is_lost(server):
    from bench.closed_loop import replay_steps
    from bench.closed_loop_client import Acks, ReplayClient, check_log, window_metrics
    from rec.serving.live_feedback import FeedbackSettings, write_feedback_settings

    w, store = server.world, ArtifactRoot(server.root)
    courses = w.tenants["courses"]
    arms = {"loop-static": 0.0, "loop-popular": 1000.0}  # online prior off / counts first
    for name, weight in arms.items():
        publish_tenant(server.root, w.loaded, dataclasses.replace(courses, name=name, _index_of=None), w.text_emb["courses"])
        write_feedback_settings(store.tenant_dir(name), FeedbackSettings(prior_weight=weight))
    steps = replay_steps(courses, list(range(courses.num_users)), 400)
    seen: dict[str, list[str]] = {}
    for s in steps:  # each user's steps come in order: history = the targets before it (capped window)
        assert list(s.history) == seen.get(s.user, []), s
        seen.setdefault(s.user, []).append(s.target)
    assert len(steps) == 400
    acks = Acks()
    client = ReplayClient(server.url, acks, max_history=LIMITS["max_history"])
    history = [str(courses.items.ids[0])]
    before = {name: client.recommend(name, history) for name in arms}
    results = {name: [client.step(name, s) for s in steps] for name in arms}
    # static never changes; the counts-first tenant now puts its most clicked item first
    time.sleep(1.0)  # replicas apply the log every poll_interval_s (0.2 s)
    assert client.recommend("loop-static", history) == before["loop-static"]
    clicked: dict[str, int] = {}
    for s, r in zip(steps, results["loop-popular"]):
        if r.rank is not None and s.target not in history:
            clicked[s.target] = clicked.get(s.target, 0) + 1
    assert clicked, "no click in 400 steps: the replay did not reach the model's top 10"
    assert clicked.get(client.recommend("loop-popular", history)[0]) == max(clicked.values()), clicked
    assert 0 < window_metrics(results["loop-static"])["hr@10"] <= 1
    counts = check_log(EventLog(store.events_dir).read, acks)
    hits = sum(r.rank is not None for rs in results.values() for r in rs)
    assert counts == {"acked_requests": 800, "acked_events": hits, "lost": 0, "duplicated": 0}
    # a click on an item outside the top 10 puts it first in a later answer (online prior, polled log)
    top = client.recommend("loop-popular", history)
    item = next(str(x) for x in courses.items.ids[1:] if str(x) not in top)
    for i in range(max(clicked.values()) + 1):  # one more click than the most clicked item has
        client.click("loop-popular", item, key=f"probe-{i}")
    deadline = time.time() + 10
    while client.recommend("loop-popular", history)[0] != item:
        assert time.time() < deadline, "the click was not reflected in the ranking within 10 s"
        time.sleep(0.05)


# --- metrics ---------------------------------------------------------------------------------------
def _scrape(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()


def _series(body: str, name: str) -> list[str]:
    return [line for line in body.splitlines() if line.startswith(f"ray_{name}") and not line.startswith("#")]


def test_tenant_metrics_are_exported_in_prometheus_format(server):
    port = int(os.environ[METRICS_PORT_ENV])
    hist = [str(i) for i in server.world.tenants["courses"].items.ids[:3]]
    for _ in range(3):
        assert server.recommend("courses", hist, k=3).status_code == 200
    assert server.post("/v1/tenants/courses/events", {"events": [{"type": "click", "item_id": hist[0]}]}).status_code == 201
    assert server.post("/v1/tenants/Bad!/recommendations", {"history": []}).status_code in (404, 422)
    def exported(body: str) -> list[str]:
        """What is still missing from the scrape (empty once everything is there)."""
        ok = [s for s in _series(body, "fewshot_requests_total") if 'tenant="courses"' in s and 'status="200"' in s
              and 'route="recommendations"' in s and float(s.rsplit(" ", 1)[1]) >= 3]
        checks = {
            "requests": bool(ok),
            "click": any('tenant="courses"' in s and 'type="click"' in s for s in _series(body, "fewshot_events_total")),
            "impressions": any('tenant="courses"' in s and 'policy="greedy"' in s for s in _series(body, "fewshot_impressions_total")),
            "latency": any('tenant="courses"' in s for s in _series(body, "fewshot_request_latency_ms_bucket")),
            "policy": any('tenant="courses"' in s for s in _series(body, "fewshot_policy")),
        }
        return [name for name, hit in checks.items() if not hit]

    deadline, body = time.time() + 60, ""
    while time.time() < deadline:  # Ray's agent exports every few seconds
        body = _scrape(port)
        if not exported(body):
            break
        time.sleep(1)
    assert not exported(body), exported(body)
    # a malformed tenant id never becomes a label value
    assert not any('tenant="Bad!"' in s for s in _series(body, "fewshot_requests_total"))
