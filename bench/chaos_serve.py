"""The shipped recommender under load, on a private Ray head, for the chaos rows of bench/chaos.py.

:func:`config_session` starts a head with free ports (``bench.ray_head.local_head``) and deploys
``serve_apps/config.yaml`` (or ``config.sharded.yaml``) through the dashboard's Serve REST API, as
``serve deploy`` does, with only what a 2-core bench must change: the artifact root, the HTTP
port, fixed replica counts instead of autoscaling, a fractional CPU and the ``args`` a row asks
for; optionally a second node joined to the head first (:class:`WorkerNode`). Its drain settings
(``graceful_shutdown_*``) are the shipped ones, so a row measures the configuration users run.
:func:`load_row` turns a :class:`bench.steady_load.SteadyLoad` and the fault windows into the
columns every row shares.
"""

from __future__ import annotations

import contextlib
import copy
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from bench.ray_head import end_processes_naming, free_port, local_head, ray_env, start_ray, stop_node
from bench.steady_load import SteadyLoad
from serve_apps.recommender import SINGLE_HOP

__all__ = ["SHARDED_CONFIG", "SHIPPED_CONFIG", "ServeSession", "WorkerNode", "config_session", "live_tenants", "load_row"]

SHIPPED_CONFIG = Path(__file__).resolve().parents[1] / "serve_apps" / "config.yaml"
SHARDED_CONFIG = SHIPPED_CONFIG.with_name("config.sharded.yaml")
APP = "recommender"


def live_tenants(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "tenants").iterdir() if (p / "CURRENT").exists())


def _config(config: Path, root: Path, port: int, replicas: dict[str, int], args: dict[str, Any], cpus: float,
            options: dict[str, dict[str, Any]]) -> dict[str, Any]:
    cfg = copy.deepcopy(yaml.safe_load(config.read_text()))
    cfg["http_options"] = {"host": "127.0.0.1", "port": port}
    app = next(a for a in cfg["applications"] if a["name"] == APP)
    app["args"] = {**app["args"], "artifact_root": str(root), **args}
    for dep in app["deployments"]:
        extra = options.get(dep["name"], {})
        dep.pop("autoscaling_config", None)
        dep["num_replicas"] = replicas[dep["name"]]
        dep["ray_actor_options"] = {**dep.get("ray_actor_options", {}), "num_cpus": cpus,
                                    **extra.get("ray_actor_options", {})}
        dep.update({k: v for k, v in extra.items() if k != "ray_actor_options"})
    return cfg


class WorkerNode:
    """A second Ray node (``ray start --address``, its own process group and temp folder) joined to a head."""

    def __init__(self, gcs_address: str, num_cpus: float) -> None:
        self.gcs_address, self.num_cpus, self.tmp = gcs_address, num_cpus, ""
        self.proc: subprocess.Popen | None = None
        self.folders: list[str] = []

    def start(self, timeout_s: float = 300.0) -> None:
        """Start the node and wait until ``ray start`` says it runs; a start that fails (on an
        overloaded machine the raylet can time out registering) is tried again, as a supervisor would."""
        deadline = time.time() + timeout_s
        while True:
            # a fresh folder each start, as a replaced machine has: a raylet restarted in the killed
            # node's folder waits forever for the old session's port files (Ray 2.60 raylet check fails)
            self.tmp = tempfile.mkdtemp(prefix="rw")
            self.folders.append(self.tmp)
            log = Path(self.tmp) / "worker.log"
            self.proc = start_ray([f"--address={self.gcs_address}", f"--num-cpus={self.num_cpus}"], ray_env(), self.tmp, log)
            while self.proc.poll() is None and "Ray runtime started" not in log.read_text():
                time.sleep(0.5)
            if self.proc.poll() is None:
                return
            if time.time() > deadline:
                raise RuntimeError(f"the worker node did not start in {timeout_s:g} s:\n{log.read_text()[-2000:]}")

    def kill(self) -> list[int]:
        """SIGKILL the node's processes by pid (``ray start``, raylet and everything under it):
        the node dies as a machine would, nothing runs its shutdown."""
        import psutil

        root = psutil.Process(self.proc.pid)
        procs = [root, *root.children(recursive=True)]
        for p in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        self.proc.wait()
        return [p.pid for p in procs]

    def stop(self) -> None:
        if self.proc is not None:
            stop_node(self.proc, self.tmp)
        for folder in self.folders:
            end_processes_naming(folder, grace_s=0)
            shutil.rmtree(folder, ignore_errors=True)


