"""Parity and quality checks of exported graphs against torch (used at export time and by tests).

Random inputs cover what real data may not: every tenant kind in one batch (zero-shot, LoRA of
ranks 4/8/16, prompt), history lengths 1..max_len. Real inputs (a tenant's leave-one-out rows)
give the numbers that matter for quality: top-10 agreement and NDCG@10 of int8 vs fp32.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rec.data.schema import Tenant
from rec.export.errors import ExportError
from rec.export.serving_graph import OUTPUT_NAME, ServingGraph
from rec.export.tenant_bundle import _catalog
from rec.serving.bundles import TenantBundle
from rec.serving.feed import Feed, build_feed
from rec.training.checkpoint import LoadedBackbone

__all__ = [
    "ParityData",
    "parity_data_from_tenant",
    "compare_users",
    "same_topk",
    "merge_stats",
    "random_bundles",
    "random_batch",
    "run_parity",
    "chunks",
    "ndcg_at_k",
    "gate",
    "structural_checks",
    "latency_ms",
    "PARITY_ATOL",
    "TOPK",
]

PARITY_ATOL = 1e-4
TOPK = 10


@dataclass
class ParityData:
    """Real inputs for parity/quality checks: one tenant's zero-shot bundle, histories, next items."""

    bundle: TenantBundle
    histories: list[np.ndarray]
    targets: np.ndarray


def parity_data_from_tenant(
    loaded: LoadedBackbone, tenant: Tenant, text_emb: np.ndarray, max_users: int = 256, seed: int = 0
) -> ParityData:
    """Leave-one-out rows of up to ``max_users`` seeded users: history = all but last, target = last."""
    rows = [u for u in range(tenant.num_users) if len(tenant.sequence(u)) >= 2]
    rng = np.random.default_rng(seed)
    if len(rows) > max_users:
        rows = sorted(rng.choice(rows, max_users, replace=False).tolist())
    if not rows:
        raise ExportError(f"tenant {tenant.name!r} has no user with 2+ interactions: nothing to check parity on")
    seqs = [tenant.sequence(u) for u in rows]
    catalog = _catalog(loaded.model, loaded, tenant, text_emb)
    bundle = TenantBundle(tenant.name, [str(i) for i in tenant.items.ids], catalog, {}, None, "zero-shot", {})
    return ParityData(bundle, [s[:-1] for s in seqs], np.array([s[-1] for s in seqs], np.int64))


# --- comparison ----------------------------------------------------------------------------------
def topk(scores: np.ndarray, k: int = TOPK) -> np.ndarray:
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


#: Reference scores closer than this are a float tie: two computations of the same model (ONNX per
#: head vs torch SDPA) may order such items either way (a 1e-6 tie swapped in the export tests).
TIE_TOL = 1e-5


def same_topk(got: np.ndarray, ref: np.ndarray, k: int = TOPK, tol: float = TIE_TOL) -> np.ndarray:
    """Per row of ``[B, N]`` scores: the same top-``k`` in the same order, except swaps of items whose
    ``ref`` scores tie within ``tol``."""
    tg, tr = topk(got, k), topk(ref, k)
    rows = np.arange(len(ref))[:, None]
    return np.all((tg == tr) | (np.abs(ref[rows, tg] - ref[rows, tr]) <= tol), axis=1)


def compare_users(got: np.ndarray, ref: np.ndarray, catalogs: list[np.ndarray]) -> dict[str, float]:
    """Differences of user vectors and of full-catalog scores, top-10 agreement per row."""
    score_diff, same, overlap = 0.0, 0, 0.0
    for g, r, cat in zip(got, ref, catalogs):
        sg, sr = cat @ g, cat @ r
        score_diff = max(score_diff, float(np.abs(sg - sr).max()))
        tg, tr = topk(sg[None])[0], topk(sr[None])[0]
        same += int(same_topk(sg[None], sr[None])[0])
        overlap += len(set(tg) & set(tr)) / len(tr)
    n = len(got)
    return {
        "rows": n,
        "max_abs_diff_user": float(np.abs(got - ref).max()),
        "max_abs_diff_scores": score_diff,
        "top10_identical_fraction": same / n,
        "top10_overlap": overlap / n,
    }


