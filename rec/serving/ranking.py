"""Rank a batch of recommendation requests whose rows may belong to different tenants.

Every warm row (non-empty history) goes through ONE call of the shared model, each row carrying its
own tenant's adapter tensors (``SharedRanker.user_vectors``); top-K then runs on each row's own
catalog. Bundles are :class:`rec.serving.bundles.TenantBundle`. Serve's ``@serve.batch`` hands batches here; the function itself
needs no Serve, so it is tested and benchmarked directly.

Per-row problems (unknown tenant, a tenant whose bundles do not load) become that row's error; the
other rows of the batch are still answered.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from rec.serving.registry import ServedTenant, TenantRegistry, TenantUnavailable, UnknownTenant
from rec.serving.runtime import SharedRanker

__all__ = ["RankRequest", "rank_batch", "RankError"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RankRequest:
    """One user's request. ``history`` holds the tenant's own item ids, oldest first."""

    tenant: str
    history: tuple[str, ...]
    k: int
    exclude_history: bool = True
    candidates: tuple[str, ...] | None = None


@dataclass(frozen=True)
class RankError:
    """A row that could not be answered; ``status`` is the HTTP status the ingress returns."""

    status: int
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"error": {"status": self.status, "detail": self.detail}}


@dataclass
class _Row:
    index: int
    req: RankRequest
    served: ServedTenant
    rows: np.ndarray
    unknown: list[str]
    candidate_rows: np.ndarray | None
    unknown_candidates: list[str]


def _answer(ranker: SharedRanker, row: _Row, user: np.ndarray | None, model_version: str) -> dict[str, Any]:
    bundle = row.served.bundle
    cold = user is None
    if cold:
        user = bundle.centroid()
    n = bundle.num_items
    exclude = row.rows if row.req.exclude_history else np.zeros(0, np.int64)
    if row.candidate_rows is not None:
        outside = np.setdiff1d(np.arange(n, dtype=np.int64), row.candidate_rows, assume_unique=False)
        exclude = np.union1d(exclude, outside)
    top_rows, scores = ranker.top_k(bundle, user, row.req.k, set(exclude.tolist()))
    warnings = []
    if row.unknown:
        warnings.append(f"{len(row.unknown)} history item id(s) are not in tenant {row.req.tenant!r}'s catalog and were ignored")
    if row.unknown_candidates:
        warnings.append(f"{len(row.unknown_candidates)} candidate id(s) are not in the catalog and were ignored")
    if cold:
        warnings.append("no known history items: cold-start ranking (catalog centroid)")
    if row.served.fallback_reason:
        warnings.append(f"serving fallback version v{row.served.version}: {row.served.fallback_reason}")
    method = bundle.method
    return {
        "tenant": row.req.tenant,
        "items": [{"item_id": bundle.item_ids[r], "score": float(s)} for r, s in zip(top_rows.tolist(), scores.tolist(), strict=True)],
        "adapter_version": f"v{row.served.version}",
        "method": method,
        "zero_shot": method == "zero-shot",
        "cold_start": cold,
        "model_version": model_version,
        "unknown_items": row.unknown,
        "warnings": warnings,
    }


def rank_batch(
    ranker: SharedRanker, registry: TenantRegistry, requests: list[RankRequest], max_len: int, model_version: str,
    timings: dict[str, float] | None = None, resolved: dict[str, ServedTenant] | None = None,
) -> list[dict[str, Any] | RankError]:
    """Answer a mixed-tenant batch with one shared-model call (see module doc).

    Args:
        ranker: The shared model (``user_vectors``, ``top_k``).
        registry: Resolves each row's tenant to the version it is served from, once per batch, so
            a response never mixes versions.
        requests: The batch.
        max_len: Longest history the model takes; older items are dropped.
        model_version: Reported in every answer.
        resolved: Optional; the served version of every tenant in the batch, already resolved
            (``TenantRegistry.cached``), so no row touches the registry.
        timings: Optional; receives seconds spent resolving tenants and history ids
            (``resolve_s``), building the feed (``feed_s``), in ``session.run`` (``ort_s``) and
            ranking + building the answers (``topk_s``).

    Returns:
        One response dict or :class:`RankError` per request, in order.
    """
    t0 = time.perf_counter()
    out: list[dict[str, Any] | RankError | None] = [None] * len(requests)
    rows: list[_Row] = []
    for i, req in enumerate(requests):
        try:
            served = resolved[req.tenant] if resolved is not None else registry.get(req.tenant)
        except UnknownTenant as e:
            out[i] = RankError(404, e.args[0])
            continue
        except TenantUnavailable as e:
            out[i] = RankError(503, str(e))
            continue
        except ValueError as e:
            out[i] = RankError(422, str(e))
            continue
        hist_rows, unknown = served.bundle.rows_of(req.history)
        cand_rows, unknown_cand = (None, [])
        if req.candidates is not None:
            cand_rows, unknown_cand = served.bundle.rows_of(req.candidates)
        rows.append(_Row(i, req, served, hist_rows[-max_len:] if len(hist_rows) else hist_rows, unknown, cand_rows, unknown_cand))
    warm = [r for r in rows if len(r.rows)]
    users: dict[int, np.ndarray] = {}
    model_t: dict[str, float] = {}
    t1 = time.perf_counter()
    if warm:
        try:
            vecs = ranker.user_vectors([r.rows for r in warm], [r.served.bundle for r in warm], timings=model_t)
            users = {r.index: vecs[j] for j, r in enumerate(warm)}
        except Exception:  # noqa: BLE001 - isolate the row that breaks the joint call
            log.exception("mixed-tenant batch failed; retrying its rows one by one")
            for r in warm:
                try:
                    users[r.index] = ranker.user_vectors([r.rows], [r.served.bundle])[0]
                except Exception as e:  # noqa: BLE001
                    out[r.index] = RankError(503, f"tenant {r.req.tenant!r} v{r.served.version} cannot be scored: {e}")
    t2 = time.perf_counter()
    for r in rows:
        if out[r.index] is None:
            out[r.index] = _answer(ranker, r, users.get(r.index), model_version)
    if timings is not None:
        timings.update(resolve_s=t1 - t0, feed_s=model_t.get("feed_s", 0.0), ort_s=model_t.get("ort_s", 0.0),
                       topk_s=time.perf_counter() - t2)
    return out  # type: ignore[return-value]
