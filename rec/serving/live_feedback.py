"""What a replica learns from a tenant's live log: exploration policy state and the online priors.

The event log is the single source of truth. Every replica tails each active tenant's log
(:meth:`EventLog.tail`) every ``poll_interval_s`` on a background thread and applies the new
records to its in-memory :class:`TenantFeedback`:

- a service ``impression`` record -> the policy counts the shown slate (``observe_impression``)
  and remembers it by ``request_id``; with ``count_history`` the online prior counts the
  request's newest history item (``history_last``: what the user did last, reported by the app
  when it asks; off by default, as it moves every tenant's scores from its first request), once per user, so a tenant's popularity is learned from every request and not
  only from clicks on what was shown;
- with ``transition_weight`` or ``transition_weight_grid``, each user's consecutive counted
  interactions ``a -> b`` feed the item-to-item prior (``rec.serving.online_transitions``); an
  ask then also gets ``transition_weight * log1p(successor counts of its newest history item)``;
- with ``prior_weight_grid``, an ask's ``prior_probe`` and the user's next ask tune the prior's
  weight (``rec.serving.prior_tuning``: each grid weight judged on what the user did next), or the
  (prior, transition) weight pair with ``transition_weight_grid``;
- a client ``click``/``purchase`` -> the online prior counts the item; when it names the
  ``request_id`` of a remembered impression that showed the item, the policy counts a click on
  that slate position's features (``observe_click``).

Because every replica applies the same log in the same order, replicas converge to the same
state without talking to each other, and a restarted replica rebuilds it by replaying the log.
A tenant's settings live in ``<tenant folder>/feedback.json`` (:class:`FeedbackSettings`,
written with :func:`write_feedback_settings` or by hand); a changed file is picked up on the next poll.

The rank path never waits for this: :meth:`LiveFeedback.get` returns the state built so far, or
None (rank greedily, no prior) while a tenant's first replay is still running.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rec.io.artifacts import atomic_write_json
from rec.serving.bundles import TenantBundle
from rec.serving.events import EventLog
from rec.serving.online_prior import OnlinePrior
from rec.serving.online_transitions import OnlineTransitions
from rec.serving.prior_tuning import PROBE_KEY, PriorWeightTuner, probe_top_rows
from rec.serving.policies import POLICIES, PolicyConfig, PolicyState, Slate, choose

__all__ = ["FEEDBACK_SETTINGS_FILE", "FeedbackSettings", "LiveFeedback", "TenantFeedback", "read_feedback_settings",
           "write_feedback_settings"]

log = logging.getLogger(__name__)

FEEDBACK_SETTINGS_FILE = "feedback.json"


class FeedbackSettings(BaseModel):
    """A tenant's exploration policy and online prior (``<tenant folder>/feedback.json``)."""

    model_config = ConfigDict(extra="forbid")

    policy: Literal[POLICIES] = Field("greedy", description="how the shown k are picked from the model's candidates")  # type: ignore[valid-type]
    candidates: int = Field(50, ge=1, le=1000, description="model top-N a non-greedy policy re-ranks")
    epsilon: float = Field(0.1, ge=0.0, le=1.0)
    prior_strength: float = Field(10.0, gt=0.0, description="thompson: pseudo-impressions behind the model's prior")
    ridge: float = Field(1.0, gt=0.0, description="lints/linucb: prior precision of the regression")
    noise: float = Field(0.25, gt=0.0, description="lints: posterior scale")
    alpha: float = Field(0.5, ge=0.0, description="linucb: optimism bonus width")
    score_weight: float = Field(0.05, gt=0.0, description="lints/linucb: prior weight on the model score")
    propensity_samples: int = Field(64, ge=1, le=4096)
    prior_weight: float = Field(0.5, ge=0.0, description="online popularity prior's weight against the model (0: off)")
    prior_half_life_s: float = Field(7 * 86400.0, gt=0.0, description="half-life of an event in the online prior")
    count_history: bool = Field(
        False, description="the online prior also counts each request's newest history item (an interaction the app "
                          "reports by asking); an ask repeating the user's last counted item (after a click on it) adds nothing")
    prior_weight_grid: list[float] = Field(
        default_factory=list, description="tune the prior weight per tenant over these weights (>= 2, each >= 0) on users' next "
                                          "interactions (rec.serving.prior_tuning); empty: prior_weight stays fixed")
    transition_weight: float = Field(
        0.0, ge=0.0, description="online item-to-item prior: weight of log1p(how often users took item i right after the ask's "
                                 "newest history item), learned from users' consecutive interactions in the log (0: off)")
    transition_weight_grid: list[float] = Field(
        default_factory=list, description="tune (prior_weight, transition_weight) together over every pair of prior_weight_grid "
                                          "x this grid (needs prior_weight_grid); empty: transition_weight stays fixed")
    prior_probe_k: int = Field(10, ge=1, le=100, description="prior tuning: a weight scores a hit when its top-k held the user's next item")
    prior_min_evidence: int = Field(30, ge=1, description="prior tuning: judged interactions before the weight may leave prior_weight")

    @field_validator("prior_weight_grid", "transition_weight_grid")
    @classmethod
    def _grid(cls, v: list[float], info) -> list[float]:  # noqa: ANN001 - pydantic's ValidationInfo
        if v and (len(v) < 2 or min(v) < 0 or len(set(v)) != len(v)):
            raise ValueError(f"{info.field_name} needs >= 2 distinct weights, each >= 0 (e.g. [0, 0.5, 1, 2, 4]); got {v}")
        return v

    @model_validator(mode="after")
    def _pairs_need_the_prior_grid(self) -> FeedbackSettings:
        if self.transition_weight_grid and not self.prior_weight_grid:
            raise ValueError("transition_weight_grid is tuned in pairs with prior_weight_grid: set prior_weight_grid too "
                             "(e.g. [0, 0.5, 1, 2, 4, 8])")
        return self

    @property
    def learns_transitions(self) -> bool:
        return self.transition_weight > 0 or bool(self.transition_weight_grid)

    def tuning_grid(self) -> list:
        """The tuner's grid: prior weights, or (prior, transition) pairs with ``transition_weight_grid``."""
        if not self.transition_weight_grid:
            return list(self.prior_weight_grid)
        return [(wp, wt) for wt in self.transition_weight_grid for wp in self.prior_weight_grid]

    def policy_config(self) -> PolicyConfig:
        return PolicyConfig(self.policy, self.epsilon, self.prior_strength, self.ridge, self.noise, self.alpha,
                            self.score_weight, self.propensity_samples)


