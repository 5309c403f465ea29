"""Faults with no client-visible error: a Ranker replica SIGKILLed under load (the ingress retries
the idempotent call on another replica), the only Ranker replica killed (503 + Retry-After or a
late 200, never 500), over real HTTP through a real Serve on 127.0.0.1.

Layout ``Ingress -> Ranker`` (``config.sharded.yaml``, here without multiplexing): the ingress is what
retries, so the replicas that die are the Ranker's.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import threading
import time
from collections import Counter

import pytest
import requests

pytestmark = pytest.mark.integration

APP = "faults"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def serve_http(ray_local):
    from ray import serve

    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()


def _deploy(url: str, root, rankers: int) -> None:
    from ray import serve

    from serve_apps.api import Ingress
    from serve_apps.args import RecommenderArgs
    from serve_apps.ranker import Ranker

    # multiplex off: the Ingress spreads calls over both Rankers. A batch wait of 0.3 s (batches never
    # fill: max_batch_size 64) keeps every call ~0.3 s on its replica, so a kill surely hits calls in
    # flight; with ~1 ms calls a SIGKILL between two calls often hits none.
    plain = RecommenderArgs.model_validate({"artifact_root": str(root), "poll_interval_s": 5,
                                            "batch_wait_timeout_s": 0.3, "max_batch_size": 64,
                                            "retry": {"attempts": 4, "budget_s": 10}}).model_dump(mode="json")
    ranker = Ranker.options(num_replicas=rankers, ray_actor_options={"num_cpus": 0.2}, graceful_shutdown_timeout_s=5)
    app = Ingress.options(ray_actor_options={"num_cpus": 0.2}).bind(plain, ranker.bind(plain))
    serve.run(app, name=APP, route_prefix="/")
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            if requests.get(url + "/readyz", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise AssertionError("the app did not become ready")


def _ranker_pids(n: int) -> set[int]:
    from ray import serve

    handle = serve.get_deployment_handle("Ranker", app_name=APP)
    pids: set[int] = set()
    deadline = time.time() + 60
    while len(pids) < n and time.time() < deadline:
        pids.add(handle.stats.remote().result()["pid"])
    assert len(pids) == n, pids
    return pids


class Load:
    """Threads posting recommendations for several tenants until stopped; every answer counted."""

    def __init__(self, url: str, threads: int = 4) -> None:
        self.url, self.stop, self.codes, self.bad = url, threading.Event(), Counter(), []
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]

    def _run(self, i: int) -> None:
        tenants = ("podcasts", "books", "courses")
        with requests.Session() as s:
            n = 0
            while not self.stop.is_set():
                n += 1
                t = tenants[(i + n) % 3]
                try:
                    r = s.post(f"{self.url}/v1/tenants/{t}/recommendations", json={"history": [], "k": 3}, timeout=60)
                except requests.RequestException as e:
                    self.codes["conn-error"] += 1
                    self.bad.append(repr(e))
                    continue
                self.codes[r.status_code] += 1
                if r.status_code != 200:
                    self.bad.append((r.status_code, r.headers.get("Retry-After"), r.text[:300]))

    def __enter__(self) -> "Load":
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:  # noqa: ANN002
        self.stop.set()
        for t in self.threads:
            t.join()


def _ingress_retries() -> int:
    from ray import serve

    return serve.get_deployment_handle("Ingress", app_name=APP).stats.remote().result()["ingress_retries"]


def test_a_ranker_replica_killed_under_load_costs_no_client_error(serve_http, serving_world, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(serving_world.root, root)
    _deploy(serve_http, root, rankers=2)
    victim = sorted(_ranker_pids(2))[0]
    with Load(serve_http, threads=6) as load:
        time.sleep(2.0)
        before = sum(load.codes.values())
        os.kill(victim, signal.SIGKILL)
        time.sleep(4.0)
    assert before > 10 and sum(load.codes.values()) > before + 10, load.codes  # load flowed before and after
    assert load.codes == Counter({200: load.codes[200]}), (load.codes, load.bad[:5])
    assert _ingress_retries() >= 1  # some in-flight call died with the replica and was answered by the other


def test_the_only_ranker_killed_is_503_with_retry_after_never_500(serve_http, serving_world, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(serving_world.root, root)
    _deploy(serve_http, root, rankers=1)
    (victim,) = _ranker_pids(1)
    with Load(serve_http, threads=3) as load:
        time.sleep(1.5)
        os.kill(victim, signal.SIGKILL)
        time.sleep(6.0)
    assert set(load.codes) <= {200, 503}, (load.codes, load.bad[:5])
    assert all(b[0] == 503 and b[1] for b in load.bad), load.bad[:5]  # every 503 says when to retry
    assert load.codes[200] > 0
