"""Durable per-tenant event log: JSON lines, one file per UTC day, fsynced before a 2xx.

Layout: ``<events_root>/<tenant>/<YYYY-MM-DD>.jsonl`` (Ray Data reads it partitioned by tenant and
day; ``rec.feedback``), plus the legacy single ``events.jsonl`` of older deployments, read first.

Two kinds of record share a tenant's log:

- ``{"kind": "event", "type": "impression"|"click"|"purchase", "item_id", "user_id"?,
  "request_id"?, "timestamp", "received_unix", "idempotency_key"?}``: what a client posts;
- ``{"kind": "impression", "request_id", "items", "positions", "propensities", "z", "model_rank",
  "policy", "model_version", "adapter_version", "user_id"?, "timestamp", "received_unix"}``: what
  the service showed, written by the service itself before it answers (``z``: the shown items'
  standardised model scores; ``model_rank``: their 1-based rank in the model's own order).

Guarantees (docs/serving.md):

- **Durable when acknowledged.** One ``write`` per request carries all its lines (several
  replicas appending to one file never interleave a line), then ``fsync``; a new day file's
  directory entry is fsynced too. On ENOSPC/EIO the file is cut back to its size before the write
  (no torn line is left behind) and the ``OSError`` propagates (the ingress answers 503).
- **Exactly once per idempotency key.** Appends of one tenant are serialised across threads and
  processes (``flock`` on ``<tenant>/.lock``); under that lock the writer reads what other writers
  appended since it last looked, so a key already in today's or yesterday's file is acknowledged
  again without being written twice. Keys are remembered for at least 24 hours.
- **Torn-line safe reads.** A crash can leave at most a torn last line; readers skip it.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = ["AppendResult", "EventLog", "GroupCommitWriter", "LEGACY_LOG_NAME", "append_durably", "day_of"]

LEGACY_LOG_NAME = "events.jsonl"
LOCK_NAME = ".lock"


def day_of(unix: float) -> str:
    """The UTC day (``YYYY-MM-DD``) a record received at ``unix`` seconds is filed under."""
    return datetime.fromtimestamp(unix, tz=timezone.utc).strftime("%Y-%m-%d")


def _encode(records: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, sort_keys=True, separators=(",", ":")) + "\n" for r in records).encode()


def _parse_lines(data: bytes) -> Iterator[dict[str, Any]]:
    for line in data.splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # a torn last line after a crash
            continue
        if isinstance(rec, dict):
            yield rec


@dataclass(frozen=True)
class AppendResult:
    """``accepted``: records durably in the log for this call; ``duplicate``: the key was seen
    before, so nothing new was written and ``accepted`` is what the first call wrote."""

    accepted: int
    duplicate: bool = False


@dataclass
class _KeyIndex:
    """Idempotency keys seen in a tenant's recent day files, read incrementally."""

    offsets: dict[str, int] = field(default_factory=dict)  # day file name -> bytes read
    keys: dict[str, int] = field(default_factory=dict)  # key -> records written under it


def append_durably(path: Path, data: bytes) -> None:
    """Append ``data`` (whole lines) with one ``O_APPEND`` write loop and ``fsync``; a new file's
    directory entry is fsynced too. On an ``OSError`` the file is cut back to its size before the
    write, so no partial line stays behind, and the error propagates."""
    new = not path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    size = os.fstat(fd).st_size
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except OSError:
        try:  # leave no partial line behind: a retry must start on a line boundary
            os.ftruncate(fd, size)
        except OSError:
            pass
        raise
    finally:
        os.close(fd)
    if new:
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


