"""The shared ONNX serving model against torch: parity, mixed tenants, zero adapters, shapes, int8."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rec.export.onnx_export import parity_data_from_tenant
from rec.export.parity import same_topk, topk
from rec.export.serving_graph import ServingGraph, adapted_projections, input_names
from rec.io.artifacts import read_manifest
from rec.serving.runtime import SharedRanker
from tests.rec.export.conftest import histories, reference_scores

SHARED = ["zero-shot", "head", "prompt", "lora-r4", "lora-r8", "lora-r16", "lora-adaptor", "adalora"]


def test_manifest_describes_a_verified_export(serving_dir, small_backbone):
    m = read_manifest(serving_dir, kind="serving-model")
    projections = adapted_projections(small_backbone.model)
    assert [i["name"] for i in m["inputs"]] == input_names(projections)
    assert len(projections) == 6 * small_backbone.cfg.model.n_layers
    shapes = {i["name"]: i["shape"] for i in m["inputs"]}
    d = small_backbone.cfg.model.d_model
    assert shapes["hist"] == ["batch", "seq", d] and shapes["prompt"] == ["batch", "prompt_len", d]
    name, i, o = projections[0]
    assert shapes[f"lora_a.{name}"] == ["batch", "rank", i] and shapes[f"lora_b.{name}"] == ["batch", o, "rank"]
    assert m["outputs"] == [{"name": "user", "dtype": "tensor(float)", "shape": ["batch", d]}]
    assert m["backbone_checksum"] == small_backbone.checksum and m["opset"] >= 18
    assert {"model.onnx", "model.int8.onnx"} <= set(m["files"])
    fp32 = m["parity"]["fp32"]
    for case in ("random", "real"):
        assert fp32[case]["max_abs_diff_user"] <= 1e-4 and fp32[case]["top10_identical_fraction"] == 1.0
    assert fp32["mixed_vs_alone_max_abs_diff"] <= 1e-5 and fp32["zero_adapter_vs_base_max_abs_diff"] <= 1e-5
    q = m["parity"]["int8"]
    assert 0.0 < q["random_vs_torch"]["top10_overlap"] <= 1.0
    assert set(q["real_ndcg@10"]) >= {"fp32", "int8", "delta"}
    assert q["real_ndcg@10"]["delta"] == pytest.approx(q["real_ndcg@10"]["int8"] - q["real_ndcg@10"]["fp32"])
    assert m["sizes"]["model.int8.onnx"] < m["sizes"]["model.onnx"]
    assert m["base_graph"] == {"file": "model.base.onnx", "inputs": ["hist", "pad"], "int8_file": "model.base.int8.onnx"}
    assert {"model.base.onnx", "model.base.int8.onnx"} <= set(m["files"])
    for lat in ("base", "base_int8"):
        assert set(m["latency"][lat]) == {"p50_ms_b1", "p50_ms_b32"} and min(m["latency"][lat].values()) > 0
    for case in ("random", "real"):
        assert m["parity"]["base"][case]["max_abs_diff_user"] <= 1e-4 and m["parity"]["base"][case]["top10_identical_fraction"] == 1.0
    qb = m["parity"]["base_int8"]  # measured against the fp32 base graph, not gated
    assert 0.0 < qb["random_vs_torch"]["top10_overlap"] <= 1.0 and 0.0 < qb["real_vs_fp32"]["top10_overlap"] <= 1.0
    assert qb["real_ndcg@10"]["delta"] == pytest.approx(qb["real_ndcg@10"]["int8"] - qb["real_ndcg@10"]["fp32"])
    assert m["sizes"]["model.base.int8.onnx"] < 0.5 * m["sizes"]["model.base.onnx"]
    assert "Gemm" in m["quantization_base"]["op_types"]


def test_adapter_free_batches_run_the_base_graph(serving_dir, ranker, bundles, new_tenant):
    """Zero-shot and head rows alone take the base graph; any adapter tensor in the batch takes the per-row graph."""
    hists = histories(new_tenant, n=12, seed=5)
    per_row = SharedRanker(serving_dir, base_graph=False)
    assert per_row.base_session is None and ranker.base_session is not None
    for names, base in ((["zero-shot"], True), (["zero-shot", "head"], True), (["zero-shot", "lora-r4"], False),
                        (["head", "prompt"], False)):
        rows = [bundles[names[i % len(names)]] for i in range(len(hists))]
        assert set(ranker.build_feed(hists, rows).inputs) == ({"hist", "pad"} if base else set(per_row.input_names))
        before = ranker.base_runs, ranker.runs
        got = ranker.user_vectors(hists, rows)
        assert (ranker.base_runs - before[0], ranker.runs - before[1]) == (int(base), 1), names
        assert np.abs(got - per_row.user_vectors(hists, rows)).max() <= 1e-5, names
    # int8: the quantized base graph for adapter-free batches, the quantized per-row graph otherwise
    q, q_row = SharedRanker(serving_dir, variant="int8"), SharedRanker(serving_dir, variant="int8", base_graph=False)
    assert q.base_session is not None and q_row.base_session is None
    zero = [bundles["zero-shot"]] * len(hists)
    got, ref = q.user_vectors(hists, zero), ranker.user_vectors(hists, zero)
    assert q.base_runs == 1 and 0 < np.abs(got - ref).max() < 0.1  # really quantized, still close to fp32
    assert np.abs(got - ref).max() < 3 * np.abs(q_row.user_vectors(hists, zero) - ref).max() + 1e-6


@pytest.mark.parametrize("name", SHARED)
def test_bundle_through_onnx_equals_the_peft_merged_model(name, ranker, bundles, adapters, small_backbone, new_tenant, tenant_text):
    hists = histories(new_tenant)
    bundle = bundles[name]
    user = ranker.user_vectors(hists, [bundle] * len(hists))
    got = user @ bundle.catalog.T
    want = reference_scores(small_backbone, adapters.get(name), tenant_text, hists)
    assert np.abs(got - want).max() <= 1e-4, name
    assert same_topk(got, want).all(), name  # identical top-10s, up to float ties (parity.TIE_TOL)
    if name != "zero-shot":  # the adapter really changes the ranking (the test is not vacuous)
        base = reference_scores(small_backbone, None, tenant_text, hists)
        assert np.abs(want - base).max() > 1e-3, name


def test_lora_bundles_carry_their_ranks(bundles):
    assert {b.rank for n, b in bundles.items() if n.startswith("lora")} == {4, 8, 16}
    ranks = {n: a.shape[0] for n, (a, _) in bundles["adalora"].lora.items()}  # AdaLoRA: the rank each projection kept
    assert max(ranks.values()) <= 8 and sum(ranks.values()) < 8 * len(bundles["lora-r4"].lora)
    assert bundles["adalora"].manifest["lora_ranks"] == ranks
    assert set(bundles["lora-r16"].lora) == {n for n in bundles["lora-r4"].lora if n.endswith(("q_proj", "v_proj", "fc2"))}
    assert bundles["prompt"].prompt.shape == (3, bundles["prompt"].catalog.shape[1]) and not bundles["prompt"].lora
    assert not bundles["head"].lora and bundles["head"].prompt is None


def test_mixed_tenant_batch_equals_each_row_alone(ranker, bundles, new_tenant):
    hists = histories(new_tenant, n=24, seed=3)
    rows = [bundles[SHARED[i % len(SHARED)]] for i in range(len(hists))]
    mixed = ranker.user_vectors(hists, rows)
    alone = np.concatenate([ranker.user_vectors([h], [b]) for h, b in zip(hists, rows)])
    assert np.abs(mixed - alone).max() <= 1e-5


def test_zero_adapter_equals_the_base_model(ranker, bundles, small_backbone, new_tenant, tenant_text):
    hists = histories(new_tenant, n=16, seed=4)
    zero = bundles["zero-shot"]
    got = ranker.user_vectors(hists, [zero] * len(hists)) @ zero.catalog.T
    assert np.abs(got - reference_scores(small_backbone, None, tenant_text, hists)).max() <= 1e-5
    # In torch the zero LoRA term is exactly 0.0: bit-identical to the plain backbone's serving path
    # (last position only), and equal to its full encoder up to float rounding.
    graph = ServingGraph(small_backbone.model)
    from rec.serving.feed import build_feed

    lora = bundles["lora-r8"]
    feed = build_feed(hists[:4], [lora, zero, zero, zero], graph.projections, small_backbone.cfg.data.max_seq_len)
    model, temp = small_backbone.model, small_backbone.model.temperature
    with torch.no_grad():
        user = graph(*(torch.from_numpy(feed.inputs[n]) for n in graph.input_names))
        cat = torch.from_numpy(zero.catalog)
        hist, pad = cat[torch.from_numpy(feed.rows[1:]).clamp(min=0)], torch.from_numpy(feed.inputs["pad"][1:])
        served = model.encode(hist, pad, last_only=True)[:, -1]
        base = model.user_vector(hist, pad)
    assert torch.equal(user[1:], served / temp)
    assert torch.allclose(user[1:], base / temp, atol=1e-6, rtol=0)


def test_every_sequence_length_and_rank_runs(ranker, bundles, small_backbone):
    from rec.serving.feed import build_feed

    graph = ServingGraph(small_backbone.model)
    max_len = small_backbone.cfg.data.max_seq_len
    rng = np.random.default_rng(0)
    rows = [bundles[n] for n in ("lora-r4", "lora-r8", "lora-r16", "prompt", "zero-shot")]
    for t in range(1, max_len + 1):
        hists = [rng.integers(0, len(b.catalog), t) for b in rows]
        got = ranker.user_vectors(hists, rows)
        feed = build_feed(hists, rows, graph.projections, max_len)
        assert feed.inputs["hist"].shape[1] == t
        with torch.no_grad():
            want = graph(*(torch.from_numpy(feed.inputs[n]) for n in graph.input_names)).numpy()
        assert np.abs(got - want).max() <= 1e-4, t
    for b in rows[:3]:  # each rank alone (no zero-padding of the rank by other rows)
        feed = build_feed([rng.integers(0, 50, 5)], [b], graph.projections, max_len)
        assert feed.inputs[f"lora_a.{graph.projections[0][0]}"].shape[1] == b.rank
        ranker.raw_run(feed.inputs)


def test_longer_history_is_truncated_to_the_model_window(ranker, bundles, small_backbone):
    max_len = small_backbone.cfg.data.max_seq_len
    h = np.arange(max_len + 7) % len(bundles["lora-r8"].catalog)
    b = bundles["lora-r8"]
    assert np.array_equal(ranker.user_vectors([h], [b]), ranker.user_vectors([h[-max_len:]], [b]))


def test_top_k_excludes_and_orders(ranker, bundles, new_tenant):
    b = bundles["lora-r4"]
    h = histories(new_tenant, n=1)[0]
    user = ranker.user_vectors([h], [b])[0]
    rows, scores = ranker.top_k(b, user, 10)
    full = b.catalog @ user
    assert np.array_equal(rows, topk(full[None])[0]) and np.all(np.diff(scores) <= 0)
    rows2, _ = ranker.top_k(b, user, 10, exclude=set(rows[:3].tolist()))
    assert not set(rows2) & set(rows[:3].tolist()) and list(rows2[:7]) == list(rows[3:])


def test_int8_variant_is_close_to_fp32(serving_dir, ranker, bundles, new_tenant):
    q = SharedRanker(serving_dir, variant="int8")
    hists = histories(new_tenant, n=40, seed=5)
    rows = [bundles[SHARED[i % len(SHARED)]] for i in range(len(hists))]
    u32, u8 = ranker.user_vectors(hists, rows), q.user_vectors(hists, rows)
    overlap = np.mean([len(set(topk((b.catalog @ a)[None])[0]) & set(topk((b.catalog @ c)[None])[0])) / 10
                       for a, c, b in zip(u32, u8, rows)])
    assert 0.7 <= overlap <= 1.0
    assert 0 < np.abs(u32 - u8).max() < 0.1  # really quantized, still close


@pytest.mark.realdata
@pytest.mark.slow
def test_real_dataset_parity(ranker, small_backbone, datasets_dir):
    """ml-100k (a slice of users, full catalog with real titles) through ORT vs torch."""
    from rec.config import TenantSource
    from rec.data.loaders import load_source
    from rec.text import encode_items

    ml = load_source(TenantSource(format="movielens-100k", path=str(datasets_dir / "ml-100k"), max_users=48, seed=0))
    data = parity_data_from_tenant(small_backbone, ml, encode_items(list(ml.items.text), small_backbone.cfg.text), max_users=48)
    got = ranker.user_vectors(data.histories, [data.bundle] * len(data.histories)) @ data.bundle.catalog.T
    cat = torch.from_numpy(data.bundle.catalog)
    want = []
    with torch.no_grad():
        for h in data.histories:
            idx = torch.from_numpy(h[-small_backbone.cfg.data.max_seq_len:].astype(np.int64))[None]
            want.append(small_backbone.model.scores(small_backbone.model.user_vector(cat[idx], torch.zeros_like(idx, dtype=torch.bool)), cat))
    want = torch.cat(want).numpy()
    assert got.shape == (48, ml.num_items)
    assert np.abs(got - want).max() <= 1e-4
    assert same_topk(got, want).all()