def merge_stats(parts: list[dict[str, float]]) -> dict[str, float]:
    n = sum(p["rows"] for p in parts)
    return {
        "rows": n,
        "max_abs_diff_user": max(p["max_abs_diff_user"] for p in parts),
        "max_abs_diff_scores": max(p["max_abs_diff_scores"] for p in parts),
        "top10_identical_fraction": sum(p["top10_identical_fraction"] * p["rows"] for p in parts) / n,
        "top10_overlap": sum(p["top10_overlap"] * p["rows"] for p in parts) / n,
    }


def torch_users(graph: ServingGraph, feed: Feed) -> np.ndarray:
    with torch.no_grad():
        return graph(*(torch.from_numpy(feed.inputs[n]) for n in graph.input_names)).numpy()


def random_bundles(loaded: LoadedBackbone, graph: ServingGraph, rng: np.random.Generator, n_items: int = 300) -> list[TenantBundle]:
    """Zero-shot, LoRA ranks 4/8/16 (16 on half the projections) and a prompt tenant, random weights."""
    model = loaded.model
    d = model.d_model
    with torch.no_grad():
        if model.adaptor is not None:
            text = torch.from_numpy(rng.standard_normal((n_items, model.adaptor.bias.shape[0])).astype(np.float32))
            catalog = model.item_representations(text).numpy()
        else:
            catalog = model.id_emb.weight[: min(n_items, model.id_emb.num_embeddings)].numpy().copy()

    def lora(rank: int, every: int = 1) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        out = {}
        for j, (name, i, o) in enumerate(graph.projections):
            if j % every == 0:
                a = rng.standard_normal((rank, i)).astype(np.float32) / np.sqrt(i)
                b = rng.standard_normal((o, rank)).astype(np.float32) * 0.1
                out[name] = (a, b)
        return out

    ids = [str(i) for i in range(len(catalog))]
    prompt = (rng.standard_normal((3, d)) * 0.5).astype(np.float32)
    return [
        TenantBundle("random-zero", ids, catalog, {}, None, "zero-shot", {}),
        TenantBundle("random-r4", ids, catalog, lora(4), None, "lora", {}),
        TenantBundle("random-r8", ids, catalog, lora(8), None, "lora", {}),
        TenantBundle("random-r16", ids, catalog, lora(16, every=2), None, "lora", {}),
        TenantBundle("random-prompt", ids, catalog, {}, prompt, "prompt", {}),
    ]


def random_batch(bundles: list[TenantBundle], max_len: int, rng: np.random.Generator, rows: int = 20,
                 lengths: int | None = None) -> tuple[list[np.ndarray], list[TenantBundle]]:
    """Rows cycling through ``bundles``; history lengths 1..max_len (both ends included) or all ``lengths``."""
    if lengths is not None:
        lengths = [lengths] * rows
    else:
        lengths = ([1, max_len] + rng.integers(1, max_len + 1, max(rows - 2, 0)).tolist())[:rows]
    bs = [bundles[r % len(bundles)] for r in range(rows)]
    hists = [rng.integers(0, len(b.catalog), n) for b, n in zip(bs, lengths)]
    return hists, bs


def _own_inputs(session, feed: Feed) -> dict[str, np.ndarray]:  # noqa: ANN001
    return {i.name: feed.inputs[i.name] for i in session.get_inputs()}


def run_parity(session, graph: ServingGraph, max_len: int, batches, ref_session=None) -> dict[str, float]:
    """ORT (``session``) vs torch ``graph`` or vs another ORT session, over (histories, bundles) batches.

    Each session is fed the inputs it declares (the base graph takes ``hist`` and ``pad`` only: give
    it batches of adapter-free rows).
    """
    parts = []
    for hists, bs in batches:
        feed = build_feed(hists, bs, graph.projections, max_len)
        got = session.run([OUTPUT_NAME], _own_inputs(session, feed))[0]
        ref = torch_users(graph, feed) if ref_session is None else ref_session.run([OUTPUT_NAME], _own_inputs(ref_session, feed))[0]
        parts.append(compare_users(got, ref, [b.catalog for b in bs]))
    return merge_stats(parts)