def read_feedback_settings(tenant_dir: Path) -> FeedbackSettings:
    """The tenant's settings, defaults when it has none.

    Raises:
        ValueError: the file exists but is not valid (the message names the bad key).
    """
    path = Path(tenant_dir) / FEEDBACK_SETTINGS_FILE
    if not path.is_file():
        return FeedbackSettings()
    try:
        return FeedbackSettings.model_validate(json.loads(path.read_text()))
    except (json.JSONDecodeError, ValidationError) as e:
        raise ValueError(f"{path}: invalid feedback settings: {e}") from None


def write_feedback_settings(tenant_dir: Path, settings: FeedbackSettings) -> Path:
    """Write atomically; replicas pick it up on their next poll."""
    path = Path(tenant_dir) / FEEDBACK_SETTINGS_FILE
    atomic_write_json(path, settings.model_dump())
    return path


class TenantFeedback:
    """One tenant's live policy state and online prior (see module doc); thread-safe."""

    def __init__(self, tenant: str, bundle: TenantBundle, settings: FeedbackSettings, max_remembered: int = 100_000) -> None:
        self.tenant = tenant
        self.settings = settings
        self.policy = settings.policy_config()
        self.item_ids = bundle.item_ids
        self.state = PolicyState(bundle.num_items, int(bundle.catalog.shape[1]))
        self.prior = OnlinePrior(bundle.num_items, settings.prior_half_life_s, settings.prior_weight)
        self.transitions = OnlineTransitions(bundle.num_items, max_remembered) if settings.learns_transitions else None
        self.transition_weight = settings.transition_weight
        default = (settings.prior_weight, settings.transition_weight) if settings.transition_weight_grid else settings.prior_weight
        self.tuner = (PriorWeightTuner(settings.tuning_grid(), default, settings.prior_min_evidence,
                                       max_users=max_remembered) if settings.prior_weight_grid else None)
        self.offsets: dict[str, int] = {}
        self.applied = 0
        self._vectors = bundle
        self._shown: OrderedDict[str, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._last_counted: OrderedDict[str, str] = OrderedDict()  # user -> newest item the prior counted
        self._max_remembered = max_remembered
        self._lock = threading.Lock()

    def same_catalog(self, bundle: TenantBundle) -> bool:
        return bundle.item_ids is self.item_ids or (
            bundle.num_items == len(self.item_ids) and bundle.item_ids.tolist() == self.item_ids.tolist())

    def apply(self, records: list[dict[str, Any]]) -> None:
        """Learn from log records in log order (impressions, clicks, purchases)."""
        with self._lock:
            for rec in records:
                try:
                    self._apply_one(rec)
                except (KeyError, TypeError, ValueError) as e:  # a malformed line never stops learning
                    log.warning("tenant %s: skipped a log record (%s: %s)", self.tenant, type(e).__name__, e)
            self.applied += len(records)

    def _apply_one(self, rec: dict[str, Any]) -> None:
        if rec.get("kind") == "impression":
            rows, unknown = self.item_ids.rows_of(rec["items"])
            if unknown or len(rows) != len(rec["z"]):
                return  # a slate of another catalog version
            z = np.asarray(rec["z"], np.float64)
            self.state.observe_impression(rows, z, self._vectors_of(rows))
            self._shown[rec["request_id"]] = (rows, z)
            if len(self._shown) > self._max_remembered:
                self._shown.popitem(last=False)
            if self.tuner is not None and rec.get("user_id") is not None:
                last = rec.get("history_last")
                self.tuner.observe_ask(str(rec["user_id"]), None if last is None else str(last), rec.get(PROBE_KEY))
                self.prior.weight, tuned_transition = self.tuner.entry
                if self.settings.transition_weight_grid:
                    self.transition_weight = tuned_transition
            if self.settings.count_history and rec.get("history_last") is not None:
                self._count(str(rec["history_last"]), rec, from_request=True)
            return
        if rec.get("type") not in ("click", "purchase"):
            return
        rows = self._count(str(rec["item_id"]), rec, from_request=False)
        if rows is None:
            return
        slate = self._shown.get(rec.get("request_id") or "")
        if slate is not None:
            hit = slate[0] == rows[0]
            if hit.any():
                self.state.observe_click(slate[0][hit], slate[1][hit], self._vectors_of(slate[0][hit]))

    def _count(self, item: str, rec: dict[str, Any], from_request: bool) -> np.ndarray | None:
        """Count ``item`` in the online prior; its rows (None if unknown). An ask whose newest history
        item is the user's last counted one repeats it and is not counted (rec.feedback.log_reader
        reads the log the same way)."""
        rows, unknown = self.item_ids.rows_of([item])
        if unknown:
            return None
        user = rec.get("user_id")
        prev = self._last_counted.get(user) if user is not None else None
        if from_request and prev == item:
            return rows
        if self.transitions is not None and prev is not None and prev != item:  # the user's consecutive interactions
            prev_rows, unknown_prev = self.item_ids.rows_of([prev])
            if not unknown_prev:
                self.transitions.observe(int(prev_rows[0]), int(rows[0]))
        if user is not None:
            self._last_counted[user] = item
            self._last_counted.move_to_end(user)
            if len(self._last_counted) > self._max_remembered:
                self._last_counted.popitem(last=False)
        self.prior.observe(rows, float(rec.get("timestamp") or rec.get("received_unix") or 0.0))
        return rows

    def _vectors_of(self, rows: np.ndarray) -> np.ndarray:
        b = self._vectors
        vec = b.catalog[rows].astype(np.float64)
        return vec * b.catalog_scale[rows, None] if b.catalog_scale is not None else vec

    @property
    def explores(self) -> bool:
        return self.policy.name != "greedy"

    def adjust(self, scores: np.ndarray, now: float, exclude: np.ndarray | None = None,
               probe: dict[str, Any] | None = None, last_row: int | None = None) -> np.ndarray:
        """Full-catalog model scores with the online priors blended in (unchanged without events):
        ``z(scores) + prior_weight * log1p(counts) + transition_weight * log1p(successors of last_row)``.

        Args:
            last_row: Catalog row of the ask's newest history item (the item-to-item prior's source);
                None = no transition term.
            probe: With prior tuning on, filled with each grid entry's top rows (as item ids;
                ``exclude`` rows left out) for the impression record.
        """
        if self.prior.total == 0 or (self.prior.weight == 0 and self.transition_weight == 0 and self.tuner is None):
            return scores
        with self._lock:
            z, pop = self.prior.parts(scores, np.arange(len(scores)), now)
            succ = self.transitions.dense(last_row) if self.transitions is not None and last_row is not None else None
            if self.tuner is not None and probe is not None:
                tops = probe_top_rows(z, pop, self.tuner.weights, self.settings.prior_probe_k, exclude, succ)
                probe.update(weights=self.tuner.weights, top=[[self.item_ids[r] for r in t.tolist()] for t in tops])
            use_succ = succ is not None and self.transition_weight > 0
            if self.prior.weight == 0 and not use_succ:
                return scores
            blended = z + self.prior.weight * pop
            return blended + self.transition_weight * succ if use_succ else blended

    def choose(self, rows: np.ndarray, scores: np.ndarray, k: int, rng: np.random.Generator) -> Slate:
        vectors = self._vectors_of(rows) if self.policy.name in ("lints", "linucb") else None
        with self._lock:
            return choose(rows, scores, vectors, k, self.policy, self.state, rng)


class LiveFeedback:
    """Per-replica registry of :class:`TenantFeedback`, kept current by one background thread.

    Args:
        tenant_dir: Maps a tenant id to its artifact folder (where ``feedback.json`` lives).
        log: The tenants' event log.
        poll_interval_s: How often active tenants' logs and settings are re-read.
        idle_s: A tenant not ranked for this long is dropped (rebuilt by replay when it returns).
    """

    def __init__(self, tenant_dir, log: EventLog, poll_interval_s: float = 1.0, idle_s: float = 3600.0) -> None:  # noqa: ANN001
        self._tenant_dir = tenant_dir
        self._log = log
        self._poll = max(poll_interval_s, 0.05)
        self._idle_s = idle_s
        self._tenants: dict[str, TenantFeedback] = {}
        self._wanted: dict[str, tuple[TenantBundle, float]] = {}
        self._stamps: dict[str, float | None] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="live-feedback", daemon=True)
        self._thread.start()

    def get(self, tenant: str, bundle: TenantBundle) -> TenantFeedback | None:
        """The tenant's state if built for this catalog, else None (and a build is scheduled)."""
        fb = self._tenants.get(tenant)
        with self._lock:
            self._wanted[tenant] = (bundle, time.monotonic())
        if fb is not None and (fb._vectors is bundle or fb.same_catalog(bundle)):
            fb._vectors = bundle
            return fb
        self._wake.set()
        return None

    def refresh(self) -> None:
        """One poll: build new tenants (replaying their log), apply new records, reload settings."""
        with self._lock:
            wanted = dict(self._wanted)
        now = time.monotonic()
        for tenant, (bundle, seen) in wanted.items():
            if now - seen > self._idle_s:
                with self._lock:
                    self._wanted.pop(tenant, None)
                self._tenants.pop(tenant, None)
                continue
            try:
                self._refresh_tenant(tenant, bundle)
            except (OSError, ValueError) as e:
                log.warning("tenant %s: live feedback not refreshed: %s", tenant, e)

    def _refresh_tenant(self, tenant: str, bundle: TenantBundle) -> None:
        settings_path = Path(self._tenant_dir(tenant)) / FEEDBACK_SETTINGS_FILE
        stamp = settings_path.stat().st_mtime if settings_path.is_file() else None
        fb = self._tenants.get(tenant)
        if fb is None or stamp != self._stamps.get(tenant) or not fb.same_catalog(bundle):
            fb = TenantFeedback(tenant, bundle, read_feedback_settings(Path(self._tenant_dir(tenant))))
            self._stamps[tenant] = stamp
        fb.apply(self._log.tail(tenant, fb.offsets))
        self._tenants[tenant] = fb

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
            except Exception:  # noqa: BLE001 - the loop must outlive any one bad poll
                log.exception("live feedback poll failed")
            self._wake.wait(self._poll)
            self._wake.clear()
