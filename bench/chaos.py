"""Chaos benchmark of the recommender (issue 19): faults injected under load, client-visible errors counted.

Rows (``bench/results/chaos.{json,md}``): ``fault, injections, requests, client_errors, 5xx,
lost_events, duplicated_events, recovery_s, p99_ms_during``.

Built here (each a real fault on real components):

- ``fuzz``: schemathesis over the in-process app (every default check, positive + negative data,
  live tenants, stateful links); requests = generated cases, client_errors = failed checks.
- ``replica-sigkill``: SIGKILL of one of two Ranker replicas (``Ingress -> Ranker`` layout) under
  a steady multi-tenant HTTP load through the Serve proxy, several times; recovery_s = until two
  replicas answer again.
- ``events-disk-full``: the events folder on a size-limited tmpfs filled up under event posts, then
  freed; lost_events = acknowledged events missing from the log, duplicated_events = log lines
  beyond what was acknowledged (a 503 must leave nothing behind).

- ``gcs-kill``: SIGKILL of the GCS under load on a two-node cluster whose GCS is fault tolerant on
  a private ``redis-server`` (bench/gcs_kill.py), the head restarted as a supervisor would;
  recovery_s = until ``serve.status()`` answers with the app RUNNING.

Not built (absent rows, not faked): replica drain under downscale, worker-node kill,
publish/rollback under load, corrupt version, training-worker and Tune-driver kills, noisy
neighbour. ``rec readapt`` does not exist yet, so its fault is out.

    python -m bench.chaos [--fuzz-examples 560] [--kills 3]     # ~6 min on 2 cores
    python -m bench.chaos --faults gcs-kill                      # one row; the saved others are kept
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from bench._results import log, write_results
from bench.serve_coldstart import build_root
from bench.steady_load import SteadyLoad

COLUMNS = ["fault", "injections", "requests", "client_errors", "5xx", "lost_events", "duplicated_events",
           "recovery_s", "p99_ms_during"]


def fuzz_row(root: Path, examples: int) -> dict[str, Any]:
    from bench.contract_fuzz import fuzz_contract
    from serve_apps.api import serve_in_process

    tenants = sorted(p.name for p in (root / "tenants").iterdir() if (p / "CURRENT").exists())
    with serve_in_process({"artifact_root": str(root)}) as (app, _):
        r = fuzz_contract(app, examples_per_mode=examples, stateful_examples=20, tenants=tenants)
    five = sum(n for k, n in r.statuses.items() if k.rsplit(" ", 1)[1].startswith("5"))
    return {"fault": "fuzz", "injections": 0, "requests": r.cases + r.stateful_steps, "client_errors": len(r.failures),
            "5xx": five, "lost_events": None, "duplicated_events": None, "recovery_s": None, "p99_ms_during": None,
            "failures": r.failures[:5]}


def replica_kill_row(root: Path, kills: int, threads: int) -> dict[str, Any]:
    import ray
    from ray import serve

    from serve_apps.api import Ingress
    from serve_apps.args import RecommenderArgs
    from serve_apps.ranker import Ranker

    tenants = sorted(p.name for p in (root / "tenants").iterdir() if (p / "CURRENT").exists())
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": 8765})
        plain = RecommenderArgs.model_validate({"artifact_root": str(root), "max_batch_size": 32}).model_dump(mode="json")
        ranker = Ranker.options(num_replicas=2, ray_actor_options={"num_cpus": 0.3})
        serve.run(Ingress.options(ray_actor_options={"num_cpus": 0.3}).bind(plain, ranker.bind(plain)), name="chaos",
                  route_prefix="/")
        handle = serve.get_deployment_handle("Ranker", app_name="chaos")

        def pids() -> set[int]:
            seen: set[int] = set()
            for _ in range(40):
                seen.add(handle.stats.remote().result()["pid"])
            return seen

        recovery, windows = [], []
        with SteadyLoad("http://127.0.0.1:8765", tenants, threads) as load:
            time.sleep(3)
            for k in range(kills):
                victim = sorted(pids())[0]
                t0 = time.time()
                os.kill(victim, signal.SIGKILL)
                while len(pids() - {victim}) < 2:
                    time.sleep(0.2)
                recovery.append(time.time() - t0)
                windows.append((t0, time.time()))
                log(f"kill {k + 1}/{kills}: pid {victim}, two replicas again after {recovery[-1]:.1f} s")
                time.sleep(2)
        during = [s for end, s in load.lat if any(a <= end <= b + 1 for a, b in windows)]
        codes = load.codes
        return {"fault": "replica-sigkill", "injections": kills, "requests": sum(codes.values()),
                "client_errors": sum(n for c, n in codes.items() if c != 200), "5xx": sum(n for c, n in codes.items() if c >= 500),
                "lost_events": None, "duplicated_events": None, "recovery_s": round(max(recovery), 1),
                "p99_ms_during": round(float(np.percentile(during, 99)) * 1000, 1) if during else None,
                "statuses": dict(codes)}
    finally:
        serve.shutdown()
        ray.shutdown()


def disk_full_row(root: Path, injections: int) -> dict[str, Any]:
    from starlette.testclient import TestClient

    from rec.serving.events import EventLog
    from rec.serving.store import ArtifactRoot
    from serve_apps.api import serve_in_process

    events = root / "events"
    shutil.rmtree(events, ignore_errors=True)
    events.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", str(events)]).returncode != 0:
        raise RuntimeError("mounting a tmpfs needs root")
    tenant = sorted(p.name for p in (root / "tenants").iterdir() if (p / "CURRENT").exists())[0]
    log_ = EventLog(ArtifactRoot(root).events_dir)
    acked, codes, recovery = 0, Counter(), []
    try:
        with serve_in_process({"artifact_root": str(root)}) as (app, _), TestClient(app) as c:
            body = {"events": [{"type": "click", "item_id": f"i{i}", "user_id": "u" * 64} for i in range(10)]}
            for _ in range(injections):
                while True:  # fill the disk with acknowledged events
                    r = c.post(f"/v1/tenants/{tenant}/events", json=body)
                    codes[r.status_code] += 1
                    if r.status_code != 201:
                        break
                    acked += r.json()["accepted"]
                t0 = time.time()
                # Space returns: the operator archives the log (what a reader has consumed).
                consumed = log_.read(tenant)
                log_.path(tenant).rename(events / tenant / "archived.jsonl")
                (events / tenant / "archived.jsonl").unlink()
                while True:
                    r = c.post(f"/v1/tenants/{tenant}/events", json=body)
                    codes[r.status_code] += 1
                    if r.status_code == 201:
                        acked_after = r.json()["accepted"]
                        break
                recovery.append(time.time() - t0)
                read_back = len(consumed)
                lost = max(0, acked - read_back)
                dup = max(0, read_back - acked)
                acked = acked_after
                if lost or dup:
                    break
    finally:
        subprocess.run(["umount", "-l", str(events)], check=False)
    return {"fault": "events-disk-full", "injections": injections, "requests": sum(codes.values()),
            "client_errors": sum(n for s, n in codes.items() if s not in (201, 503)), "5xx": codes[503],
            "lost_events": lost, "duplicated_events": dup, "recovery_s": round(max(recovery), 3), "p99_ms_during": None,
            "statuses": dict(codes)}


def gcs_kill_row(root: Path, injections: int, threads: int) -> dict[str, Any]:
    """SIGKILL of the GCS under load on a GCS-FT cluster (bench/gcs_kill.py), ``injections`` times.

    Each injection is a fresh Redis + two-node cluster; recovery_s = kill -> ``serve.status()``
    answers with the app RUNNING (the control plane is back); the load's window runs from the kill
    until a new deployment answered.
    """
    from bench.gcs_kill import gcs_kill_scenario

    runs = []
    for k in range(injections):
        runs.append(gcs_kill_scenario(root, down_s=5.0, threads=threads))
        log(f"gcs kill {k + 1}/{injections}: {runs[-1]}")
    during = [r["during_outage"] for r in runs]
    return {"fault": "gcs-kill", "injections": injections, "requests": sum(d["requests"] for d in during),
            "client_errors": sum(d["errors"] for d in during), "5xx": sum(d["5xx"] for d in during),
            "lost_events": None, "duplicated_events": None,
            "recovery_s": max(r["serve_status_running_s"] for r in runs),
            "p99_ms_during": max(d["p99_ms"] for d in during),
            "gcs_back_s": [r["gcs_back_s"] for r in runs], "new_deployment_s": [r["new_deployment_s"] for r in runs],
            "state_survived": all(r["replica_pid_unchanged"] and r["counter_after"] == 2 and r["worker_node_alive"]
                                  for r in runs)}


FAULTS = ("fuzz", "events-disk-full", "replica-sigkill", "gcs-kill")
PROTOCOL = {
    "load": "closed-loop HTTP threads through a Serve proxy (--threads: 6 in replica-sigkill; gcs-kill uses 2), "
            "round-robin over the root's tenants",
    "layout": "replica-sigkill: Ingress -> 2 Ranker replicas (0.3 CPU each), local Ray with 2 CPUs, direct ingress off",
    "events-disk-full": "events/ on a 128 KiB tmpfs; 503 counted in 5xx as the issue allows (Retry-After), not as client errors",
    "gcs-kill": "bench/gcs_kill.py: 2 HTTP threads; private redis-server, GCS-FT head (0 CPUs) + worker node with the single-hop "
                "Recommender, load on the worker's proxy, gcs_server SIGKILLed, head restarted 5 s after it went "
                "down; recovery_s = kill -> serve.status() RUNNING; window = kill -> a new deployment answered",
    "not built": "drain/downscale, worker-node kill, publish/rollback, corrupt version, training/Tune kills, noisy neighbour",
}


def _merge(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The saved rows with ``rows`` in place of (or after) those of the same faults."""
    import json

    from bench._results import RESULTS

    saved = RESULTS / "chaos.json"
    old = json.loads(saved.read_text())["rows"] if saved.is_file() else []
    new = {r["fault"]: r for r in rows}
    merged = [new.pop(r["fault"], r) for r in old]
    return merged + list(new.values())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", default=str(Path(tempfile.gettempdir()) / "chaos-root"))
    p.add_argument("--fuzz-examples", type=int, default=560, help="per operation and mode (>= 5,000 cases in all)")
    p.add_argument("--kills", type=int, default=3)
    p.add_argument("--threads", type=int, default=6)
    p.add_argument("--gcs-kills", type=int, default=2, help="GCS kills (each on a fresh cluster, ~1-2 min)")
    p.add_argument("--faults", default=",".join(FAULTS),
                   help=f"comma-separated subset of {','.join(FAULTS)}; rows of the others are kept from the saved file")
    args = p.parse_args()
    faults = [f.strip() for f in args.faults.split(",") if f.strip()]
    unknown = sorted(set(faults) - set(FAULTS))
    if unknown:
        p.error(f"unknown fault(s) {unknown}: choose from {', '.join(FAULTS)}")
    root = Path(args.root)
    if not (root / "model" / "manifest.json").is_file():
        log(f"building the artifact root {root}")
        build_root(root)
    rows = []
    if "fuzz" in faults:
        log("fuzz"); rows.append(fuzz_row(root, args.fuzz_examples)); log(str(rows[-1]))
    if "events-disk-full" in faults:
        log("events disk full"); rows.append(disk_full_row(root, 3)); log(str(rows[-1]))
    if "replica-sigkill" in faults:
        log("replica SIGKILL"); rows.append(replica_kill_row(root, args.kills, args.threads)); log(str(rows[-1]))
    if "gcs-kill" in faults:
        log("GCS kill"); rows.append(gcs_kill_row(root, args.gcs_kills, min(args.threads, 2))); log(str(rows[-1]))
    write_results("chaos", PROTOCOL, _merge(rows), columns=COLUMNS)


if __name__ == "__main__":
    main()
