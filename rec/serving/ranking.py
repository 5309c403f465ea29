"""Rank a batch of recommendation requests whose rows may belong to different tenants.

Every warm row (non-empty history) goes through ONE call of the shared model, each row carrying its
own tenant's adapter tensors (``SharedRanker.user_vectors``); top-K then runs on each row's own
catalog. Bundles are :class:`rec.serving.bundles.TenantBundle`. Serve's ``@serve.batch`` hands batches here; the function itself
needs no Serve, so it is tested and benchmarked directly.

Each answer carries a ``request_id``, the ``policy`` that picked the shown items and, per item, its
``position`` and ``propensity``; the impression record under :data:`IMPRESSION_KEY` is what the
ingress logs before it replies (``rec.serving.events``). With ``feedback``, a tenant's online
prior is blended into its catalog scores and its exploration policy re-ranks the model's top-N
(``rec.serving.live_feedback``).

Per-row problems (unknown tenant, a tenant whose bundles do not load) become that row's error; the
other rows of the batch are still answered.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np

from rec.serving.live_feedback import LiveFeedback, TenantFeedback
from rec.serving.policies import Slate, greedy_slate
from rec.serving.prior_tuning import PROBE_KEY
from rec.serving.registry import ServedTenant, TenantRegistry, TenantUnavailable, UnknownTenant
from rec.serving.runtime import SharedRanker

__all__ = ["IMPRESSION_KEY", "RankRequest", "rank_batch", "RankError"]

#: Key of the impression record in an answer: the ingress logs it and removes it before replying.
IMPRESSION_KEY = "_impression"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RankRequest:
    """One user's request. ``history`` holds the tenant's own item ids, oldest first."""

    tenant: str
    history: tuple[str, ...]
    k: int
    exclude_history: bool = True
    candidates: tuple[str, ...] | None = None
    user_id: str | None = None


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


def _slate(ranker: SharedRanker, row: _Row, user: np.ndarray, exclude: np.ndarray, feedback: TenantFeedback | None,
           now: float, rng: np.random.Generator, probe: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, Slate, np.ndarray]:
    """The shown rows, their scores, the slate (policy, propensities, z) and each shown row's
    1-based model rank among the candidates (what off-policy evaluation of greedy needs); fills
    ``probe`` when the tenant tunes its prior weight (``rec.serving.prior_tuning``)."""
    bundle, k = row.served.bundle, row.req.k
    if feedback is None:
        rows, scores = ranker.top_k(bundle, user, k, set(exclude.tolist()))
        return rows, scores, greedy_slate(rows, scores), np.arange(1, len(rows) + 1)
    n_cand = max(k, feedback.settings.candidates) if feedback.explores else k
    last = _newest_row(row)
    rows, scores = ranker.top_k(bundle, user, n_cand, set(exclude.tolist()), adjust=lambda s: feedback.adjust(s, now, exclude, probe, last))
    slate = feedback.choose(rows, scores, k, rng)
    rank_of = {int(r): j for j, r in enumerate(rows.tolist())}  # candidates come best first
    idx = np.array([rank_of[int(r)] for r in slate.rows.tolist()], np.int64)
    return slate.rows, scores[idx], slate, idx + 1


def _newest_row(row: _Row) -> int | None:
    """Catalog row of the ask's newest history item (the item-to-item prior's source); None if unknown or none."""
    if not row.req.history:
        return None
    rows, unknown = row.served.bundle.item_ids.rows_of([row.req.history[-1]])
    return None if unknown else int(rows[0])


def _answer(ranker: SharedRanker, row: _Row, user: np.ndarray | None, model_version: str,
            feedback: TenantFeedback | None, rng: np.random.Generator) -> dict[str, Any]:
    bundle = row.served.bundle
    cold = user is None
    if cold:
        user = bundle.centroid()
    n = bundle.num_items
    exclude = row.rows if row.req.exclude_history else np.zeros(0, np.int64)
    if row.candidate_rows is not None:
        outside = np.setdiff1d(np.arange(n, dtype=np.int64), row.candidate_rows, assume_unique=False)
        exclude = np.union1d(exclude, outside)
    now = time.time()
    probe: dict[str, Any] = {}
    top_rows, scores, slate, model_rank = _slate(ranker, row, user, exclude, feedback, now, rng, probe)
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
    ids = [bundle.item_ids[r] for r in top_rows.tolist()]
    props = [float(p) for p in slate.propensities.tolist()]
    request_id = uuid.uuid4().hex
    adapter_version = f"v{row.served.version}"
    impression = {
        "kind": "impression", "request_id": request_id, "items": ids, "positions": list(range(1, len(ids) + 1)),
        "propensities": props, "z": [round(float(z), 6) for z in slate.z.tolist()], "model_rank": model_rank.tolist(),
        "policy": slate.policy,
        "model_version": model_version, "adapter_version": adapter_version, "timestamp": now,
    }
    if row.req.user_id is not None:
        impression["user_id"] = row.req.user_id
    if row.req.history:  # the user's newest interaction, as the tenant's app reports it by asking
        impression["history_last"] = row.req.history[-1]
    if probe:
        impression[PROBE_KEY] = probe
    return {
        "tenant": row.req.tenant,
        "request_id": request_id,
        "policy": slate.policy,
        "items": [{"item_id": i, "score": float(s), "position": j + 1, "propensity": p}
                  for j, (i, s, p) in enumerate(zip(ids, scores.tolist(), props, strict=True))],
        "adapter_version": adapter_version,
        "method": method,
        "zero_shot": method == "zero-shot",
        "cold_start": cold,
        "model_version": model_version,
        "unknown_items": row.unknown,
        "warnings": warnings,
        IMPRESSION_KEY: impression,
    }


def rank_batch(
    ranker: SharedRanker, registry: TenantRegistry, requests: list[RankRequest], max_len: int, model_version: str,
    timings: dict[str, float] | None = None, resolved: dict[str, ServedTenant] | None = None,
    feedback: LiveFeedback | None = None, rng: np.random.Generator | None = None,
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
        feedback: Optional; each tenant's live policy and online prior (greedy, no prior without).
        rng: Random generator of the exploration policies (default: a fresh unseeded one).
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
    rng = rng if rng is not None else np.random.default_rng()
    for r in rows:
        if out[r.index] is None:
            fb = feedback.get(r.req.tenant, r.served.bundle) if feedback is not None else None
            out[r.index] = _answer(ranker, r, users.get(r.index), model_version, fb, rng)
    if timings is not None:
        timings.update(resolve_s=t1 - t0, feed_s=model_t.get("feed_s", 0.0), ort_s=model_t.get("ort_s", 0.0),
                       topk_s=time.perf_counter() - t2)
    return out  # type: ignore[return-value]
