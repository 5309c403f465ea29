"""Tenant registry: hot reload on pointer change, byte-bounded LRU, fallback on corrupt versions."""

from __future__ import annotations

import json

import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from rec.serving.bundles import load_tenant_bundle
from rec.serving.ranking import RankRequest, rank_batch
from rec.serving.registry import TenantRegistry, TenantUnavailable, UnknownTenant
from rec.serving.runtime import SharedRanker
from rec.serving.store import ArtifactRoot


def test_hot_reload_follows_the_pointer(world_copy):
    store = ArtifactRoot(world_copy)
    reg = TenantRegistry(store, load_tenant_bundle, poll_interval_s=0.0)
    old = reg.get("podcasts")
    assert (old.version, old.bundle.method) == (2, "lora")
    assert reg.get("podcasts") is old and reg.loads == 1  # unchanged pointer: no reload
    store.set_current("podcasts", 1)
    new = reg.get("podcasts")
    assert (new.version, new.bundle.method) == (1, "zero-shot")
    assert old.bundle.method == "lora"  # a request holding the old version still has it whole
    with pytest.raises(UnknownTenant):
        reg.get("nobody")
    with pytest.raises(ValueError):
        reg.get("Not/Valid")


def test_poll_interval_delays_the_check(world_copy):
    now = [0.0]
    store = ArtifactRoot(world_copy)
    reg = TenantRegistry(store, load_tenant_bundle, poll_interval_s=5.0, clock=lambda: now[0])
    assert reg.get("podcasts").version == 2
    store.set_current("podcasts", 1)
    assert reg.get("podcasts").version == 2
    now[0] = 5.1
    assert reg.get("podcasts").version == 1


def test_cached_answers_only_what_needs_no_load(world_copy):
    """The serving loop ranks inline only on what ``cached`` returns; anything else goes to ``get``."""
    now = [0.0]
    store = ArtifactRoot(world_copy)
    reg = TenantRegistry(store, load_tenant_bundle, poll_interval_s=5.0, clock=lambda: now[0])
    assert reg.cached(["podcasts"]) is None  # not held: a load is needed
    held = reg.get("podcasts")
    assert reg.cached(["podcasts"]) == {"podcasts": held} and reg.cached([]) == {}
    assert reg.cached(["podcasts", "books"]) is None and reg.cached(["nobody"]) is None
    now[0] = 6.0  # poll due, pointer unchanged: one stat, still served from memory
    assert reg.cached(["podcasts"]) == {"podcasts": held} and reg.loads == 1
    store.set_current("podcasts", 1)
    now[0] = 12.0  # poll due, pointer moved: the new version must be loaded first
    assert reg.cached(["podcasts"]) is None and reg.loads == 1
    assert reg.get("podcasts").version == 1
    assert reg.cached(["podcasts"])["podcasts"].version == 1


def test_a_slow_load_blocks_neither_held_tenants_nor_other_loads(serving_world, world_copy):
    """Loads run outside the registry lock: while one tenant's bundle is stuck on disk, a batch of
    a held tenant is resolved and ranked, another tenant loads, and a second request for the
    stuck tenant waits for that same load instead of starting its own."""
    store = ArtifactRoot(world_copy)
    entered, release = threading.Event(), threading.Event()

    def slow_podcasts(path: Path):
        if path.parent.name == "podcasts":
            entered.set()
            assert release.wait(30)
        return load_tenant_bundle(path)

    reg = TenantRegistry(store, slow_podcasts, poll_interval_s=0.0)  # poll 0: every call re-stats the pointer
    held = reg.get("books")
    ranker = SharedRanker(store.model_dir)
    books = serving_world.tenants["books"]
    request = RankRequest("books", tuple(str(books.items.ids[i]) for i in books.sequence(0)[:5]), 5)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(reg.get, "podcasts")
        assert entered.wait(10)
        second = pool.submit(reg.get, "podcasts")
        try:
            t0 = time.monotonic()
            resolved = reg.cached(["books"])
            assert resolved == {"books": held}
            answer = rank_batch(ranker, reg, [request], ranker.max_len, "m", resolved=resolved)[0]
            assert isinstance(answer, dict) and len(answer["items"]) == 5
            assert reg.get("courses").version == 1  # a load of another tenant goes on meanwhile
            assert time.monotonic() - t0 < 10 and not first.done() and not second.done()
        finally:
            release.set()
        a, b = first.result(30), second.result(30)
    assert a is b and a.version == 2  # one load served both requests for podcasts
    assert reg.loads == 3 and set(reg.loaded()) == {"books", "courses", "podcasts"}