def chunks(data: ParityData, size: int = 64):
    for s in range(0, len(data.histories), size):
        h = data.histories[s : s + size]
        yield h, [data.bundle] * len(h)


def ndcg_at_k(session, graph: ServingGraph, max_len: int, data: ParityData) -> float:
    from rec.metrics import metrics_from_ranks, rank_of_target

    ranks = []
    for s, (hists, bs) in enumerate(chunks(data)):
        feed = build_feed(hists, bs, graph.projections, max_len)
        user = session.run([OUTPUT_NAME], _own_inputs(session, feed))[0] if session is not None else torch_users(graph, feed)
        ranks.append(rank_of_target(user @ data.bundle.catalog.T, data.targets[s * 64 : s * 64 + len(hists)]))
    return float(metrics_from_ranks(np.concatenate(ranks), ks=[TOPK])[f"ndcg@{TOPK}"])


def gate(stats: dict[str, float], what: str) -> None:
    if stats["max_abs_diff_user"] > PARITY_ATOL or stats["max_abs_diff_scores"] > PARITY_ATOL * 10 or stats["top10_overlap"] < 1.0:
        raise ExportError(
            f"{what}: ONNX Runtime output differs from torch (max |diff| {stats['max_abs_diff_user']:.2e}, "
            f"top-10 overlap {stats['top10_overlap']:.3f}); refusing to publish this export"
        )


def structural_checks(sess, graph: ServingGraph, max_len: int, bundles: list[TenantBundle],
                       loaded: LoadedBackbone) -> dict[str, Any]:
    """Mixed batch == each row alone; zero adapter == base backbone; every length 1..max_len runs."""
    rng = np.random.default_rng(1)
    hists, bs = random_batch(bundles, max_len, rng, rows=len(bundles) * 2)
    mixed = sess.run([OUTPUT_NAME], build_feed(hists, bs, graph.projections, max_len).inputs)[0]
    alone = np.concatenate([sess.run([OUTPUT_NAME], build_feed([h], [b], graph.projections, max_len).inputs)[0]
                            for h, b in zip(hists, bs)])
    zero = [i for i, b in enumerate(bs) if not b.lora and b.prompt is None]
    feed = build_feed([hists[i] for i in zero], [bs[i] for i in zero], graph.projections, max_len)
    with torch.no_grad():
        cat = torch.from_numpy(bs[zero[0]].catalog)
        base = loaded.model.user_vector(cat[torch.from_numpy(feed.rows).clamp(min=0)], torch.from_numpy(feed.inputs["pad"]))
        base = (base / loaded.model.temperature).numpy()
    zero_diff = float(np.abs(mixed[zero] - base).max())
    lens = []
    for n in range(1, max_len + 1):
        out = sess.run([OUTPUT_NAME], build_feed([rng.integers(0, 50, n)], [bundles[1]], graph.projections, max_len).inputs)[0]
        lens.append(bool(np.isfinite(out).all()))
    res = {
        "mixed_vs_alone_max_abs_diff": float(np.abs(mixed - alone).max()),
        "zero_adapter_vs_base_max_abs_diff": zero_diff,
        "seq_lengths_run": [1, max_len] if all(lens) else [],
    }
    if res["mixed_vs_alone_max_abs_diff"] > PARITY_ATOL or zero_diff > PARITY_ATOL or not all(lens):
        raise ExportError(f"serving model failed its structural checks {res}; refusing to publish this export")
    return res




def latency_ms(session, feeds: dict[int, dict[str, np.ndarray]], reps: int = 20, output: str = OUTPUT_NAME) -> dict[str, float]:
    """Median ``session.run`` time in ms per batch size (one warm-up run each)."""
    out = {}
    for b, feed in feeds.items():
        session.run([output], feed)
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            session.run([output], feed)
            times.append(time.perf_counter() - t0)
        out[f"p50_ms_b{b}"] = float(np.median(times) * 1e3)
    return out
