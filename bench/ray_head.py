"""A private local Ray head with the dashboard, for benchmarks that submit Ray jobs.

``ray.init(include_dashboard=True)`` cannot choose the dashboard agent's port: it binds 52365, and
when another Ray on the machine holds it, the agent dies and every job submission answers "No
available agent to submit job" forever (seen on the shared machine: bench/README.md). So this
starts ``ray start --head --block`` with every fixed port chosen free and token authentication
(this process and the head's jobs get the token through the environment), in its own process
group and temp folder, and ends exactly that group on exit (never a machine-wide ``ray stop``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LocalHead", "free_port", "local_head", "stop_process_group"]

PORT_FLAGS = ("port", "dashboard-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
              "runtime-env-agent-port", "metrics-export-port", "ray-client-server-port")


@dataclass(frozen=True)
class LocalHead:
    gcs_address: str  # for ray.init(address=...)
    dashboard: str  # for the Jobs SDK


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_jobs(address: str, proc: subprocess.Popen, log: Path, timeout_s: float) -> None:
    from ray.job_submission import JobSubmissionClient

    deadline = time.time() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"ray start exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            client = JobSubmissionClient(address)
            sid = client.submit_job(entrypoint="true")
            while not client.get_job_status(sid).is_terminal():
                time.sleep(0.3)
            return
        except Exception as e:  # noqa: BLE001 - the dashboard or its job agent is not up yet
            if time.time() > deadline:
                raise RuntimeError(f"the job agent at {address} did not come up in {timeout_s:g} s: {e}") from e
            time.sleep(1.0)


@contextlib.contextmanager
def local_head(num_cpus: int = 2, timeout_s: float = 300.0) -> Iterator[LocalHead]:
    """A head node with ``num_cpus`` CPUs that accepts jobs; jobs find this interpreter's ``rec`` first on PATH."""
    tmp = tempfile.mkdtemp(prefix="rh")  # short: Ray's unix socket paths must stay short
    ports = {flag: free_port() for flag in PORT_FLAGS}
    # `ray start` heads require a token (Ray >= 2.5x); this process, the head and its jobs share one
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    saved = {k: os.environ.get(k) for k in auth}
    os.environ.update(auth)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    log = Path(tmp) / "head.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", f"--num-cpus={num_cpus}",
             "--include-dashboard=true", "--dashboard-host=127.0.0.1", *[f"--{k}={v}" for k, v in ports.items()],
             f"--temp-dir={tmp}", "--disable-usage-stats"],
            env=env, cwd=tmp, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    head = LocalHead(f"127.0.0.1:{ports['port']}", f"http://127.0.0.1:{ports['dashboard-port']}")
    # a SIGTERM to this process (kill, a CI timeout) must still end the head: raise so `finally` runs
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm) if threading.current_thread() is threading.main_thread() else None
    try:
        _wait_for_jobs(head.dashboard, proc, log, timeout_s)
        yield head
    finally:
        stop_process_group(proc.pid, tmp)
        shutil.rmtree(tmp, ignore_errors=True)
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def stop_process_group(pgid: int, marker: str) -> None:
    """End a head's process group (SIGTERM), then SIGKILL any process that still names ``marker``
    (its temp folder) in its command line after 20 s."""
    import psutil

    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.time() + 20
    while time.time() < deadline:
        left = [p for p in psutil.process_iter(["cmdline"]) if marker in " ".join(p.info["cmdline"] or [])]
        if not left:
            return
        time.sleep(0.5)
    for p in left:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
