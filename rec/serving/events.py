"""Durable per-tenant feedback log: JSON lines appended with ``O_APPEND`` and fsynced before return.

One ``write`` call per request carries all its lines, so concurrent writers (several ingress
replicas on one volume) never interleave a line. A crash can leave at most a torn last line,
which :func:`read_events` skips.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

__all__ = ["EventLog"]

LOG_NAME = "events.jsonl"


class EventLog:
    """Append-only feedback log under ``<events_root>/<tenant>/events.jsonl``.

    Args:
        tenant_dir: Callable mapping a (validated) tenant id to its folder, e.g.
            ``ArtifactRoot(...).events_dir``.
    """

    def __init__(self, tenant_dir) -> None:  # noqa: ANN001 - Callable[[str], Path]
        self._dir = tenant_dir
        self._lock = threading.Lock()

    def path(self, tenant: str) -> Path:
        return Path(self._dir(tenant)) / LOG_NAME

    def append(self, tenant: str, events: list[dict[str, Any]]) -> int:
        """Append ``events`` durably (written and fsynced when this returns); returns how many.

        Raises:
            OSError: The disk is full or failing; nothing of ``events`` stays in the log.
        """
        if not events:
            return 0
        data = "".join(json.dumps(e, sort_keys=True, separators=(",", ":")) + "\n" for e in events).encode()
        path = self.path(tenant)
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                start = os.fstat(fd).st_size
                try:
                    view = memoryview(data)
                    while view:
                        n = os.write(fd, view)
                        view = view[n:]
                    os.fsync(fd)
                except OSError:
                    # ENOSPC/EIO mid-request: take back what was written, so lines of a request that
                    # was not acknowledged never read back (and a retry never duplicates them).
                    os.ftruncate(fd, start)
                    raise
            finally:
                os.close(fd)
        return len(events)

    def read(self, tenant: str) -> list[dict[str, Any]]:
        """All complete events of a tenant, oldest first (a torn trailing line is skipped)."""
        path = self.path(tenant)
        if not path.is_file():
            return []
        out = []
        for line in path.read_bytes().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out