def test_explicit_eviction_and_a_count_bound(world_copy):
    store = ArtifactRoot(world_copy)
    reg = TenantRegistry(store, load_tenant_bundle, max_tenants=2)
    for t in ("books", "courses", "podcasts"):
        reg.get(t)
    assert list(reg.loaded()) == ["courses", "podcasts"] and reg.evictions == 1
    reg.evict("courses")
    assert list(reg.loaded()) == ["podcasts"] and reg.cached(["courses"]) is None
    assert reg.get("courses").version == 1 and reg.loads == 4


def test_lru_stays_within_the_byte_budget(world_copy):
    store = ArtifactRoot(world_copy)
    size = {t: load_tenant_bundle(store.version_dir(t, store.current_version(t))).nbytes for t in store.tenants()}
    assert size["books"] < size["podcasts"]  # prompt vectors vs LoRA matrices
    reg = TenantRegistry(store, load_tenant_bundle, max_bytes=size["courses"] + size["podcasts"], poll_interval_s=0.0)
    for t in ("books", "courses", "podcasts"):
        reg.get(t)
    assert list(reg.loaded()) == ["courses", "podcasts"] and reg.nbytes <= reg.max_bytes
    reg.get("courses")  # touch: podcasts is now least recent
    reg.get("books")
    assert list(reg.loaded()) == ["courses", "books"] and reg.evictions == 2
    tiny = TenantRegistry(store, load_tenant_bundle, max_bytes=1)
    assert tiny.get("books").version == 1 and list(tiny.loaded()) == ["books"]  # the one in use stays


def _corrupt_copy(store: ArtifactRoot, tenant: str, src: int, dst: int) -> None:
    shutil.copytree(store.version_dir(tenant, src), store.version_dir(tenant, dst))
    path = store.version_dir(tenant, dst) / "catalog.safetensors"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_corrupt_version_keeps_the_loaded_one(world_copy):
    store = ArtifactRoot(world_copy)
    reg = TenantRegistry(store, load_tenant_bundle, poll_interval_s=0.0)
    assert reg.get("podcasts").version == 2
    _corrupt_copy(store, "podcasts", 2, 3)
    store.set_current("podcasts", 3)
    served = reg.get("podcasts")
    assert served.version == 2 and "v3 does not load" in served.fallback_reason
    st = reg.status("podcasts")
    assert st["published_version"] == 3 and "checksum" in st["failed_versions"]["v3"]
    root = str(store.root)  # what tenants see never tells them where the server keeps its files
    assert root not in served.fallback_reason and root not in json.dumps(st) and "<root>" in st["failed_versions"]["v3"]
    store.set_current("podcasts", 2)
    assert reg.get("podcasts").fallback_reason is None


def test_corrupt_version_on_a_cold_replica_falls_back_to_an_older_one(world_copy):
    store = ArtifactRoot(world_copy)
    _corrupt_copy(store, "podcasts", 2, 3)
    store.set_current("podcasts", 3)
    served = TenantRegistry(store, load_tenant_bundle).get("podcasts")
    assert served.version == 2 and served.fallback_reason
    _corrupt_copy(store, "courses", 1, 2)
    shutil.rmtree(store.version_dir("courses", 1))
    store.pointer_path("courses").write_text('{"version": 2}')
    tried = []
    reg = TenantRegistry(store, lambda p: (tried.append(p), load_tenant_bundle(p))[1], poll_interval_s=0.0)
    for _ in range(3):
        with pytest.raises(TenantUnavailable, match="no version loads"):
            reg.get("courses")
    assert len(tried) == 1  # the broken version is verified once per pointer change, not per request
    store.pointer_path("books").write_text("{not json")
    reg = TenantRegistry(store, load_tenant_bundle)
    served = reg.get("books")
    assert served.version == 1 and "unreadable version pointer" in served.fallback_reason
    assert reg.status("books")["published_version"] is None


def test_bundle_of_another_backbone_is_refused(world_copy):
    from rec.io.artifacts import ArtifactError

    def validate(bundle) -> None:  # noqa: ANN001
        raise ArtifactError("exported from another backbone")

    with pytest.raises(TenantUnavailable, match="another backbone"):
        TenantRegistry(ArtifactRoot(world_copy), load_tenant_bundle, validate=validate).get("books")
