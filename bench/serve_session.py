"""Serve sessions for the serving benchmark: how the load generator reaches an app (Serve's Python
proxy, the ingress replica's own port, or Ray's HAProxy), one local Ray per ingress, and the CPU /
memory of Serve's processes."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterator

from serve_apps.direct_ingress import DIRECT_INGRESS_ENV, HAPROXY_INGRESS_ENV

# The environment of each ingress (serve_apps/direct_ingress.py). For the bench: replicas drain 1 s instead of 30 s when an
# app is deleted (the drain lets a production load balancer stop sending first; here nothing does).
_DRAIN = {"RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1"}
INGRESS_ENV = {"proxy": {}, "direct": {**DIRECT_INGRESS_ENV, **_DRAIN}, "haproxy": {**HAPROXY_INGRESS_ENV, **_DRAIN}}
DIRECT_KEYS = ("RAY_SERVE_THROUGHPUT_OPTIMIZED", "RAY_SERVE_ENABLE_DIRECT_INGRESS", "RAY_SERVE_ENABLE_HA_PROXY",
               "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP", *_DRAIN)


def serve_cpu_s(app: str) -> dict[str, float]:
    """CPU seconds (user + system) used so far by the HTTP proxy and by the app's replicas, summed
    per deployment."""
    import psutil

    out: dict[str, float] = {}
    tag = f"ServeReplica:{app}:"
    for p in psutil.process_iter(["cmdline"]):
        argv = p.info["cmdline"] or []
        cmd = " ".join(argv)
        # the process title is ray::ServeReplica:<app>:<deployment>[.<method running now>]
        if "ProxyActor" in cmd or (argv and os.path.basename(argv[0]) == "haproxy"):
            key: str | None = "proxy"
        else:
            key = cmd.split(tag, 1)[1].split()[0].split(".")[0] if tag in cmd else None
        if key is not None:
            try:
                t = p.cpu_times()
            except psutil.Error:
                continue
            out[key] = out.get(key, 0.0) + t.user + t.system
    return out


def replica_rss_mb(app: str, deployment: str | None = None) -> float:
    import psutil

    total = 0
    tag = f"ServeReplica:{app}:{deployment or ''}"
    for p in psutil.process_iter(["cmdline"]):
        if tag in " ".join(p.info["cmdline"] or []):
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
    return round(total / 2**20, 1)


def app_url(app: str, ingress: str, port: int) -> str:
    """Where the load generator sends ``app``'s requests: the Serve HTTP port (Python proxy or
    HAProxy), or the ingress replica's own port."""
    if ingress != "direct":
        url = f"http://127.0.0.1:{port}/{app}"
        _wait_routed(url)
        return url
    from serve_apps.direct_ingress import http_targets

    for _ in range(50):  # serve.run returns with the replica RUNNING; its port registers right after
        urls = [u for u in http_targets(app, host="127.0.0.1") if f":{port}/" not in u]
        if urls:
            return urls[0]
        time.sleep(0.2)
    raise RuntimeError(f"{app}: no direct-ingress replica port after 10 s (is RAY_SERVE_THROUGHPUT_OPTIMIZED set?)")


def haproxy_version() -> str:
    import subprocess

    exe = shutil.which("haproxy")
    if not exe:
        return "not installed"
    return subprocess.run([exe, "-v"], capture_output=True, text=True).stdout.split(" - ")[0].removeprefix("HAProxy version ").strip()


def _wait_routed(url: str, timeout: float = 30.0) -> None:
    """HAProxy learns a new app's route from the controller shortly after serve.run returns."""
    import requests

    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        try:
            if requests.get(f"{url}/openapi.json", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout:g} s")


@contextlib.contextmanager
def serve_session(ingress: str, port: int) -> Iterator[None]:
    """A local 2-CPU Ray + Serve (HTTP proxy on 127.0.0.1:``port``) with ``ingress``'s environment;
    direct ingress must be chosen before Serve starts, so each ingress gets its own session."""
    import ray
    from ray import serve

    from rec.ray_session import LOCAL_RUNTIME_ENV

    env = INGRESS_ENV[ingress]
    saved = {k: os.environ.get(k) for k in DIRECT_KEYS}
    for k in DIRECT_KEYS:
        os.environ.pop(k, None)
    os.environ.update(env)
    try:
        ray.init(num_cpus=2, include_dashboard=False, runtime_env=LOCAL_RUNTIME_ENV, log_to_driver=False)
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        yield
    finally:
        serve.shutdown()
        ray.shutdown()
        for k, v in saved.items():
            os.environ.pop(k, None)
            if v is not None:
                os.environ[k] = v
