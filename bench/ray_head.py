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
import json
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

__all__ = ["LocalHead", "free_port", "local_head", "end_processes_naming", "ray_env", "start_ray", "stop_node",
           "stop_process_group", "token_auth"]

PORT_FLAGS = ("port", "dashboard-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
              "runtime-env-agent-port", "metrics-export-port", "ray-client-server-port")


@dataclass(frozen=True)
class LocalHead:
    gcs_address: str  # for ray.init(address=...)
    dashboard: str  # for the Jobs SDK
    pid: int = 0  # the `ray start --block` supervisor: every process of the node descends from it


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


def ray_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a ``ray start``: this interpreter's bin first on PATH, no inherited RAY_ADDRESS."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "RAY_USAGE_STATS_ENABLED": "0", **(extra or {})}
    env.pop("RAY_ADDRESS", None)
    return env


def start_ray(args: list[str], env: dict[str, str], tmp: str, log: Path) -> subprocess.Popen:
    """``ray start --block <args>`` in its own process group with its own temp folder, output to ``log``.

    ``--block`` makes the command the node's supervisor: when one of the node's Ray processes dies
    (say the GCS), it kills the others and exits 1, so the node fails as a whole, like a head pod.
    """
    with open(log, "a") as out:
        return subprocess.Popen(
            [str(Path(sys.executable).parent / "ray"), "start", "--block", *args, f"--temp-dir={tmp}",
             "--disable-usage-stats"],
            env=env, cwd=tmp, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


@contextlib.contextmanager
def token_auth() -> Iterator[None]:
    """Token authentication for this process and every node it starts (restored on exit)."""
    # `ray start` heads require a token (Ray >= 2.5x); this process, the head and its jobs share one
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    saved = {k: os.environ.get(k) for k in auth}
    os.environ.update(auth)
    _reload_ray_auth()
    try:
        yield
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        _reload_ray_auth()


def _reload_ray_auth() -> None:
    """Make an already imported Ray re-read RAY_AUTH_MODE / RAY_AUTH_TOKEN (it caches them at import).

    Needed only when this process itself connects with ``ray.init``; the same two calls as Ray's
    own ``ray._private.authentication_test_utils.reset_auth_token_state``.
    """
    if "ray._raylet" not in sys.modules:
        return  # Ray not imported yet: it reads the environment when it is
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


@contextlib.contextmanager
def local_head(num_cpus: int = 2, timeout_s: float = 300.0, resources: dict[str, float] | None = None,
               attempts: int = 3, env: dict[str, str] | None = None) -> Iterator[LocalHead]:
    """A head node with ``num_cpus`` CPUs (and custom ``resources``) that accepts jobs; jobs find this
    interpreter's ``rec`` first on PATH; ``env`` is added to the node's environment (what Ray and
    Serve read when their processes start). A ``ray start`` that exits during startup is tried again
    (``attempts`` in all, fresh ports and folder each time): on an overloaded machine the raylet can
    miss Ray's fixed 30 s registration wait."""
    extra = [f"--resources={json.dumps(resources)}"] if resources else []
    with token_auth():
        # a SIGTERM to this process (kill, a CI timeout) must still end the head: raise so `finally` runs
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, _exit_on_sigterm) if main else None
        try:
            for attempt in range(attempts):
                tmp = tempfile.mkdtemp(prefix="rh")  # short: Ray's unix socket paths must stay short
                ports = {flag: free_port() for flag in PORT_FLAGS}
                log = Path(tmp) / "head.log"
                proc = start_ray(["--head", f"--num-cpus={num_cpus}", "--include-dashboard=true",
                                  "--dashboard-host=127.0.0.1", *[f"--{k}={v}" for k, v in ports.items()], *extra],
                                 ray_env(env), tmp, log)
                head = LocalHead(f"127.0.0.1:{ports['port']}", f"http://127.0.0.1:{ports['dashboard-port']}", proc.pid)
                try:
                    _wait_for_jobs(head.dashboard, proc, log, timeout_s)
                    break
                except RuntimeError:
                    failed_start = proc.poll() is not None  # else the job agent never answered: not retried
                    stop_node(proc, tmp)
                    shutil.rmtree(tmp, ignore_errors=True)
                    if not failed_start or attempt + 1 == attempts:
                        raise
            try:
                yield head
            finally:
                stop_node(proc, tmp)
                shutil.rmtree(tmp, ignore_errors=True)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def stop_node(proc: subprocess.Popen, marker: str) -> None:
    """End the node's process group, then any Ray process that still names its temp folder."""
    stop_process_group(proc.pid, marker)


def stop_process_group(pgid: int, marker: str) -> None:
    """SIGTERM the process group ``pgid`` (a node started by :func:`start_ray`), then
    :func:`end_processes_naming` its temp folder ``marker``."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    end_processes_naming(marker)


def end_processes_naming(marker: str, grace_s: float = 20.0) -> None:
    """Wait up to ``grace_s`` for every process whose command line names ``marker`` (a node's own temp
    folder) to exit, then SIGKILL those left. Also the way to clean up after a driver that Ray ended
    before its own clean-up could run."""
    import psutil

    deadline = time.time() + grace_s
    while True:
        left = [p for p in psutil.process_iter(["cmdline"]) if marker in " ".join(p.info["cmdline"] or [])]
        if not left or time.time() >= deadline:
            break
        time.sleep(0.5)
    for p in left:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
