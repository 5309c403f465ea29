"""Tenant bundles as a replica holds them: same answers as the fp32 arrays, fewer bytes per tenant."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from rec.export.publish import publish_tenant
from rec.io.artifacts import ArtifactError
from rec.serving.bundles import ItemIds, TenantBundle, load_tenant_bundle
from rec.serving.runtime import SharedRanker
from rec.serving.store import ArtifactRoot


def _hist(world, tenant: str, user: int) -> np.ndarray:
    return np.asarray(world.tenants[tenant].sequence(user)[:6], np.int64)


def _fp32_reference(b: TenantBundle, ids: list[str]) -> TenantBundle:
    """The same tenant with fp32 arrays everywhere (what export builds before writing)."""
    lora = {n: (a.astype(np.float32), c.astype(np.float32)) for n, (a, c) in b.lora.items()}
    return TenantBundle(b.tenant, ids, b.catalog_fp32(), lora, b.prompt, b.method, {})


def test_item_ids_lookup_matches_a_dict():
    ids = ["b-2", "a-10", "a-9", "ü-1", "0", "a-1"]
    idx = ItemIds(ids)
    rows, unknown = idx.rows_of(["a-9", "nope", "0", "a-10", "a-100", "ü-1", ""])
    assert rows.tolist() == [2, 4, 1, 3] and unknown == ["nope", "a-100", ""]
    assert [idx[r] for r in range(len(ids))] == ids == idx.tolist() == list(idx) and idx[1:3] == ids[1:3]
    assert idx.rows_of([]) == (pytest.approx(np.zeros(0)), [])
    with pytest.raises(ArtifactError, match="duplicate"):
        ItemIds(["x", "y", "x"])


def test_fp32_bundle_holds_ids_compactly_and_answers_like_its_arrays(serving_world):
    store = ArtifactRoot(serving_world.root)
    ranker = SharedRanker(store.model_dir)
    for tenant in ("podcasts", "books"):
        path = store.version_dir(tenant, store.current_version(tenant))
        ids = json.loads((path / "item_ids.json").read_text())
        b = load_tenant_bundle(path)
        assert b.item_ids.tolist() == ids and b.catalog.dtype == np.float32 and b.catalog_scale is None
        arrays = [b.catalog, *(t for ab in b.lora.values() for t in ab)] + ([b.prompt] if b.prompt is not None else [])
        assert b.nbytes == sum(a.nbytes for a in arrays) + b.item_ids.nbytes
        py_ids = sys.getsizeof(ids) + sys.getsizeof({i: r for r, i in enumerate(ids)}) + sum(map(sys.getsizeof, ids))
        assert b.item_ids.nbytes < py_ids / 2, (b.item_ids.nbytes, py_ids)
        ref = _fp32_reference(b, ids)
        hists = [_hist(serving_world, tenant, u) for u in range(3)]
        a = ranker.user_vectors(hists, [ref] * 3)
        got = ranker.user_vectors(hists, [b] * 3)
        np.testing.assert_array_equal(a, got)
        rows, scores = ranker.top_k(b, got[0], 5, {int(hists[0][0])})
        want = got[0] @ ref.catalog.T
        want[int(hists[0][0])] = -np.inf
        assert rows.tolist() == np.argsort(-want, kind="stable")[:5].tolist()
        np.testing.assert_allclose(scores, np.sort(want)[::-1][:5], rtol=1e-6)
        assert [b.item_ids[r] for r in rows] == [ids[r] for r in rows]
        np.testing.assert_allclose(b.centroid(), ref.catalog.mean(axis=0), atol=1e-6)
        assert b.centroid() is b.centroid() and not b.centroid().flags.writeable  # computed once


def test_int8_catalog_and_fp16_lora_are_held_compactly(serving_world, world_copy):
    """An int8-published bundle is served from its int8 rows (scores == the stored catalog's),
    LoRA in fp16 moves scores by far less than the int8 catalog itself does."""
    w = serving_world
    store = ArtifactRoot(world_copy)
    res = publish_tenant(world_copy, w.loaded, w.tenants["podcasts"], w.text_emb["podcasts"], w.adapters["podcasts"],
                         catalog_dtype="int8")
    path = store.version_dir("podcasts", res.version)
    exact32 = load_tenant_bundle(path)  # fp32 LoRA, int8 rows as stored
    full = _fp32_reference(exact32, exact32.item_ids.tolist())  # fp32 decode of the int8 rows: the reference
    small = load_tenant_bundle(path, adapter_dtype="fp16")
    assert small.catalog.dtype == np.int8 and small.catalog_scale is not None
    assert all(a.dtype == np.float16 and b.dtype == np.float16 for a, b in small.lora.values())
    assert small.nbytes - small.item_ids.nbytes <= 0.5 * (full.nbytes - full.item_ids.nbytes), (small.nbytes, full.nbytes)
    ranker = SharedRanker(store.model_dir)
    hists = [_hist(w, "podcasts", u) for u in range(4)]
    ref = ranker.user_vectors(hists, [full] * 4)
    got = ranker.user_vectors(hists, [small] * 4)
    ref_scores, got_scores = ref @ full.catalog.T, np.stack([ranker.top_k(small, g, small.num_items)[1] for g in got])
    np.testing.assert_allclose(np.sort(got_scores, axis=1), np.sort(ref_scores, axis=1), atol=2e-3)
    # the int8 catalog's cold-start vector is the mean of its dequantized rows
    np.testing.assert_allclose(small.centroid(), full.catalog.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(ranker.user_vectors(hists, [exact32] * 4), ref, atol=1e-6)
    with pytest.raises(ArtifactError, match="adapter dtype"):
        load_tenant_bundle(path, adapter_dtype="int4")


def test_an_int8_catalog_without_its_scale_is_refused():
    with pytest.raises(ArtifactError, match="catalog_scale"):
        TenantBundle("t", ["a"], np.zeros((1, 4), np.int8), {}, None, "zero-shot", {})
