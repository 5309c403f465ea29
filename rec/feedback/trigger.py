"""The re-adaptation trigger: which tenants are due, submitted as Ray jobs; the guardrail per tenant.

A tenant is due when no readapt job of it is running and either

- it never had a round and its log holds >= ``min_events`` click/purchase events, or
- >= ``every_events`` new click/purchase events arrived since its last round (or last submission), or
- ``every_minutes`` passed since then and at least one new event arrived, or
- its last submitted job ended without writing a round record (killed mid-round, its node lost,
  or refused for too few users): resubmitted at once, up to ``resubmit_attempts`` times, because
  counting from that submission would lose the round until ``every_events`` more events arrive.

A due tenant's round runs as a Ray job (``JobSubmissionClient.submit_job`` with the ``rec readapt``
entrypoint :func:`readapt_entrypoint` builds); what was submitted is remembered in
``<root>/readapt/<tenant>/trigger.json`` (atomic), so the next pass neither submits twice nor
counts the same events again. One pass (:func:`trigger_pass`) also runs the guardrail
(``rec.feedback.guardrail``) for every tenant. ``rec readapt-trigger --once`` is one pass (what the
``RayCronJob`` runs on Kubernetes); without ``--once`` it loops.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rec.config import ReadaptConfig
from rec.feedback.guardrail import GuardrailDecision, check_guardrail
from rec.feedback.log_reader import INTERACTION_TYPES
from rec.feedback.rounds import last_record
from rec.io.artifacts import atomic_write_json
from rec.serving.events import EventLog
from rec.serving.store import ArtifactRoot

__all__ = ["TriggerDecision", "decide", "interaction_count", "job_hooks", "readapt_entrypoint", "trigger_pass"]

#: submit(tenant) -> submission id; is_running(submission id) -> bool
Submit = Callable[[str], str]
IsRunning = Callable[[str], bool]


@dataclass(frozen=True)
class TriggerDecision:
    tenant: str
    due: bool
    reason: str
    total_events: int
    new_events: int
    resubmit: bool = False  # the last submission's job ended without a round record


def interaction_count(records: list[dict[str, Any]]) -> int:
    """Interactions among a tenant's log records: click/purchase events and asks that name a user
    and a newest history item (what rec.feedback.log_reader reads; repeats are not removed here:
    this sizes a trigger, not a training set)."""
    return sum(1 for r in records
               if (r.get("kind", "event") == "event" and r.get("type") in INTERACTION_TYPES)
               or (r.get("kind") == "impression" and r.get("user_id") and r.get("history_last") is not None))


def _state_path(root: str | Path, tenant: str) -> Path:
    return ArtifactRoot(root).root / "readapt" / tenant / "trigger.json"


def _state(root: str | Path, tenant: str) -> dict[str, Any]:
    try:
        data = json.loads(_state_path(root, tenant).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def decide(root: str | Path, tenant: str, total: int, cfg: ReadaptConfig, now: float, is_running: IsRunning) -> TriggerDecision:
    """Whether ``tenant`` is due (module doc), given its log's click/purchase count ``total``."""
    state = _state(root, tenant)
    if state.get("submission_id") and is_running(state["submission_id"]):
        return TriggerDecision(tenant, False, f"job {state['submission_id']} is still running", total, 0)
    last = last_record(root, tenant, "round") or {}
    lost = _lost_submission(state, last)
    if lost and int(state.get("attempt", 0)) < cfg.resubmit_attempts:
        return TriggerDecision(tenant, True, f"job {state['submission_id']} ended without a round record (killed or refused): "
                                             f"resubmitting ({int(state.get('attempt', 0)) + 1}/{cfg.resubmit_attempts})",
                               total, max(total - int(state.get("events_at_submit", 0)), 0), resubmit=True)
    base_events = max(int(last.get("events_read", 0)), int(state.get("events_at_submit", 0)))
    base_time = max(float(last.get("finished_unix", 0.0)), float(state.get("submitted_unix", 0.0)))
    new = max(total - base_events, 0)
    if not last and not state:
        if total >= cfg.min_events:
            return TriggerDecision(tenant, True, f"first round: {total} events >= min_events {cfg.min_events}", total, new)
        return TriggerDecision(tenant, False, f"{total} events < min_events {cfg.min_events}", total, new)
    if new >= cfg.every_events:
        return TriggerDecision(tenant, True, f"{new} new events >= every_events {cfg.every_events}", total, new)
    minutes = (now - base_time) / 60.0
    if minutes >= cfg.every_minutes and new > 0:
        return TriggerDecision(tenant, True, f"{minutes:.0f} min since the last round >= every_minutes {cfg.every_minutes:g}, "
                                             f"{new} new events", total, new)
    return TriggerDecision(tenant, False, f"{new} new events, {minutes:.0f} min since the last round", total, new)


