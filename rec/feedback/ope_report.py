"""Off-policy estimates of a candidate policy over a served tenant's event log (``rec ope``).

The tenant's log (``rec.serving.events``: the service's impression records and the clicks that
quote their ``request_id``) is joined into logged slates (:func:`rec.feedback.logged.logged_slates`);
the candidate policy's propensities come from the logged model ranks
(:func:`rec.feedback.logged.target_propensities`), and each estimator of
:func:`rec.feedback.ope.estimate_slates` gives the candidate's expected clicks per slate with a
``1 - alpha`` interval. Next to the estimates the report shows what was actually earned: per
logging policy, its slates, clicks per slate (its on-policy value, the number an estimate of the
same policy should reproduce) and click-through (share of slates with a click).

DR's reward model: the click rate of the model's rank-``r`` candidate wherever it was shown,
cross-fitted (fitted on one half of the slates, applied to the other, and back), so the residual
correction stays unbiased; ranks never logged get that half's overall rate. Its value under the
target at position ``j`` is ``sum_r P(target puts rank r at j) * rate[r]``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rec.feedback.logged import LoggedSlates, logged_slates, parse_target, rank_probability, target_propensities
from rec.feedback.ope import ESTIMATORS, Estimate, estimate_slates
from rec.serving.events import EventLog
from rec.serving.store import ArtifactRoot

__all__ = ["LoggingPolicyStats", "NoLoggedSlates", "OpeReport", "cross_fitted_rank_model", "ope_report",
           "read_tenant_log"]


class NoLoggedSlates(ValueError):
    """The tenant is unknown, or its log holds nothing to estimate from."""


@dataclass(frozen=True)
class LoggingPolicyStats:
    """What one logging policy actually earned on its own slates."""

    policy: str
    slates: int
    clicks_per_slate: float  # its on-policy value: what an estimate of this very policy should give
    ctr: float  # share of its slates with at least one click


@dataclass(frozen=True)
class OpeReport:
    tenant: str
    target: str
    alpha: float
    logged_slates: int
    candidates: int
    logging: list[LoggingPolicyStats]
    estimates: list[Estimate]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_tenant_log(root: str | Path, tenant: str) -> list[dict[str, Any]]:
    """The tenant's log records (``EventLog.read``: legacy file, then day files; torn lines skipped).

    Raises:
        NoLoggedSlates: the tenant is neither published under ``root`` nor has a log, or its log is empty.
        ValueError: ``tenant`` is not a valid tenant id.
    """
    store = ArtifactRoot(root)
    log = EventLog(store.events_dir)
    files = log.files(tenant)
    if not files and store.current_version(tenant) is None:
        known = sorted(set(store.tenants()) | {p.name for p in (store.root / "events").glob("*") if p.is_dir()})
        raise NoLoggedSlates(f"tenant {tenant!r} is neither published nor logged under {store.root} "
                             f"(tenants there: {known or 'none'}): check --root and --tenant")
    records = log.read(tenant)
    if not records:
        raise NoLoggedSlates(f"tenant {tenant!r} has an empty event log under {store.root / 'events'}: "
                             "serve it (impressions are logged per answer) and post click events first")
    return records


def cross_fitted_rank_model(slates: LoggedSlates, target: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """DR's reward model (module doc): ``(reward_hat, value_hat)``, both ``(n, k)``."""
    n, k = slates.rewards.shape
    max_rank = int(max(slates.model_ranks.max(), slates.candidates.max()))
    ranks = np.arange(1, max_rank + 1)  # (R,)
    positions = np.arange(1, k + 1)
    # (n, k, R): P(target puts rank r at position j) for every slate's candidate count
    probs = rank_probability(target, positions[None, :, None], ranks[None, None, :], slates.candidates[:, None, None])
    probs = probs * (ranks[None, None, :] <= slates.candidates[:, None, None])
    reward_hat, value_hat = np.zeros((n, k)), np.zeros((n, k))
    half = np.random.default_rng(seed).permutation(n) < n // 2
    for fit, apply in ((half, ~half), (~half, half)):
        if not apply.any():
            continue
        rate = _rank_click_rate(slates.rewards[fit], slates.model_ranks[fit], max_rank)
        reward_hat[apply] = np.where(slates.model_ranks[apply] > 0, rate[slates.model_ranks[apply] - 1], 0.0)
        value_hat[apply] = probs[apply] @ rate
    return reward_hat, value_hat


def _rank_click_rate(rewards: np.ndarray, ranks: np.ndarray, max_rank: int) -> np.ndarray:
    """``(max_rank,)`` click rate of the rank-``r`` candidate, shrunk by one pseudo-slate to the pooled rate."""
    real = ranks > 0
    pooled = float(rewards[real].mean()) if real.any() else 0.0
    shown = np.bincount(ranks[real] - 1, minlength=max_rank)[:max_rank]
    clicks = np.bincount(ranks[real] - 1, weights=rewards[real], minlength=max_rank)[:max_rank]
    return (clicks + pooled) / (shown + 1.0)


def _logging_stats(slates: LoggedSlates) -> list[LoggingPolicyStats]:
    out = []
    for policy in slates.policies:
        mine = slates.slate_policy == policy
        clicks = slates.rewards[mine].sum(axis=1)
        out.append(LoggingPolicyStats(policy, int(mine.sum()), float(clicks.mean()), float((clicks > 0).mean())))
    return out


def ope_report(records: list[dict[str, Any]], tenant: str, target: str, estimators: tuple[str, ...] = ESTIMATORS,
               alpha: float = 0.05, candidates: int | None = None, seed: int = 0) -> OpeReport:
    """Estimate ``target``'s expected clicks per slate from a tenant's log ``records``.

    Args:
        records: The tenant's log (:func:`read_tenant_log`).
        target: ``greedy`` or ``epsilon:<e>`` (:func:`rec.feedback.logged.parse_target`).
        estimators: Any of ``ips``, ``snips``, ``dr``.
        alpha: Each interval covers ``1 - alpha``.
        candidates: The model top-N an epsilon-type target draws from (the tenant's ``candidates``
            setting); default: the largest model rank logged.
        seed: The cross-fitting split of DR's reward model.

    Raises:
        ValueError: an unknown target or estimator, ``alpha`` outside (0, 1), or a log without
            impression records that carry propensities.
    """
    parse_target(target)
    unknown = [e for e in estimators if e not in ESTIMATORS]
    if unknown:
        raise ValueError(f"unknown estimator(s) {unknown}: choose from {', '.join(ESTIMATORS)}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), e.g. 0.05 for 95% intervals; got {alpha}")
    if candidates is not None and candidates < 1:
        raise ValueError(f"candidates must be >= 1 (the model top-N the target draws from), got {candidates}")
    try:
        slates = logged_slates(records, candidates)
    except ValueError as e:
        raise NoLoggedSlates(f"tenant {tenant!r}: {e}") from None
    q = target_propensities(slates, target)
    results = []
    for name in estimators:
        extra = cross_fitted_rank_model(slates, target, seed) if name == "dr" else (None, None)
        results.append(estimate_slates(name, slates.rewards, slates.propensities, q, *extra, alpha=alpha))
    return OpeReport(tenant, target, alpha, slates.n, int(slates.candidates.max()), _logging_stats(slates), results)
