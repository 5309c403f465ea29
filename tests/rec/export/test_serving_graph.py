"""The serving path's own computation: last position only, additive-mask attention, slim int8 graph.

``Backbone.encode(..., last_only=True)`` is what the shared ONNX graph runs; it must give the last
row of the full encoder (the training path, SDPA with a boolean mask) for every padding pattern:
left-padded, fully padded and prompt rows.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F

from rec.export.serving_graph import BaseGraph, ServingGraph
from rec.models.layers import CausalSelfAttention, additive_mask_attention, attention_bias, attention_mask
from rec.serving.feed import build_feed


def _batch(model, lengths: list[int], T: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    hist = torch.randn(len(lengths), T, model.d_model, generator=g)
    pad = torch.ones(len(lengths), T, dtype=torch.bool)
    for r, n in enumerate(lengths):
        pad[r, T - n:] = False
    return hist, pad


def test_last_only_equals_the_last_row_of_the_full_encoder(small_backbone):
    model = small_backbone.model.eval()
    T = small_backbone.cfg.data.max_seq_len
    lengths = [0, 1, 2, T // 2, T - 1, T]  # fully padded, left-padded, full window
    hist, pad = _batch(model, lengths, T)
    prompt = torch.randn(len(lengths), 3, model.d_model)
    prompt_pad = torch.tensor([[True, True, True], [False, False, False], [True, False, False]] * 2)
    with torch.no_grad():
        for kwargs in ({}, {"prompt": prompt, "prompt_pad": prompt_pad}):
            full = model.encode(hist, pad, **kwargs)[:, -1]
            last = model.encode(hist, pad, last_only=True, **kwargs)
            assert last.shape == (len(lengths), 1, model.d_model)
            assert torch.allclose(last[:, 0], full, atol=1e-5, rtol=0), (last[:, 0] - full).abs().max()
    for n in range(1, T + 1):  # every history length alone
        h, p = _batch(model, [n], n, seed=n)
        with torch.no_grad():
            assert torch.allclose(model.encode(h, p, last_only=True)[:, 0], model.encode(h, p)[:, -1], atol=1e-5, rtol=0), n


def test_base_graph_equals_the_backbone_and_leaves_it_untouched(small_backbone):
    """The adapter-free graph (2-D, per-head projections) = ``user_vector / temperature``; the backbone keeps its Linears."""
    model = small_backbone.model.eval()
    T = small_backbone.cfg.data.max_seq_len
    hist, pad = _batch(model, [0, 1, 2, T // 2, T], T, seed=3)
    base = BaseGraph(model).eval()
    with torch.no_grad():
        got = base(hist, pad)
        want = model.user_vector(hist, pad) / model.temperature
    assert got.shape == (5, model.d_model) and torch.allclose(got, want, atol=1e-5, rtol=0), (got - want).abs().max()
    assert base.input_names == ["hist", "pad"]
    assert all(type(m) is torch.nn.Linear for n, m in model.blocks.named_modules() if n.endswith(("_proj", "fc1", "fc2")))


def test_additive_mask_attention_matches_sdpa_with_the_boolean_mask():
    g = torch.Generator().manual_seed(0)
    pad = torch.zeros(4, 9, dtype=torch.bool)
    pad[0, :9] = True  # fully padded row: every query keeps itself
    pad[1, :5] = True
    mask = attention_mask(pad)
    for scale in (1.0, 6.0):  # 6: logits of one row spread beyond the softmax floor (60) of the additive path
        q, k = (torch.randn(4, 2, 9, 8, generator=g) * scale for _ in range(2))
        v = torch.randn(4, 2, 9, 8, generator=g)
        want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        got = additive_mask_attention(q, k, v, attention_bias(mask))
        assert torch.allclose(got, want, atol=1e-5, rtol=1e-5), (got - want).abs().max()
        last = additive_mask_attention(q[:, :, -1:], k, v, attention_bias(mask)[:, :, -1:])
        assert torch.allclose(last, want[:, :, -1:], atol=1e-5, rtol=1e-5)
    bias = attention_bias(mask)
    assert bias.dtype == torch.float32 and torch.isfinite(bias).all()
    assert (bias[mask] == 0).all() and (bias[~mask] == torch.finfo(torch.float32).min).all()


def test_training_keeps_sdpa_with_dropout():
    """The explicit float-mask path is inference only: in train mode attention stays SDPA, dropout included."""
    attn = CausalSelfAttention(16, 2, dropout=0.3).train()
    x = torch.randn(2, 5, 16)
    mask = attention_mask(torch.zeros(2, 5, dtype=torch.bool))
    torch.manual_seed(0)
    with_bool = attn(x, mask)
    torch.manual_seed(0)
    with_float = attn(x, attention_bias(mask))
    assert torch.equal(with_bool, with_float)  # same kernel, same dropout draws
    with torch.no_grad():
        attn.eval()
        assert not torch.allclose(attn(x, mask), with_bool, atol=1e-3)  # dropout was really on
        assert torch.allclose(attn(x, mask), attn(x, attention_bias(mask)), atol=1e-5)


def test_empty_histories_through_onnx(ranker, bundles, small_backbone):
    """Rows with no history (all padding) next to real ones: ORT == torch graph == backbone."""
    graph = ServingGraph(small_backbone.model)
    max_len = small_backbone.cfg.data.max_seq_len
    rows = [bundles[n] for n in ("zero-shot", "lora-r8", "prompt", "zero-shot")]
    hists = [np.zeros(0, np.int64), np.arange(4), np.zeros(0, np.int64), np.arange(7)]
    got = ranker.user_vectors(hists, rows)
    feed = build_feed(hists, rows, graph.projections, max_len)
    with torch.no_grad():
        want = graph(*(torch.from_numpy(feed.inputs[n]) for n in graph.input_names)).numpy()
        cat = torch.from_numpy(rows[0].catalog)
        idx = torch.from_numpy(feed.rows)
        base = small_backbone.model.user_vector(cat[idx.clamp(min=0)], idx < 0) / small_backbone.model.temperature
    assert np.isfinite(got).all() and np.abs(got - want).max() <= 1e-5
    assert np.abs(got[[0, 3]] - base.numpy()[[0, 3]]).max() <= 1e-5  # zero adapters = the base model


def test_exported_graphs_are_slim_and_have_no_nan_guard(serving_dir, small_backbone):
    fp32 = onnx.load(str(serving_dir / "model.onnx"))
    int8 = onnx.load(str(serving_dir / "model.int8.onnx"))
    ops = {n.op_type for n in fp32.graph.node}
    assert "IsNaN" not in ops and "Softmax" in ops  # attention exports without the NaN guard
    for m in (fp32, int8):
        g = m.graph
        assert not g.value_info and not g.metadata_props and not any(n.metadata_props or n.name for n in g.node)
        assert [i.name for i in g.input][:4] == ["hist", "pad", "prompt", "prompt_pad"] and g.output[0].name == "user"
        used = {i for n in g.node for i in n.input}
        assert all(w.name in used for w in g.initializer)
    n_proj = 6 * small_backbone.cfg.model.n_layers
    q_ops = [n.op_type for n in int8.graph.node]
    assert q_ops.count("MatMulInteger") == n_proj  # every base projection; per-row LoRA products stay fp32
    assert "DequantizeLinear" in q_ops  # the position table (Gather) is int8 too
    base_nodes = onnx.load(str(serving_dir / "model.base.onnx")).graph.node
    base = [n.op_type for n in base_nodes]
    base8 = [n.op_type for n in onnx.load(str(serving_dir / "model.base.int8.onnx")).graph.node]
    # per-head projections: no 4-D head split/merge transposes, only each head's k^T (fused into its matmul by ORT)
    assert all(list(n.attribute[0].ints) == [0, 2, 1] for n in base_nodes if n.op_type == "Transpose")
    assert base.count("Gemm") == base8.count("MatMulInteger") and "Gemm" not in base8  # the base graph's Gemms quantized too


@pytest.mark.parametrize("B, T", [(1, 1), (3, 17)])
def test_serving_graph_output_shape(small_backbone, bundles, B, T):
    graph = ServingGraph(small_backbone.model)
    rng = np.random.default_rng(B)
    rows = [bundles["lora-r4"]] * B
    feed = build_feed([rng.integers(0, 20, T) for _ in range(B)], rows, graph.projections, small_backbone.cfg.data.max_seq_len)
    with torch.no_grad():
        out = graph(*(torch.from_numpy(feed.inputs[n]) for n in graph.input_names))
    assert out.shape == (B, small_backbone.model.d_model)