def _lost_submission(state: dict, last_round: dict) -> bool:
    """The last submitted job is over (the caller checked it is not running) and left no round record after it."""
    return bool(state.get("submission_id")) and float(last_round.get("finished_unix", 0.0)) < float(state.get("submitted_unix", 0.0))


def readapt_entrypoint(tenant: str, root: str | Path, backbone: str | Path, config: str | None = None,
                       overrides: list[str] | None = None) -> str:
    """The shell command a readapt job runs: ``rec readapt`` on the cluster it was submitted to."""
    argv = ["rec", "readapt", "--address", "auto", "--tenant", tenant, "--root", str(root), "--backbone", str(backbone)]
    if config:
        argv += ["--config", str(config)]
    return shlex.join([*argv, *(overrides or [])])


def trigger_pass(root: str | Path, cfg: ReadaptConfig, submit: Submit, is_running: IsRunning,
                 now: float | None = None) -> list[tuple[TriggerDecision, str | None, GuardrailDecision]]:
    """One pass over every live tenant of ``root``: guardrail, then submit a round if due.

    Returns:
        Per tenant: the trigger's decision, the submission id (None when not due) and the
        guardrail's decision.
    """
    now = time.time() if now is None else now
    store = ArtifactRoot(root)
    log = EventLog(store.events_dir)
    out = []
    for tenant in store.tenants():
        records = log.read(tenant)
        guard = check_guardrail(root, tenant, store.current_version(tenant), records, cfg.guardrail)
        decision = decide(root, tenant, interaction_count(records), cfg, now, is_running)
        submission = None
        if decision.due:
            submission = submit(tenant)
            previous = _state(root, tenant)
            atomic_write_json(_state_path(root, tenant), {
                "submission_id": submission, "submitted_unix": now,
                # a resubmission keeps the lost one's event count, so its events are not counted twice
                "events_at_submit": int(previous.get("events_at_submit", 0)) if decision.resubmit else decision.total_events,
                "attempt": int(previous.get("attempt", 0)) + 1 if decision.resubmit else 0, "reason": decision.reason})
        out.append((decision, submission, guard))
    return out


def job_hooks(address: str | None, entrypoint: Callable[[str], str], num_cpus: float) -> tuple[Submit, IsRunning]:
    """``submit``/``is_running`` through the Ray Jobs SDK (``JobSubmissionClient``) at ``address``.

    ``address``: the dashboard's HTTP address or ``auto`` (inside the cluster); None = Ray's default.
    A job is submitted with ``entrypoint(tenant)``, ``entrypoint_num_cpus=num_cpus`` and a
    submission id ``readapt-<tenant>-<unix ms>``.
    """
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(address)

    def submit(tenant: str) -> str:
        return client.submit_job(entrypoint=entrypoint(tenant), submission_id=f"readapt-{tenant}-{int(time.time() * 1000)}",
                                 entrypoint_num_cpus=num_cpus, metadata={"tenant": tenant, "kind": "readapt"})

    def is_running(submission_id: str) -> bool:
        try:
            return not client.get_job_status(submission_id).is_terminal()
        except RuntimeError:  # unknown to this cluster (e.g. the head was replaced): not running here
            return False

    return submit, is_running
