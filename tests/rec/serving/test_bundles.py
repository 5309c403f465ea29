"""Compact serving bundles: same answers as the verified fp32 bundle, fewer bytes per tenant."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from rec.export.runtime import SharedRanker
from rec.export.tenant_bundle import load_tenant_bundle
from rec.io.artifacts import ArtifactError
from rec.serving.bundles import ItemIds, load_serving_bundle
from rec.serving.publish import publish_tenant
from rec.serving.store import ArtifactRoot


def _hist(world, tenant: str, user: int) -> np.ndarray:
    return np.asarray(world.tenants[tenant].sequence(user)[:6], np.int64)


def test_item_ids_lookup_matches_a_dict():
    ids = ["b-2", "a-10", "a-9", "ü-1", "0", "a-1"]
    idx = ItemIds(ids)
    rows, unknown = idx.rows_of(["a-9", "nope", "0", "a-10", "a-100", "ü-1", ""])
    assert rows.tolist() == [2, 4, 1, 3] and unknown == ["nope", "a-100", ""]
    assert [idx[r] for r in range(len(ids))] == ids
    assert idx.rows_of([]) == (pytest.approx(np.zeros(0)), [])
    with pytest.raises(ArtifactError, match="duplicate"):
        ItemIds(["x", "y", "x"])


def test_fp32_serving_bundle_answers_exactly_like_the_full_one(serving_world):
    store = ArtifactRoot(serving_world.root)
    ranker = SharedRanker(store.model_dir)
    for tenant in ("podcasts", "books"):
        path = store.version_dir(tenant, store.current_version(tenant))
        full, compact = load_tenant_bundle(path), load_serving_bundle(path)
        assert compact.nbytes - compact.item_ids.nbytes == full.nbytes  # the same fp32 arrays
        py_ids = sys.getsizeof(full.item_ids) + sys.getsizeof(full.item_index) + sum(map(sys.getsizeof, full.item_ids))
        assert compact.item_ids.nbytes < py_ids / 2, (compact.item_ids.nbytes, py_ids)
        hists = [_hist(serving_world, tenant, u) for u in range(3)]
        a = ranker.user_vectors(hists, [full] * 3)
        b = ranker.user_vectors(hists, [compact] * 3)
        np.testing.assert_array_equal(a, b)
        rows, scores = ranker.top_k(compact, b[0], 5, {int(hists[0][0])})
        want_rows, want = ranker.top_k(full, a[0], 5, {int(hists[0][0])})
        assert rows.tolist() == want_rows.tolist()
        np.testing.assert_array_equal(scores, want)
        assert [compact.item_ids[r] for r in rows] == [full.item_ids[r] for r in rows]
        np.testing.assert_allclose(compact.centroid(), full.catalog.mean(axis=0), atol=1e-6)
        assert compact.centroid() is compact.centroid() and not compact.centroid().flags.writeable  # computed once


def test_int8_catalog_and_fp16_lora_are_held_compactly(serving_world, world_copy):
    """An int8-published bundle is served from its int8 rows (scores == the stored catalog's),
    LoRA in fp16 moves scores by far less than the int8 catalog itself does."""
    w = serving_world
    store = ArtifactRoot(world_copy)
    res = publish_tenant(world_copy, w.loaded, w.tenants["podcasts"], w.text_emb["podcasts"], w.adapters["podcasts"],
                         catalog_dtype="int8")
    path = store.version_dir("podcasts", res.version)
    full = load_tenant_bundle(path)  # fp32 decode of the int8 rows: the reference
    small = load_serving_bundle(path, adapter_dtype="fp16")
    assert small.catalog.dtype == np.int8 and small.catalog_scale is not None
    assert all(a.dtype == np.float16 and b.dtype == np.float16 for a, b in small.lora.values())
    assert small.nbytes - small.item_ids.nbytes <= 0.5 * full.nbytes, (small.nbytes, full.nbytes)  # int8 rows, fp16 LoRA
    ranker = SharedRanker(store.model_dir)
    hists = [_hist(w, "podcasts", u) for u in range(4)]
    ref = ranker.user_vectors(hists, [full] * 4)
    got = ranker.user_vectors(hists, [small] * 4)
    ref_scores, got_scores = ref @ full.catalog.T, np.stack([ranker.top_k(small, g, small.num_items)[1] for g in got])
    np.testing.assert_allclose(np.sort(got_scores, axis=1), np.sort(ref_scores, axis=1), atol=2e-3)
    # the int8 catalog's cold-start vector is the mean of its dequantized rows
    np.testing.assert_allclose(small.centroid(), full.catalog.mean(axis=0), atol=1e-6)
    exact32 = load_serving_bundle(path)  # fp32 LoRA: int8 rows used as stored -> exact
    np.testing.assert_allclose(ranker.user_vectors(hists, [exact32] * 4), ref, atol=1e-6)
    with pytest.raises(ArtifactError, match="adapter dtype"):
        load_serving_bundle(path, adapter_dtype="int4")
