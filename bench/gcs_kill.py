"""GCS kill under load: the recommender keeps answering while the head is down, and the cluster recovers.

On the two-node GCS-FT cluster of bench/gcs_ft.py (private Redis; head with 0 CPUs, replicas on
the worker node): deploy the recommender, create a detached named actor on the worker, then under
a steady HTTP load through the worker's Serve proxy SIGKILL the head's ``gcs_server``. The head's
``ray start --block`` ends the rest of the head (Serve controller and head proxy included); a
supervisor thread starts it again with the same command ``down_s`` after every exit (a restarted
head that fails to come up is restarted again, as kubelet or systemd would). Measured
(seconds from the kill): when the GCS listens again, when ``serve.status()`` answers with the app
RUNNING, when a new deployment answers HTTP; and the answers of the load inside the whole window.
Checked facts: the replica kept its pid (it was never restarted), the named actor kept its state,
the worker node kept its node id (a GCS without Redis would know none of them).

This process connects to the cluster with ``ray.init``, so it must not already be connected to
another Ray: tests/cluster/test_gcs_ft.py runs it as a subprocess::

    python -m bench.gcs_kill --root <artifact root> --out result.json [--down-s 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.gcs_ft import FtCluster, ft_cluster, redis_server, wait_for_nodes
from bench.steady_load import SteadyLoad

__all__ = ["gcs_kill_scenario"]

APP = "recommender"
NAMESPACE = "gcs-ft"


def _wait_http(url: str, timeout_s: float, ok=lambda r: r.status_code == 200) -> float:  # noqa: ANN001
    """Seconds until ``url`` answers (GET) with ``ok``; raises TimeoutError."""
    import requests

    t0 = time.time()
    while True:
        try:
            r = requests.get(url, timeout=5)
            if ok(r):
                return time.time() - t0
        except requests.RequestException:
            pass
        if time.time() - t0 > timeout_s:
            raise TimeoutError(f"{url} did not answer in {timeout_s:g} s")
        time.sleep(0.2)


def _connect(cluster: FtCluster, timeout_s: float) -> None:
    import ray

    deadline = time.time() + timeout_s
    while True:
        try:
            ray.init(address=cluster.gcs_address, namespace=NAMESPACE, log_to_driver=False)
            return
        except (ConnectionError, RuntimeError) as e:
            if time.time() > deadline:
                raise TimeoutError(f"could not connect to {cluster.gcs_address}: {e}\n{cluster.logs()}") from e
            time.sleep(1.0)


def _replica_pid(timeout_s: float) -> int:
    from ray import serve

    from serve_apps.recommender import SINGLE_HOP

    return serve.get_deployment_handle(SINGLE_HOP, app_name=APP).stats.remote().result(timeout_s=timeout_s)["pid"]


def _deploy(cluster: FtCluster, root: Path, timeout_s: float) -> tuple[Any, int]:
    """The recommender app (replica on the worker: the head has no CPU) and a detached counter actor."""
    import ray
    from ray import serve

    from serve_apps.args import RecommenderArgs
    from serve_apps.recommender import build_app

    @ray.remote(num_cpus=0.1)  # needs a CPU share: only the worker node has CPUs
    class Counter:
        def __init__(self) -> None:
            self.n = 0

        def incr(self) -> int:
            self.n += 1
            return self.n

    counter = Counter.options(name="gcs-ft-counter", lifetime="detached").remote()
    assert ray.get(counter.incr.remote()) == 1
    serve.start(http_options={"host": "127.0.0.1", "port": cluster.head_http})
    serve.run(build_app(RecommenderArgs.model_validate({"artifact_root": str(root), "max_batch_size": 16})),
              name=APP, route_prefix="/")
    return counter, _replica_pid(timeout_s)


def _serve_running(timeout_s: float) -> None:
    from ray import serve

    deadline = time.time() + timeout_s
    while True:
        app = serve.status().applications.get(APP)
        if app is not None and app.status == "RUNNING":
            return
        if time.time() > deadline:
            raise TimeoutError(f"Serve app {APP} not RUNNING after the restart: {app}")
        time.sleep(0.5)


def _new_deployment(cluster: FtCluster, timeout_s: float) -> None:
    """A deployment created after the recovery (actor creation needs the GCS) answers HTTP."""
    from ray import serve

    @serve.deployment(ray_actor_options={"num_cpus": 0.1})
    def ping() -> str:
        return "pong"

    serve.run(ping.bind(), name="ping", route_prefix="/ping")
    _wait_http(f"http://127.0.0.1:{cluster.worker_http}/ping", timeout_s, ok=lambda r: r.text == "pong")


def _load_summary(load: SteadyLoad, t0: float, t1: float) -> dict[str, Any]:
    window = load.between(t0, t1)
    lat = [s for _, s, _ in window]
    return {"requests": len(window), "errors": sum(1 for *_, c in window if c != 200),
            "5xx": sum(1 for *_, c in window if c >= 500),
            "statuses": {str(c): sum(1 for *_, x in window if x == c) for c in sorted({c for *_, c in window})},
            "p99_ms": round(float(np.percentile(lat, 99)) * 1000, 1) if lat else None}


def gcs_kill_scenario(root: Path, down_s: float = 5.0, threads: int = 2, timeout_s: float = 180.0,
                      processes_file: Path | None = None) -> dict[str, Any]:
    """Run the scenario once (module docstring); returns the measurements and the checked facts.

    ``processes_file``: where to write, before anything can fail, the nodes' temp folders and the
    Redis pid (JSON), so that a caller can end them even if Ray ends this process first (a driver
    whose GCS stays unreachable for 60 s is ended without running its clean-up).
    """
    tenants = sorted(p.name for p in (root / "tenants").iterdir() if (p / "CURRENT").exists())
    with redis_server() as redis, ft_cluster(redis) as cluster:
        if processes_file is not None:
            processes_file.write_text(json.dumps({"node_folders": [cluster.head_tmp, cluster.worker_tmp],
                                                  "redis_pid": redis.pid}))
        try:
            return _run(cluster, root, tenants, down_s, threads, timeout_s)
        except BaseException:
            print(cluster.logs(), file=sys.stderr)
            raise


def _run(cluster: FtCluster, root: Path, tenants: list[str], down_s: float, threads: int,
         timeout_s: float) -> dict[str, Any]:
    import ray
    from ray import serve

    _connect(cluster, timeout_s)
    wait_for_nodes(2, timeout_s)
    worker_node = next(n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU"))
    counter, replica_pid = _deploy(cluster, root, timeout_s)
    url = f"http://127.0.0.1:{cluster.worker_http}"
    _wait_http(url + "/readyz", timeout_s)
    # A driver connected while the GCS is gone exits the process after its reconnect timeout:
    # this one leaves, as an operator's `serve status` would, and comes back after the restart.
    ray.shutdown()
    out: dict[str, Any] = {"down_s": down_s, "threads": threads}
    with SteadyLoad(url, tenants, threads, timeout_s=30) as load, cluster.supervisor(down_s) as events:
        time.sleep(3)
        t_kill = time.time()
        out["gcs_pid"] = cluster.kill_gcs()
        while not events:
            if time.time() - t_kill > timeout_s:
                raise TimeoutError(f"the head did not exit after its GCS was killed\n{cluster.logs()}")
            time.sleep(0.1)
        out["head_exit_code"] = events[0][2]
        out["head_down_s"] = round(events[0][1] - t_kill, 1)
        while len(events) < 2:
            time.sleep(0.1)
        cluster.wait_gcs_port(timeout_s, supervised=True)
        out["gcs_back_s"] = round(time.time() - t_kill, 1)
        _connect(cluster, timeout_s)
        _serve_running(timeout_s)
        out["serve_status_running_s"] = round(time.time() - t_kill, 1)
        _new_deployment(cluster, timeout_s)
        out["new_deployment_s"] = round(time.time() - t_kill, 1)
        t_end = time.time()
        out["head_proxy_back_s"] = round(_wait_http(f"http://127.0.0.1:{cluster.head_http}/readyz", timeout_s)
                                         + t_end - t_kill, 1)
        time.sleep(2)
    out["before_kill"] = _load_summary(load, 0, t_kill)
    out["during_outage"] = _load_summary(load, t_kill, t_end)
    out["whole_run"] = _load_summary(load, 0, time.time())
    out["replica_pid_unchanged"] = _replica_pid(timeout_s) == replica_pid
    out["counter_after"] = ray.get(ray.get_actor("gcs-ft-counter").incr.remote())  # 2 if its state survived
    out["worker_node_alive"] = any(n["NodeID"] == worker_node and n["Alive"] for n in ray.nodes())
    out["head_restarts"] = cluster.head_starts - 1  # > 1: a restarted head failed to start and was restarted again
    out["head_events"] = [(kind, round(t - t_kill, 1), rc) for kind, t, rc in events]
    del counter
    serve.shutdown()
    ray.shutdown()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", required=True, type=Path, help="a serving artifact root (`rec publish` output)")
    p.add_argument("--out", type=Path, help="write the result here as JSON (else stdout)")
    p.add_argument("--down-s", type=float, default=5.0, help="how long the head stays down before its restart")
    p.add_argument("--threads", type=int, default=2, help="closed-loop HTTP clients")
    p.add_argument("--processes-file", type=Path, help="write the nodes' temp folders and the Redis pid here first")
    a = p.parse_args(argv)
    if not (a.root / "tenants").is_dir():
        print(f"error: {a.root} has no tenants/: give a serving artifact root (`rec publish --root`)", file=sys.stderr)
        return 2
    text = json.dumps(gcs_kill_scenario(a.root, a.down_s, a.threads, processes_file=a.processes_file), indent=2)
    if a.out:
        a.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
