"""A tenant's event log read with Ray Data: who clicked or bought what, in order.

The log (``rec.serving.events``) is day-partitioned JSON lines, ``<events>/<tenant>/<YYYY-MM-DD>.jsonl``.
Ray Data reads the day files in parallel (``ray.data.read_text`` + a JSON parse per line, not
``read_json``: pyarrow's JSON reader fails the whole read on the torn last line a crash may leave,
and on the two record shapes sharing a file). Each line is projected to a few columns; the
driver then joins clicks whose ``user_id`` is missing to the user of the impression their
``request_id`` quotes, and builds per-user chronological sequences.

What counts as an interaction: ``click`` and ``purchase`` events, and the newest history item of
each answered request that names a user (the impression record's ``history_last``: the app
reports what the user did last when it asks, whether or not it was shown). An ask whose newest
history item is the user's previous interaction (a click, then an ask whose history ends with it;
the same ask twice) adds nothing; repeated clicks or purchases of one item all count. The shown items themselves (``impression`` events posted by clients, the records' ``items``)
are exposure, not interest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rec.data.schema import DataError

__all__ = ["INTERACTION_TYPES", "LoggedInteractions", "NoEvents", "read_interactions"]

INTERACTION_TYPES = ("click", "purchase")
_COLUMNS = ("kind", "item_id", "user_id", "request_id", "t", "received", "day")


class NoEvents(DataError):
    """The tenant's log holds no click/purchase events (or no log at all)."""


@dataclass(frozen=True)
class LoggedInteractions:
    """A tenant's click/purchase events as per-user sequences (oldest first).

    Attributes:
        users: ``(U,)`` user ids.
        sequences: ``U`` lists of item ids (external, as logged), chronological.
        times: ``U`` lists of event times (client ``timestamp``, else the time received).
        events: Click/purchase records read.
        from_requests: Interactions taken from requests' newest history items (after removing repeats).
        reported: ``U`` lists of flags, True where an ask reported the interaction (its
            ``history_last``), alone or right after the click on it: what the user did whether or
            not the serving model showed it (the gate picks its targets among these).
        joined: Of them, records whose user came from the impression their ``request_id`` names.
        unattributed: Records with neither a user id nor a known ``request_id`` (dropped).
        last_received_unix: Newest ``received_unix`` among the records read (0 if none).
        days: The day files read.
    """

    users: np.ndarray
    sequences: list[list[str]]
    times: list[list[float]]
    events: int
    from_requests: int
    joined: int
    unattributed: int
    last_received_unix: float
    days: list[str] = field(default_factory=list)
    reported: list[list[bool]] = field(default_factory=list)

    @property
    def num_users(self) -> int:
        return len(self.users)


def _project_line(text: str, path: str) -> list[dict[str, Any]]:
    """One log line -> rows of the columns the join needs (none for torn lines and other records)."""
    try:
        rec = json.loads(text)
    except json.JSONDecodeError:  # a torn last line after a crash
        return []
    if not isinstance(rec, dict):
        return []
    kind = rec.get("kind", "event")
    if kind == "event" and rec.get("type") in INTERACTION_TYPES and rec.get("item_id") is not None:
        kind = "interaction"
    elif kind != "impression" or not rec.get("user_id") or not rec.get("request_id"):
        return []  # only impressions that can name a user matter to the join
    received = float(rec.get("received_unix") or 0.0)
    t = rec.get("timestamp")
    row = {
        "kind": kind,
        "item_id": str(rec.get("item_id") or ""),
        "user_id": str(rec.get("user_id") or ""),
        "request_id": str(rec.get("request_id") or ""),
        "t": float(t) if isinstance(t, (int, float)) else received,
        "received": received,
        "day": Path(path).stem,
    }
    if kind == "impression" and rec.get("history_last") is not None:
        return [row, {**row, "kind": "history", "item_id": str(rec["history_last"])}]
    return [row]


def _project_batch(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    rows = [r for t, p in zip(batch["text"], batch["path"]) for r in _project_line(t, p)]
    return {c: np.asarray([r[c] for r in rows], dtype=np.float64 if c in ("t", "received") else object) for c in _COLUMNS}


def _read_rows(files: list[Path]) -> dict[str, np.ndarray]:
    """The projected columns of every file, read by Ray Data (a running Ray, or a local one it starts)."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    # Half a CPU per task: parsing is light, and a readapt job's driver already holds a CPU of a small cluster.
    ds = ray.data.read_text([str(p) for p in files], include_paths=True, ray_remote_args={"num_cpus": 0.5})
    ds = ds.map_batches(_project_batch, batch_format="numpy", num_cpus=0.5)
    parts = list(ds.iter_batches(batch_format="numpy", batch_size=None))
    return {c: np.concatenate([p[c] for p in parts]) if parts else np.zeros(0, object) for c in _COLUMNS}


def read_interactions(files: list[Path], tenant: str) -> LoggedInteractions:
    """Read a tenant's log files (``EventLog.files(tenant)``: legacy file, then days) into user sequences.

    Raises:
        NoEvents: no log files, or no click/purchase events in them.
    """
    if not files:
        raise NoEvents(f"tenant {tenant!r} has no event log yet: serve it and post click/purchase events first")
    rows = _read_rows(files)
    is_click = rows["kind"] == "interaction"
    is_inter = is_click | (rows["kind"] == "history")
    if not is_inter.any():
        raise NoEvents(f"tenant {tenant!r}: the log has no click/purchase events and no request naming a user with a "
                       f"history yet ({len(files)} file(s) read)")
    user_of_request = {r: u for k, r, u in zip(rows["kind"], rows["request_id"], rows["user_id"]) if k == "impression"}
    users = rows["user_id"][is_inter].copy()
    missing = users == ""
    joined = np.array([user_of_request.get(r, "") for r in rows["request_id"][is_inter][missing]], dtype=object)
    users[missing] = joined
    keep = users != ""
    items, times = rows["item_id"][is_inter][keep], rows["t"][is_inter][keep]
    received, from_request = rows["received"][is_inter], (rows["kind"][is_inter] == "history")[keep]
    users = users[keep]
    order = np.lexsort((received[keep], times, users.astype(str)))  # by user, then time (ties: arrival)
    users, items, times, from_request = users[order], items[order], times[order], from_request[order]
    # an ask whose newest history item is the user's previous interaction (after a click on it, or a
    # second ask) repeats it; clicks and purchases of the same item again are real and stay
    repeat = np.zeros(len(users), bool)
    repeat[1:] = (users[1:] == users[:-1]) & (items[1:] == items[:-1]) & from_request[1:]
    reported = from_request.copy()
    reported[:-1] |= repeat[1:]  # a click the next ask confirms was reported too
    kept = ~repeat
    users, items, times, from_request, reported = users[kept], items[kept], times[kept], from_request[kept], reported[kept]
    ids, starts = np.unique(users.astype(str), return_index=True)
    bounds = list(starts) + [len(users)]
    return LoggedInteractions(
        users=ids.astype(object),
        sequences=[list(items[a:b]) for a, b in zip(bounds[:-1], bounds[1:])],
        times=[list(map(float, times[a:b])) for a, b in zip(bounds[:-1], bounds[1:])],
        events=int(is_click.sum()),
        from_requests=int(from_request.sum()),
        joined=int((joined != "").sum()),
        unattributed=int((~keep).sum()),
        last_received_unix=float(received.max()) if len(received) else 0.0,
        days=[p.stem for p in files],
        reported=[list(map(bool, reported[a:b])) for a, b in zip(bounds[:-1], bounds[1:])],
    )
