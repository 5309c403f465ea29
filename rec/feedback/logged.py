"""A tenant's event log as logged slates: impressions joined to the clicks that name them.

The service writes one ``impression`` record per answer (items, per-position propensities, each
item's model rank; ``rec.serving.events``) and clients post ``click``/``purchase`` events that quote
the answer's ``request_id``. :func:`logged_slates` joins them into ``(n, k)`` arrays for
:func:`rec.feedback.ope.estimate_slates`, and :func:`target_propensities` says how likely a
candidate policy is to put each logged item where it was shown, from the logged model ranks alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["LoggedSlates", "logged_slates", "parse_target", "rank_probability", "target_propensities"]

REWARD_TYPES = ("click", "purchase")


@dataclass(frozen=True)
class LoggedSlates:
    """``n`` logged slates of width ``k`` (shorter slates are padded with propensity 1, reward 0
    and model rank 0, which no target policy puts anywhere, so padding adds nothing)."""

    rewards: np.ndarray  # (n, k) 1 where the shown item got a click/purchase quoting the answer
    propensities: np.ndarray  # (n, k) logging policy's P(item at position)
    model_ranks: np.ndarray  # (n, k) 1-based rank of the item in the model's order (0 = padding)
    candidates: np.ndarray  # (n,) how many candidates the logging policy chose from (max rank seen)
    policies: tuple[str, ...]  # logging policies present
    slate_policy: np.ndarray  # (n,) the logging policy of each slate (str)

    @property
    def n(self) -> int:
        return int(self.rewards.shape[0])


def logged_slates(records: list[dict[str, Any]], candidates: int | None = None) -> LoggedSlates:
    """Join impressions and the click/purchase events that quote their ``request_id``.

    Args:
        records: A tenant's log records, any order (``EventLog.read``).
        candidates: The logging policy's candidate count (the tenant's ``candidates`` setting),
            used by epsilon-type targets; default: the largest model rank logged.

    Raises:
        ValueError: the log holds no impression records with propensities.
    """
    clicked: dict[str, set[str]] = {}
    for r in records:
        if r.get("kind", "event") == "event" and r.get("type") in REWARD_TYPES and r.get("request_id"):
            clicked.setdefault(r["request_id"], set()).add(str(r.get("item_id")))
    imps = [r for r in records if r.get("kind") == "impression" and r.get("propensities") and r.get("model_rank")]
    if not imps:
        raise ValueError("the log has no impression records with propensities: serve with log_impressions on first")
    seen: set[str] = set()
    imps = [r for r in imps if not (r["request_id"] in seen or seen.add(r["request_id"]))]  # one per answer
    k = max(len(r["items"]) for r in imps)
    rewards, props, ranks = np.zeros((len(imps), k)), np.ones((len(imps), k)), np.zeros((len(imps), k), np.int64)
    for i, r in enumerate(imps):
        m = len(r["items"])
        hits = clicked.get(r["request_id"], set())
        rewards[i, :m] = [item in hits for item in r["items"]]
        props[i, :m] = r["propensities"]
        ranks[i, :m] = r["model_rank"]
    n_cand = np.full(len(imps), candidates if candidates else int(ranks.max()))
    slate_policy = np.array([str(r.get("policy", "?")) for r in imps], dtype=object)
    return LoggedSlates(rewards, props, ranks, n_cand, tuple(sorted(set(slate_policy))), slate_policy)


_TARGET = re.compile(r"^(greedy|epsilon:(0(\.\d+)?|1(\.0+)?))$")


def parse_target(text: str) -> tuple[str, float]:
    """``greedy`` or ``epsilon:<e>`` -> ``(name, epsilon)``.

    Raises:
        ValueError: anything else (the message lists the forms).
    """
    if not _TARGET.match(text):
        raise ValueError(f"target policy {text!r} is not one of: greedy, epsilon:<0..1> (e.g. epsilon:0.1)")
    name, _, eps = text.partition(":")
    return name, float(eps or 0.0)


def rank_probability(target: str, positions: np.ndarray, ranks: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """P(the target policy puts the model's rank-``r`` candidate at position ``j``), elementwise.

    Greedy shows the model's rank-``j`` item at position ``j``; ``epsilon:e`` does that with
    probability ``1 - e`` and otherwise a uniform draw of the candidates (``e / candidates``).
    Rank 0 (padding) gets 0. Arguments broadcast against each other.
    """
    name, eps = parse_target(target)
    ranks = np.asarray(ranks)
    greedy = (ranks == positions).astype(np.float64)
    if name == "greedy":
        return greedy
    return np.where(ranks > 0, (1 - eps) * greedy + eps / candidates, 0.0)


def target_propensities(slates: LoggedSlates, target: str) -> np.ndarray:
    """``(n, k)`` P(the target policy shows each logged item at its logged position)
    (:func:`rank_probability` of the logged model ranks)."""
    positions = np.arange(1, slates.model_ranks.shape[1] + 1)[None, :]
    return rank_probability(target, positions, slates.model_ranks, slates.candidates[:, None])
