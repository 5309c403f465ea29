"""Rank a batch of recommendation requests whose rows may belong to different tenants.

Every warm row (non-empty history) goes through ONE call of the shared model, each row carrying its
own tenant's adapter tensors (``SharedRanker.user_vectors``); top-K then runs on each row's own
catalog. Serve's ``@serve.batch`` hands batches here; the function itself needs no Serve, so it is
tested and benchmarked directly.

Per-row problems (unknown tenant, a tenant whose bundles do not load) become that row's error; the
other rows of the batch are still answered.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from rec.serving.registry import ServedTenant, TenantRegistry, TenantUnavailable, UnknownTenant

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


def _rows_of(bundle: Any, ids: tuple[str, ...]) -> tuple[np.ndarray, list[str]]:
    """Catalog rows of ``ids`` in order, plus the ids the catalog does not have."""
    index = bundle.item_index
    rows, unknown = [], []
    for item in ids:
        row = index.get(item)
        if row is None:
            unknown.append(item)
        else:
            rows.append(row)
    return np.asarray(rows, dtype=np.int64), unknown


def _cold_vector(bundle: Any) -> np.ndarray:
    """User vector for an empty history: the catalog centroid ranks the most typical items first."""
    return bundle.catalog.mean(axis=0).astype(np.float32)


@dataclass
class _Row:
    index: int
    req: RankRequest
    served: ServedTenant
    rows: np.ndarray
    unknown: list[str]
    candidate_rows: np.ndarray | None
    unknown_candidates: list[str]


def _answer(ranker: Any, row: _Row, user: np.ndarray | None, model_version: str) -> dict[str, Any]:
    bundle = row.served.bundle
    cold = user is None
    if cold:
        user = _cold_vector(bundle)
    n = bundle.catalog.shape[0]
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
    method = getattr(bundle, "method", "zero-shot")
    return {
        "tenant": row.req.tenant,
        "items": [{"item_id": str(bundle.item_ids[r]), "score": float(s)} for r, s in zip(top_rows, scores, strict=True)],
        "adapter_version": f"v{row.served.version}",
        "method": method,
        "zero_shot": method == "zero-shot",
        "cold_start": cold,
        "model_version": model_version,
        "unknown_items": row.unknown,
        "warnings": warnings,
    }


def rank_batch(
    ranker: Any, registry: TenantRegistry, requests: list[RankRequest], max_len: int, model_version: str
) -> list[dict[str, Any] | RankError]:
    """Answer a mixed-tenant batch with one shared-model call (see module doc).

    Args:
        ranker: ``rec.export.runtime.SharedRanker`` (``user_vectors``, ``top_k``).
        registry: Resolves each row's tenant to the version it is served from, once per batch, so
            a response never mixes versions.
        requests: The batch.
        max_len: Longest history the model takes; older items are dropped.
        model_version: Reported in every answer.

    Returns:
        One response dict or :class:`RankError` per request, in order.
    """
    out: list[dict[str, Any] | RankError | None] = [None] * len(requests)
    rows: list[_Row] = []
    for i, req in enumerate(requests):
        try:
            served = registry.get(req.tenant)
        except UnknownTenant as e:
            out[i] = RankError(404, e.args[0])
            continue
        except TenantUnavailable as e:
            out[i] = RankError(503, str(e))
            continue
        except ValueError as e:
            out[i] = RankError(422, str(e))
            continue
        hist_rows, unknown = _rows_of(served.bundle, req.history)
        cand_rows, unknown_cand = (None, [])
        if req.candidates is not None:
            cand_rows, unknown_cand = _rows_of(served.bundle, req.candidates)
        rows.append(_Row(i, req, served, hist_rows[-max_len:] if len(hist_rows) else hist_rows, unknown, cand_rows, unknown_cand))
    warm = [r for r in rows if len(r.rows)]
    users: dict[int, np.ndarray] = {}
    if warm:
        try:
            vecs = ranker.user_vectors([r.rows for r in warm], [r.served.bundle for r in warm])
            users = {r.index: vecs[j] for j, r in enumerate(warm)}
        except Exception:  # noqa: BLE001 - isolate the row that breaks the joint call
            log.exception("mixed-tenant batch failed; retrying its rows one by one")
            for r in warm:
                try:
                    users[r.index] = ranker.user_vectors([r.rows], [r.served.bundle])[0]
                except Exception as e:  # noqa: BLE001
                    out[r.index] = RankError(503, f"tenant {r.req.tenant!r} v{r.served.version} cannot be scored: {e}")
    for r in rows:
        if out[r.index] is None:
            out[r.index] = _answer(ranker, r, users.get(r.index), model_version)
    return out  # type: ignore[return-value]
