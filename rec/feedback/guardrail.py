"""The guardrail: roll a tenant back when its live version clicks less than the one before it.

Click-through of a version = impressions of it (the service's impression records, one per answer,
naming the ``adapter_version`` that answered) that got at least one click quoting their
``request_id``, divided by its impressions. The version served before the current one is the one
whose impressions came last before the current version's first impression. When both have at
least ``min_impressions`` impressions and ``ctr(current) < ctr(previous) - margin``, the tenant is
rolled back to the previous version (``rollback_tenant``) and the decision is recorded
(``rec.feedback.rounds``, decision ``rolled_back``). The guardrail never moves a tenant forward.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rec.config import GuardrailConfig
from rec.feedback.rounds import append_record

__all__ = ["GuardrailDecision", "VersionCTR", "check_guardrail", "ctr_by_version"]


@dataclass(frozen=True)
class VersionCTR:
    version: int
    impressions: int
    clicked: int
    first_seen: int  # position of its first impression in the log

    @property
    def ctr(self) -> float:
        return self.clicked / self.impressions if self.impressions else 0.0


@dataclass(frozen=True)
class GuardrailDecision:
    tenant: str
    rolled_back: bool
    reason: str
    current: VersionCTR | None = None
    previous: VersionCTR | None = None


def _version_number(text: Any) -> int | None:
    s = str(text or "")
    return int(s[1:]) if s.startswith("v") and s[1:].isdigit() else None


def ctr_by_version(records: list[dict[str, Any]]) -> dict[int, VersionCTR]:
    """Per bundle version: impressions (one per ``request_id``), clicked impressions, first position."""
    clicked = {r.get("request_id") for r in records
               if r.get("kind", "event") == "event" and r.get("type") == "click" and r.get("request_id")}
    shown: dict[int, list[int]] = {}  # version -> [impressions, clicked, first position]
    seen: set[str] = set()
    for pos, r in enumerate(records):
        if r.get("kind") != "impression" or not r.get("request_id") or r["request_id"] in seen:
            continue
        version = _version_number(r.get("adapter_version"))
        if version is None:
            continue
        seen.add(r["request_id"])
        row = shown.setdefault(version, [0, 0, pos])
        row[0] += 1
        row[1] += r["request_id"] in clicked
    return {v: VersionCTR(v, n, c, first) for v, (n, c, first) in shown.items()}


def _previous(stats: dict[int, VersionCTR], current: int) -> VersionCTR | None:
    """The version whose impressions came last before the current version's first one (older only)."""
    cur = stats[current]
    before = [s for s in stats.values() if s.version < current and s.first_seen < cur.first_seen]
    return max(before, key=lambda s: s.first_seen) if before else None


def check_guardrail(root: str | Path, tenant: str, current: int, records: list[dict[str, Any]],
                    cfg: GuardrailConfig) -> GuardrailDecision:
    """Judge the tenant's live version ``current`` from its log ``records``; roll back if it fails.

    Raises:
        ArtifactError: the previous version does not load (nothing is changed then).
    """
    stats = ctr_by_version(records)
    if current not in stats:
        return GuardrailDecision(tenant, False, f"v{current} has no logged impressions yet")
    cur, prev = stats[current], _previous(stats, current)
    if prev is None:
        return GuardrailDecision(tenant, False, f"no older version was served before v{current}", cur)
    if min(cur.impressions, prev.impressions) < cfg.min_impressions:
        return GuardrailDecision(tenant, False, f"too few impressions to judge (v{current}: {cur.impressions}, "
                                 f"v{prev.version}: {prev.impressions}; need {cfg.min_impressions} each)", cur, prev)
    if cur.ctr >= prev.ctr - cfg.margin:
        return GuardrailDecision(tenant, False, f"v{current} CTR {cur.ctr:.4f} is within {cfg.margin:g} of "
                                 f"v{prev.version} ({prev.ctr:.4f})", cur, prev)
    from rec.export.publish import rollback_tenant

    rollback_tenant(root, tenant, to=prev.version)
    reason = (f"v{current} CTR {cur.ctr:.4f} over {cur.impressions} impressions < v{prev.version} CTR {prev.ctr:.4f} over "
              f"{prev.impressions} - margin {cfg.margin:g}: rolled back to v{prev.version}")
    append_record(root, tenant, {"kind": "guardrail", "decision": "rolled_back", "from_version": current,
                                 "version": prev.version, "reason": reason, "margin": cfg.margin,
                                 "ctr": {f"v{current}": cur.ctr, f"v{prev.version}": prev.ctr},
                                 "impressions": {f"v{current}": cur.impressions, f"v{prev.version}": prev.impressions}})
    return GuardrailDecision(tenant, True, reason, cur, prev)
