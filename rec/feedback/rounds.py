"""The record of every re-adaptation round and guardrail decision, per tenant.

``<root>/readapt/<tenant>/rounds.jsonl``: one JSON line per decision, written with one ``write``
under an exclusive ``flock`` and fsynced (the file's directory too when it is new), so a crash
leaves at most a torn last line, which readers skip. Each line has ``kind`` (``round`` or
``guardrail``), ``decision``, ``finished_unix`` and what the decision was made on.

Every record also counts in the Ray metric ``fewshot_readapt_rounds_total{tenant, decision}``
(scraped as ``ray_fewshot_readapt_rounds_total``, charted by ``cluster/grafana``) when the process
is connected to Ray. Decisions: ``published`` / ``kept`` (a round: the gate passed / failed) and
``rolled_back`` (the guardrail).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any

from rec.data.schema import validate_tenant_id

__all__ = ["DECISIONS", "METRIC_NAMES", "append_record", "last_record", "read_records", "rounds_path"]

#: the metrics this package defines (without Ray's ``ray_`` prefix)
METRIC_NAMES = ("fewshot_readapt_rounds_total",)
DECISIONS = ("published", "kept", "rolled_back")

_counter = None


def rounds_path(root: str | Path, tenant: str) -> Path:
    return Path(root) / "readapt" / validate_tenant_id(tenant) / "rounds.jsonl"


def _count(tenant: str, decision: str) -> None:
    """Count the decision in Ray's metrics (only inside a Ray driver/worker: nothing exports it otherwise)."""
    global _counter
    import ray

    if not ray.is_initialized():
        return
    if _counter is None:
        from ray.util.metrics import Counter

        _counter = Counter("fewshot_readapt_rounds_total", "re-adaptation rounds and guardrail rollbacks by decision",
                           tag_keys=("tenant", "decision"))
    _counter.inc(1.0, tags={"tenant": tenant, "decision": decision})


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
    new = not path.exists()
    line = (json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    if new:
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
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
