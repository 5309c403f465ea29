"""The record of every re-adaptation round and guardrail decision, per tenant.

``<root>/readapt/<tenant>/rounds.jsonl``: one JSON line per decision, written with one ``write``
under an exclusive ``flock`` and fsynced (the file's directory too when it is new), so a crash
leaves at most a torn last line, which readers skip. Each line has ``kind`` (``round`` or
``guardrail``), ``decision``, ``finished_unix`` and what the decision was made on.

Every record also counts in the Ray metric ``fewshot_readapt_rounds_total{tenant, decision}``
(scraped as ``ray_fewshot_readapt_rounds_total``, charted by ``cluster/grafana``) when the process
is connected to Ray; a detached actor (``fewshot/fewshot-readapt-metrics``, no CPU) holds the
counter, so counts outlive the short readapt jobs that make them. Decisions: ``published`` / ``kept`` (a round: the gate passed / failed) and
``rolled_back`` (the guardrail).
"""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path
from typing import Any

from rec.data.schema import validate_tenant_id
from rec.serving.events import append_durably

__all__ = ["DECISIONS", "METRIC_NAMES", "append_record", "last_record", "read_records", "rounds_path"]

#: the metrics this package defines (without Ray's ``ray_`` prefix)
METRIC_NAMES = ("fewshot_readapt_rounds_total",)
DECISIONS = ("published", "kept", "rolled_back")

#: the detached actor that holds the counter (a readapt job's driver exits seconds after counting:
#: a counter of its own would vanish before Ray's agent exported it)
METRICS_ACTOR = "fewshot-readapt-metrics"
METRICS_NAMESPACE = "fewshot"


def rounds_path(root: str | Path, tenant: str) -> Path:
    return Path(root) / "readapt" / validate_tenant_id(tenant) / "rounds.jsonl"


def _metrics_actor_class():  # noqa: ANN202 - a Ray actor class, built on first use (no Ray at import)
    import ray

    @ray.remote(num_cpus=0)
    class ReadaptMetrics:
        def __init__(self) -> None:
            from ray.util.metrics import Counter

            self.rounds = Counter("fewshot_readapt_rounds_total", "re-adaptation rounds and guardrail rollbacks by decision",
                                  tag_keys=("tenant", "decision"))

        def count(self, tenant: str, decision: str) -> None:
            self.rounds.inc(1.0, tags={"tenant": tenant, "decision": decision})

    return ReadaptMetrics


def _count(tenant: str, decision: str) -> None:
    """Count the decision in Ray's metrics when this process is connected to Ray (else nothing exports it)."""
    import ray
    from ray.exceptions import GetTimeoutError, RayError

    if not ray.is_initialized():
        return
    actor = _metrics_actor_class().options(name=METRICS_ACTOR, namespace=METRICS_NAMESPACE, lifetime="detached",
                                           get_if_exists=True).remote()
    try:
        ray.get(actor.count.remote(tenant, decision), timeout=60)
    except (GetTimeoutError, RayError) as e:  # the record is written; a lost count must not fail the round
        warnings.warn(f"fewshot_readapt_rounds_total not counted for {tenant}/{decision}: {e}", RuntimeWarning, stacklevel=2)


def append_record(root: str | Path, tenant: str, record: dict[str, Any]) -> dict[str, Any]:
    """Append ``record`` (with ``kind`` and ``decision``) durably; returns it with ``finished_unix``.

    Raises:
        ValueError: ``decision`` is not one of :data:`DECISIONS`.
    """
    if record.get("decision") not in DECISIONS:
        raise ValueError(f"decision {record.get('decision')!r} is not one of {DECISIONS}")
    record = {**record, "tenant": tenant, "finished_unix": time.time()}
    path = rounds_path(root, tenant)
    path.parent.mkdir(parents=True, exist_ok=True)
    append_durably(path, (json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n").encode())
    _count(tenant, record["decision"])
    return record


def read_records(root: str | Path, tenant: str, kind: str | None = None) -> list[dict[str, Any]]:
    """The tenant's records, oldest first (torn lines skipped); only ``kind`` ones when given."""
    path = rounds_path(root, tenant)
    if not path.is_file():
        return []
    out = []
    for line in path.read_bytes().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and (kind is None or rec.get("kind") == kind):
            out.append(rec)
    return out


def last_record(root: str | Path, tenant: str, kind: str) -> dict[str, Any] | None:
    recs = read_records(root, tenant, kind)
    return recs[-1] if recs else None