class EventLog:
    """Append-only, day-partitioned event log of every tenant.

    Args:
        tenant_dir: Maps a (validated) tenant id to its folder, e.g. ``ArtifactRoot(...).events_dir``.
        clock: Seconds since the epoch (tests move days with it).
    """

    def __init__(self, tenant_dir: Callable[[str], Path], clock: Callable[[], float] = time.time) -> None:
        self._dir = tenant_dir
        self._clock = clock
        self._lock = threading.Lock()
        self._index: dict[str, _KeyIndex] = {}

    def folder(self, tenant: str) -> Path:
        return Path(self._dir(tenant))

    def day_path(self, tenant: str, day: str) -> Path:
        return self.folder(tenant) / f"{day}.jsonl"

    def files(self, tenant: str) -> list[Path]:
        """The tenant's log files, oldest first (the legacy single file before the day files)."""
        folder = self.folder(tenant)
        if not folder.is_dir():
            return []
        days = sorted(p for p in folder.glob("????-??-??.jsonl") if p.is_file())
        legacy = folder / LEGACY_LOG_NAME
        return ([legacy] if legacy.is_file() else []) + days

    # --- writing --------------------------------------------------------------------------------
    def append(self, tenant: str, records: list[dict[str, Any]], idempotency_key: str | None = None) -> AppendResult:
        """Append ``records`` durably; with a key, at most once per key (see module doc).

        Raises:
            OSError: the disk is full or failing; nothing of this call stays in the log.
        """
        if not records:
            return AppendResult(0)
        if idempotency_key is not None:
            records = [{**r, "idempotency_key": idempotency_key} for r in records]
        with self._locked(tenant) as now:
            if idempotency_key is not None:
                seen = self._refresh_keys(tenant, now).keys.get(idempotency_key)
                if seen is not None:
                    return AppendResult(seen, duplicate=True)
            append_durably(self.day_path(tenant, day_of(now)), _encode(records))
            if idempotency_key is not None:
                self._remember(tenant, day_of(now), idempotency_key, len(records))
        return AppendResult(len(records))

    def append_unkeyed(self, tenant: str, records: list[dict[str, Any]]) -> None:
        """Append records that carry no idempotency key (the service's own impression records,
        de-duplicated by ``request_id`` on read): one locked write + fsync."""
        with self._locked(tenant) as now:
            append_durably(self.day_path(tenant, day_of(now)), _encode(records))

    @contextmanager
    def _locked(self, tenant: str) -> Iterator[float]:
        """Serialise a tenant's appends across threads (lock) and processes (flock); yields now."""
        with self._lock:
            folder = self.folder(tenant)
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield self._clock()
            finally:
                os.close(fd)  # releases the flock

    # --- idempotency keys -------------------------------------------------------------------------
    def _refresh_keys(self, tenant: str, now: float) -> _KeyIndex:
        index = self._index.setdefault(tenant, _KeyIndex())
        recent = {day_of(now), day_of(now - 86400.0)}
        for name in [n for n in index.offsets if n not in recent]:
            del index.offsets[name]  # keys of older days age out with their file
        for day in sorted(recent):
            path = self.day_path(tenant, day)
            if not path.is_file():
                continue
            with open(path, "rb") as fh:
                fh.seek(index.offsets.get(day, 0))
                data = fh.read()
            complete = data[: data.rfind(b"\n") + 1]
            index.offsets[day] = index.offsets.get(day, 0) + len(complete)
            for rec in _parse_lines(complete):
                key = rec.get("idempotency_key")
                if key is not None:
                    index.keys[key] = index.keys.get(key, 0) + 1
        return index

    def _remember(self, tenant: str, day: str, key: str, count: int) -> None:
        index = self._index[tenant]
        index.keys[key] = count
        path = self.day_path(tenant, day)
        index.offsets[day] = path.stat().st_size  # our own lines need no re-reading

    # --- reading --------------------------------------------------------------------------------
    def read(self, tenant: str) -> list[dict[str, Any]]:
        """All complete records of a tenant, oldest file first (torn trailing lines skipped)."""
        return [rec for path in self.files(tenant) for rec in _parse_lines(path.read_bytes())]

    def tail(self, tenant: str, offsets: dict[str, int]) -> list[dict[str, Any]]:
        """Records appended since ``offsets`` (file name -> bytes read), which it advances.

        Only complete lines are consumed, so a line being written is read on the next call.
        """
        out: list[dict[str, Any]] = []
        for path in self.files(tenant):
            start = offsets.get(path.name, 0)
            size = path.stat().st_size
            if size <= start:
                continue
            with open(path, "rb") as fh:
                fh.seek(start)
                data = fh.read(size - start)
            complete = data[: data.rfind(b"\n") + 1]
            offsets[path.name] = start + len(complete)
            out.extend(_parse_lines(complete))
        return out


class GroupCommitWriter:
    """Appends from many concurrent requests, committed together: one write + fsync per tenant
    per flush, so logging every impression costs one fsync per batch of requests, not per request.

    ``submit`` returns a future that completes once the record is durable (or fails with the
    ``OSError`` of its flush). One daemon thread does the writing.
    """

    def __init__(self, log: EventLog, max_batch: int = 512) -> None:
        self._log = log
        self._max_batch = max_batch
        self._pending: list[tuple[str, list[dict[str, Any]], Future]] = []
        self._cv = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="event-log-commit", daemon=True)
        self._thread.start()

    def submit(self, tenant: str, records: list[dict[str, Any]]) -> Future:
        fut: Future = Future()
        with self._cv:
            if self._closed:
                raise RuntimeError("the event log writer is closed")
            self._pending.append((tenant, records, fut))
            self._cv.notify()
        return fut

    def close(self, timeout: float = 10.0) -> None:
        """Flush what is pending and stop the thread."""
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._pending and not self._closed:
                    self._cv.wait()
                if not self._pending and self._closed:
                    return
                batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
            by_tenant: dict[str, list[tuple[list[dict[str, Any]], Future]]] = {}
            for tenant, records, fut in batch:
                by_tenant.setdefault(tenant, []).append((records, fut))
            for tenant, items in by_tenant.items():  # a failing tenant folder fails only its own futures
                try:
                    self._log.append_unkeyed(tenant, [r for records, _ in items for r in records])
                except OSError as e:
                    for _, fut in items:
                        fut.set_exception(e)
                    continue
                for _, fut in items:
                    fut.set_result(None)
