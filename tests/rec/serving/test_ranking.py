"""rank_batch without Serve: one model call per mixed batch, per-row errors stay per row."""

from __future__ import annotations

import dataclasses

import numpy as np

from rec.serving.bundles import load_tenant_bundle
from rec.serving.ranking import IMPRESSION_KEY, RankError, RankRequest, rank_batch
from rec.serving.registry import TenantRegistry
from rec.serving.runtime import SharedRanker
from rec.serving.store import ArtifactRoot


def _req(world, tenant: str, user: int, k: int = 5) -> RankRequest:
    t = world.tenants[tenant]
    return RankRequest(tenant, tuple(str(t.items.ids[i]) for i in t.sequence(user)[:6]), k)


def test_mixed_batch_is_one_model_call_and_equals_single_rows(serving_world):
    store = ArtifactRoot(serving_world.root)
    ranker = SharedRanker(store.model_dir)
    reg = TenantRegistry(store, load_tenant_bundle)
    reqs = [_req(serving_world, t, u) for u in range(3) for t in ("podcasts", "books", "courses")]
    reqs.append(RankRequest("courses", (), 4))  # cold row: answered without the model
    runs = ranker.runs
    batch = rank_batch(ranker, reg, reqs, ranker.max_len, "m")
    assert ranker.runs == runs + 1
    for req, got in zip(reqs, batch):
        alone = rank_batch(ranker, reg, [req], ranker.max_len, "m")[0]
        assert [i["item_id"] for i in got["items"]] == [i["item_id"] for i in alone["items"]]
        np.testing.assert_allclose([i["score"] for i in got["items"]], [i["score"] for i in alone["items"]], atol=1e-5)
    assert batch[-1]["cold_start"] and len(batch[-1]["items"]) == 4
    # tenants resolved up front (the serving loop's inline path) give the same answers
    resolved = reg.cached({r.tenant for r in reqs})
    assert resolved is not None
    assert [_stable(a) for a in rank_batch(ranker, reg, reqs, ranker.max_len, "m", resolved=resolved)] == [_stable(a) for a in batch]


def _stable(answer: dict) -> dict:
    """An answer without what differs per call (its request id and impression record)."""
    return {k: v for k, v in answer.items() if k not in ("request_id", IMPRESSION_KEY)}


def test_a_bundle_that_breaks_the_model_call_fails_only_its_rows(serving_world):
    store = ArtifactRoot(serving_world.root)
    ranker = SharedRanker(store.model_dir)

    def load(path):  # noqa: ANN001, ANN202 - a books bundle whose LoRA has the wrong shape
        b = load_tenant_bundle(path)
        if b.tenant == "books":
            name = ranker.projections[0][0]
            b = dataclasses.replace(b, lora={name: (np.zeros((2, 3), np.float32), np.zeros((3, 2), np.float32))})
        return b

    reg = TenantRegistry(store, load)
    reqs = [_req(serving_world, "podcasts", 0), _req(serving_world, "books", 0), RankRequest("nosuch", (), 3)]
    out = rank_batch(ranker, reg, reqs, ranker.max_len, "m")
    assert out[0]["tenant"] == "podcasts" and len(out[0]["items"]) == 5
    assert isinstance(out[1], RankError) and out[1].status == 503 and "books" in out[1].detail
    assert isinstance(out[2], RankError) and out[2].status == 404
