"""What the training chaos rows share: a ``rec`` command run as a driver process against a private
Ray head, the head's processes by title, and killing by pid.

A driver is ``python -m rec.cli <command> --address <head>`` in its own session, its output in a
log file, with this checkout first on ``PYTHONPATH`` and the head's token in its environment
(``bench.ray_head.local_head`` exports it). Nothing here ends a process it did not start or find
under the private head.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["REPO", "driver", "head_processes", "sigkill", "stop_driver"]

REPO = Path(__file__).resolve().parents[1]


def driver(argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``python -m rec.cli *argv`` in its own session, stdout and stderr appended to ``log``."""
    full = {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0", **(env or {})}
    full.pop("RAY_ADDRESS", None)
    with open(log, "a") as out:
        return subprocess.Popen([sys.executable, "-m", "rec.cli", *argv], cwd=REPO, env=full, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def head_processes(head_pid: int, title: str, started_after: float = 0.0) -> list[Any]:
    """Processes under the private head (``LocalHead.pid``) whose command line starts with ``title``
    (Ray sets an actor process's title to ``ray::<Class>[.<method>]``), newer than ``started_after``."""
    import psutil

    found = []
    with contextlib.suppress(psutil.NoSuchProcess):
        for p in psutil.Process(head_pid).children(recursive=True):
            try:
                cmd, created = p.cmdline(), p.create_time()
            except psutil.Error:
                continue
            if cmd and cmd[0].startswith(title) and created >= started_after:
                found.append(p)
    return found


def sigkill(pid: int) -> float:
    """SIGKILL ``pid``; the moment it was sent."""
    t = time.time()
    os.kill(pid, signal.SIGKILL)
    return t


def stop_driver(proc: subprocess.Popen, timeout_s: float = 30.0) -> None:
    """End a driver this module started (its session: the driver and its own children), then reap it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout_s)
