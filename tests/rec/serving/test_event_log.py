"""The event log: day files, exactly-once idempotency keys across processes, no torn line on a
full disk, incremental tails and group commit."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rec.serving.events import EventLog, GroupCommitWriter, LEGACY_LOG_NAME, day_of
from tests.fixtures.tmpfs import size_limited_tmpfs

DAY = 86400.0
T0 = 1_780_000_000.0  # 2026-05-28 UTC


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_records_are_filed_by_utc_day_and_read_in_order(tmp_path):
    clock = Clock(T0)
    log = EventLog(lambda t: tmp_path / t, clock=clock)
    log.append("shop", [{"n": 1}])
    clock.t += DAY
    log.append("shop", [{"n": 2}, {"n": 3}])
    (tmp_path / "shop" / LEGACY_LOG_NAME).write_text('{"n": 0}\n')
    assert [p.name for p in log.files("shop")] == [LEGACY_LOG_NAME, f"{day_of(T0)}.jsonl", f"{day_of(T0 + DAY)}.jsonl"]
    assert [r["n"] for r in log.read("shop")] == [0, 1, 2, 3]


def test_an_idempotency_key_is_acknowledged_again_but_written_once(tmp_path):
    clock = Clock(T0)
    log = EventLog(lambda t: tmp_path / t, clock=clock)
    first = log.append("shop", [{"n": 1}, {"n": 2}], idempotency_key="k1")
    again = log.append("shop", [{"n": 1}, {"n": 2}], idempotency_key="k1")
    assert (first.accepted, first.duplicate) == (2, False)
    assert (again.accepted, again.duplicate) == (2, True)
    # a second writer (another replica) sees the key from the file, even across midnight
    clock.t += DAY - 1
    other = EventLog(lambda t: tmp_path / t, clock=clock)
    assert other.append("shop", [{"n": 1}, {"n": 2}], idempotency_key="k1").duplicate
    assert len(log.read("shop")) == 2
    # keys are per tenant
    assert not log.append("other", [{"n": 1}], idempotency_key="k1").duplicate


_WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from rec.serving.events import EventLog
    root, worker = Path(sys.argv[1]), sys.argv[2]
    log = EventLog(lambda t: root / t)
    for i in range(60):
        # every process retries the same 60 keys, each twice
        for _ in range(2):
            log.append("shop", [{"key": i, "by": worker}], idempotency_key=f"key-{i}")
    """
)


def test_concurrent_processes_write_each_key_exactly_once(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path), str(w)], env=env) for w in range(3)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    records = EventLog(lambda t: tmp_path / t).read("shop")
    assert sorted(r["key"] for r in records) == list(range(60))


@pytest.fixture
def tiny_disk(tmp_path):
    """A 64 KiB tmpfs the test mounts itself (root only), so the log really hits ENOSPC."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    with size_limited_tmpfs(mnt, "64k"):
        yield mnt


def test_a_full_disk_raises_and_leaves_no_partial_line(tiny_disk):
    log = EventLog(lambda t: tiny_disk / t)
    big = [{"pad": "x" * 1000, "i": i} for i in range(10)]
    written = 0
    with pytest.raises(OSError):
        for _ in range(100):
            written += log.append("shop", big).accepted
    assert written > 0
    records = log.read("shop")
    assert len(records) == written  # everything acknowledged is there, nothing else
    raw = b"".join(p.read_bytes() for p in log.files("shop"))
    assert raw.endswith(b"\n") and raw.count(b"\n") == written
    # space returns: appends work again, and a keyed retry of a failed call is written once
    filler = tiny_disk / "filler"
    if filler.exists():
        filler.unlink()
    for p in log.files("shop"):
        p.unlink()
    assert log.append("shop", [{"i": "after"}], idempotency_key="k").accepted == 1
    assert log.append("shop", [{"i": "after"}], idempotency_key="k").duplicate


def test_tail_reads_only_new_complete_lines(tmp_path):
    log = EventLog(lambda t: tmp_path / t)
    offsets: dict[str, int] = {}
    log.append("shop", [{"n": 1}])
    assert [r["n"] for r in log.tail("shop", offsets)] == [1]
    assert log.tail("shop", offsets) == []
    path = log.files("shop")[-1]
    with open(path, "ab") as fh:
        fh.write(b'{"n": 2}\n{"n": ')  # a writer mid-line
    assert [r["n"] for r in log.tail("shop", offsets)] == [2]
    with open(path, "ab") as fh:
        fh.write(b'3}\n')
    assert [r["n"] for r in log.tail("shop", offsets)] == [3]


def test_group_commit_makes_every_submitted_record_durable(tmp_path):
    log = EventLog(lambda t: tmp_path / t)
    writer = GroupCommitWriter(log)
    futures = [writer.submit(f"t{i % 3}", [{"i": i}]) for i in range(300)]
    for f in futures:
        f.result(timeout=30)
    writer.close()
    got = sorted(r["i"] for t in ("t0", "t1", "t2") for r in log.read(t))
    assert got == list(range(300))
    with pytest.raises(RuntimeError, match="closed"):
        writer.submit("t0", [{"i": 0}])


def test_group_commit_reports_a_full_disk_per_record(tiny_disk):
    log = EventLog(lambda t: tiny_disk / t)
    writer = GroupCommitWriter(log)
    ok = failed = 0
    for wave in range(60):  # waves of 5 records until the disk is full
        futures = [writer.submit("shop", [{"pad": "x" * 2000, "i": (wave, i)}]) for i in range(5)]
        errors = [f.exception(timeout=30) for f in futures]
        ok += sum(e is None for e in errors)
        failed += sum(isinstance(e, OSError) for e in errors)
    writer.close()
    assert ok > 0 and failed > 0
    assert len(log.read("shop")) == ok  # acknowledged == durable, and nothing more
    assert log.files("shop")[-1].read_bytes().endswith(b"\n")  # no torn line