@dataclass
class ServeSession:
    """A deployed recommender: ``url`` of the head's Serve proxy; :meth:`deploy` re-applies the config."""

    root: Path
    url: str
    port: int
    client: Any  # ray.dashboard.modules.serve.sdk.ServeSubmissionClient
    cpus: float
    config: Path
    options: dict[str, dict[str, Any]]
    gcs_address: str
    worker: WorkerNode | None = None

    def ingress_stats(self) -> dict[str, Any]:
        """``stats()`` of the (single) Ingress replica of the sharded layout, through a Serve handle
        (connects this process to the head for the call)."""
        import ray
        from ray import serve

        ray.init(address=self.gcs_address, log_to_driver=False)
        try:
            return serve.get_deployment_handle("Ingress", app_name=APP).stats.remote().result(timeout_s=120)
        finally:
            ray.shutdown()

    def deploy(self, replicas: int | dict[str, int], args: dict[str, Any] | None = None, timeout_s: float = 180.0) -> float:
        """``serve deploy`` the config with ``replicas`` per deployment (an int: the single-hop
        ``Recommender``); seconds until each deployment has exactly that many replicas, all RUNNING
        (none starting or stopping), and the app is RUNNING."""
        want = {SINGLE_HOP: replicas} if isinstance(replicas, int) else replicas
        t0 = time.time()
        self.client.deploy_applications(_config(self.config, self.root, self.port, want, args or {}, self.cpus, self.options))
        return self.wait_replicas(want, timeout_s, since=t0)

    def wait_replicas(self, want: dict[str, int], timeout_s: float = 180.0, since: float | None = None) -> float:
        """Seconds from ``since`` (default now) until each deployment has exactly ``want`` RUNNING replicas."""
        t0 = time.time() if since is None else since
        while True:
            app = self.client.get_serve_details().get("applications", {}).get(APP, {})
            states = {d: self.replica_states(d, app) for d in want}
            if app.get("status") == "RUNNING" and all(states[d] == ["RUNNING"] * n for d, n in want.items()):
                return time.time() - t0
            if time.time() - t0 > timeout_s:
                raise TimeoutError(f"{APP} not at {want} RUNNING replicas after {timeout_s:g} s: {states}")
            time.sleep(0.2)

    def replicas(self, deployment: str, app: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        if app is None:
            app = self.client.get_serve_details().get("applications", {}).get(APP, {})
        return app.get("deployments", {}).get(deployment, {}).get("replicas", [])

    def replica_states(self, deployment: str, app: dict[str, Any] | None = None) -> list[str]:
        return sorted(r["state"] for r in self.replicas(deployment, app))

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        import requests

        deadline = time.time() + timeout_s
        while time.time() < deadline:
            with contextlib.suppress(requests.RequestException):
                if requests.get(self.url + "/readyz", timeout=5).status_code == 200:
                    return
            time.sleep(0.3)
        raise TimeoutError(f"{self.url}/readyz did not answer 200 in {timeout_s:g} s")


@contextlib.contextmanager
def config_session(root: Path, replicas: int | dict[str, int], args: dict[str, Any] | None = None,
                   cpus: float = 0.3, config: Path = SHIPPED_CONFIG, options: dict[str, dict[str, Any]] | None = None,
                   head_resources: dict[str, float] | None = None,
                   worker_cpus: float | None = None, env: dict[str, str] | None = None) -> Iterator[ServeSession]:
    """``config`` deployed on a private 2-CPU head (see module doc), with a worker node of
    ``worker_cpus`` CPUs joined first when given; ``options``: extra Serve options per deployment;
    ``env``: added to the head's environment. Everything ends on exit."""
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    with local_head(num_cpus=2, resources=head_resources, env=env) as head:
        port = free_port()
        session = ServeSession(root, f"http://127.0.0.1:{port}", port, ServeSubmissionClient(head.dashboard), cpus,
                               config, options or {}, head.gcs_address)
        try:
            if worker_cpus is not None:
                session.worker = WorkerNode(head.gcs_address, worker_cpus)
                session.worker.start()
            session.deploy(replicas, args)
            session.wait_ready()
            yield session
        finally:
            with contextlib.suppress(Exception):
                session.client.delete_applications()
            if session.worker is not None:
                session.worker.stop()


def load_row(fault: str, injections: int, load: SteadyLoad, windows: list[tuple[float, float]],
             recovery_s: list[float], served: Callable[[int], bool] = lambda c: c == 200,
             **extra: Any) -> dict[str, Any]:
    """The shared columns of a row over the whole load: requests, client_errors (answers that are
    not ``served``), 5xx, recovery_s (the slowest injection) and the p99 of the answers that ended
    inside a fault window (+1 s)."""
    codes = load.codes
    during = [s for end, s in load.lat if any(a <= end <= b + 1 for a, b in windows)]
    return {"fault": fault, "injections": injections, "requests": sum(codes.values()),
            "client_errors": sum(n for c, n in codes.items() if not served(c)),
            "5xx": sum(n for c, n in codes.items() if c >= 500), "lost_events": None, "duplicated_events": None,
            "recovery_s": round(max(recovery_s), 1) if recovery_s else None,
            "p99_ms_during": round(float(np.percentile(during, 99)) * 1000, 1) if during else None,
            "statuses": {str(c): n for c, n in sorted(codes.items())}, **extra}
