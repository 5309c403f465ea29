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

On the shipped Serve config, deployed on a private Ray head (bench/chaos_serve.py):

- ``noisy-neighbour``: a quiet tenant's p99 alone and while another tenant floods at 10x the
  measured capacity against per-tenant quotas, alternately; ``p99_ratio`` = median of flood / solo.
- ``publish-rollback``: a new version of a served tenant published, then rolled back, under load;
  every answer's ``adapter_version`` checked against the pointer's history (``stale_answers``).
- ``corrupt-version``: a damaged version (truncated or one byte flipped) made live under load;
  ``corrupt_answers`` = answers it gave (must be 0), 503 allowed, 500 not.
- ``replica-drain``: ``serve deploy`` from 2 replicas to 1 and back under load.
- ``worker-node-kill``: every process of a second Ray node (one Ranker replica of the sharded
  config) SIGKILLed under load, the node restarted.

Training faults, each on a private Ray head (their modules' docs say what is counted):

- ``readapt-worker-kill`` (bench/chaos_training.py): the process of a ``rec readapt`` Ray job
  SIGKILLed mid-round; the trigger's next pass resubmits the round, which must publish once.
- ``pretrain-worker-kill`` (bench/chaos_pretrain.py): Ray Train workers SIGKILLed during one
  ``rec pretrain`` on ml-100k; the run resumes from its last checkpoint (``FailureConfig``).
- ``tune-driver-kill`` (bench/chaos_tune.py): the ``rec tune`` driver SIGKILLed mid-sweep and
  started again; the sweep resumes (``Tuner.restore``) with every trial once.

    python -m bench.chaos [--fuzz-examples 560] [--kills 3]     # ~60 min on 2 busy cores
    python -m bench.chaos --faults gcs-kill                      # one row; the saved others are kept
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import chaos_pretrain, chaos_training, chaos_tune
from bench._results import log, write_results
from bench.chaos_noisy import NOISY_PROTOCOL, noisy_neighbour_row
from bench.chaos_serve import SHARDED_CONFIG, config_session, live_tenants, load_row
from bench.serve_coldstart import build_root
from bench.steady_load import SteadyLoad

COLUMNS = ["fault", "injections", "requests", "client_errors", "5xx", "lost_events", "duplicated_events",
           "recovery_s", "p99_ms_during"]
# per-row extras shown in the markdown too (the JSON has every field)
SHOWN = [*COLUMNS, "p99_ratio", "p99_ratio_replica_quota", "client_errors_replica_quota", "stale_answers", "corrupt_answers",
         "failed_cleanly", "retried"]


def fuzz_row(root: Path, examples: int) -> dict[str, Any]:
    from bench.contract_fuzz import fuzz_contract
    from serve_apps.api import serve_in_process

    tenants = live_tenants(root)
    with serve_in_process({"artifact_root": str(root)}) as (app, _):
        r = fuzz_contract(app, examples_per_mode=examples, stateful_examples=20, tenants=tenants)
    five = sum(n for k, n in r.statuses.items() if k.rsplit(" ", 1)[1].startswith("5"))
    return {"fault": "fuzz", "injections": 0, "requests": r.cases + r.stateful_steps, "client_errors": len(r.failures),
            "5xx": five, "lost_events": None, "duplicated_events": None, "recovery_s": None, "p99_ms_during": None,
            "failures": r.failures[:5]}


def replica_kill_row(root: Path, kills: int, threads: int) -> dict[str, Any]:
    """SIGKILL of one of two Ranker replicas (``config.sharded.yaml`` as shipped: tenants
    multiplexed over the Rankers) under load, ``kills`` times; recovery_s = kill -> two Ranker
    replicas RUNNING again, the killed one replaced."""
    layout = {"Ingress": 1, "Ranker": 2}
    recovery, windows = [], []
    with config_session(root, layout, config=SHARDED_CONFIG) as s, \
            SteadyLoad(s.url, live_tenants(root), threads) as load:
        time.sleep(3)
        for k in range(kills):
            victim = sorted(r["pid"] for r in s.replicas("Ranker"))[0]
            t0 = time.time()
            os.kill(victim, signal.SIGKILL)
            while True:
                running = [r["pid"] for r in s.replicas("Ranker") if r["state"] == "RUNNING"]
                if len(running) == 2 and victim not in running:
                    break
                if time.time() - t0 > 300:
                    raise TimeoutError(f"no second Ranker 300 s after the kill: {s.replica_states('Ranker')}")
                time.sleep(0.2)
            recovery.append(time.time() - t0)
            windows.append((t0, time.time()))
            log(f"kill {k + 1}/{kills}: pid {victim}, two replicas again after {recovery[-1]:.1f} s")
            time.sleep(2)
        retried = s.ingress_stats().get("ingress_retries")
    return load_row("replica-sigkill", kills, load, windows, recovery, ingress_retries=retried)


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
    tenant = live_tenants(root)[0]
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


# --- rows on the shipped config (bench/chaos_serve.py) ------------------------------------------
def _private_root(root: Path) -> Path:
    """A copy of ``root``'s model and tenants for a row that publishes, corrupts or rolls back."""
    work = Path(tempfile.mkdtemp(prefix="chaos-row-"))
    for part in ("model", "tenants"):
        shutil.copytree(root / part, work / part)
    return work


def _claim_copy(store: Any, tenant: str, of: int) -> int:
    """A new version ``v<N>`` of ``tenant`` holding ``v<of>``'s files (the pointer is not moved)."""
    src = store.version_dir(tenant, of)
    return store.claim_version(tenant, lambda out: shutil.copytree(src, out, dirs_exist_ok=True))


def _republish(store: Any, tenant: str, of: int | None = None) -> int:
    """A new version of ``tenant`` made live: ``v<of>``'s bundle (default: the live one) published
    again the way ``rec publish`` ends (claim ``v<N>`` -> load and verify it -> move the pointer).
    The bench root has no backbone to export a new bundle from; serving sees only the version
    number and the files."""
    from rec.serving.bundles import load_tenant_bundle

    version = _claim_copy(store, tenant, store.current_version(tenant) if of is None else of)
    load_tenant_bundle(store.version_dir(tenant, version))
    store.set_current(tenant, version)
    return version


def _until_served(load: SteadyLoad, tenant: str, version: str, since: float, timeout_s: float = 60.0,
                  run: int = 10) -> float:
    """Seconds from ``since`` to the send time of the first of ``run`` consecutive answers of ``tenant``
    (in completion order) that all carry ``version``."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        mine = [(sent, v) for sent, _, t, v in list(load.read_values) if t == tenant and sent >= since]
        if len(mine) >= run and all(v == version for _, v in mine[-run:]):
            first = len(mine) - run
            while first > 0 and mine[first - 1][1] == version:
                first -= 1
            return mine[first][0] - since
        time.sleep(0.2)
    raise TimeoutError(f"{tenant} not answered by {version} within {timeout_s:g} s")


def _stale_answers(load: SteadyLoad, tenant: str, live: list[tuple[float, float, int]], poll_s: float) -> int:
    """Answers of ``tenant`` whose version was not live at any moment from ``poll_s`` (+0.5 s)
    before the request was sent until it ended. ``live``: (first moment, last moment, version),
    the pointer's history."""
    bad = 0
    for sent, end, t, v in load.read_values:
        if t == tenant and not any(f"v{ver}" == v and a <= end and b >= sent - poll_s - 0.5 for a, b, ver in live):
            bad += 1
    return bad


class _Pointer:
    """The history of a tenant's version pointer as this process moves it: (from, until, version)."""

    def __init__(self, store: Any, tenant: str) -> None:
        self.store, self.tenant = store, tenant
        self.live = [(0.0, float("inf"), store.current_version(tenant))]

    def move(self, to: Callable[[], int]) -> tuple[int, float]:
        """Run ``to`` (which moves the pointer and returns the new version); (version, start time)."""
        t0 = time.time()
        version = to()
        a, _, old = self.live[-1]
        self.live[-1] = (a, time.time(), old)
        self.live.append((t0, float("inf"), version))
        return version, t0


def publish_rollback_row(root: Path, cycles: int, threads: int) -> dict[str, Any]:
    """Publish a new version of a served tenant, then roll it back, ``cycles`` times under load
    (2 replicas of the shipped config); every answer's ``adapter_version`` is checked against the
    pointer's history. recovery_s = pointer moved -> every answer of the tenant carries the new version."""
    from rec.export.publish import rollback_tenant
    from rec.serving.store import ArtifactRoot

    work = _private_root(root)
    store, tenants = ArtifactRoot(work), live_tenants(work)
    tenant, pointer, recovery, windows = tenants[0], _Pointer(store, tenants[0]), [], []
    try:
        with config_session(work, replicas=2) as s, \
                SteadyLoad(s.url, tenants, threads, read=lambda r: r.json()["adapter_version"]) as load:
            time.sleep(2)
            for k in range(cycles):
                for name, move in (("publish", lambda: _republish(store, tenant)),
                                   ("rollback", lambda: rollback_tenant(work, tenant).version)):
                    version, t0 = pointer.move(move)
                    recovery.append(_until_served(load, tenant, f"v{version}", t0))
                    windows.append((t0, t0 + recovery[-1]))
                    log(f"cycle {k + 1}/{cycles}: {name} -> v{version}, served after {recovery[-1]:.2f} s")
                    time.sleep(1)
        checked = sum(1 for *_, t, _ in load.read_values if t == tenant)
        return load_row("publish-rollback", 2 * cycles, load, windows, recovery,
                        stale_answers=_stale_answers(load, tenant, pointer.live, poll_s=1.0), answers_checked=checked)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _corrupt(folder: Path, how: str) -> None:
    """Damage a bundle after its manifest was written: ``truncate`` cuts the catalog's safetensors in
    half (a partial copy), ``flip`` changes one byte of it (the checksum no longer matches)."""
    path = folder / "catalog.safetensors"
    data = bytearray(path.read_bytes())
    if how == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
    else:
        data[-1] ^= 0xFF
        path.write_bytes(bytes(data))


def corrupt_version_row(root: Path, injections: int, threads: int) -> dict[str, Any]:
    """A version whose files are damaged after publishing (truncated or one byte flipped, alternately)
    becomes the tenant's pointer under load (2 replicas of the shipped config); it must never answer:
    the last good version serves with a warning (status shows ``fallback_reason``), or 503, never
    500. Then a good version is published; recovery_s = that publish -> every answer carries it."""
    import requests

    from rec.serving.store import ArtifactRoot

    work = _private_root(root)
    store, tenants = ArtifactRoot(work), live_tenants(work)
    tenant, recovery, windows, corrupt, fallbacks = tenants[0], [], [], set(), 0
    try:
        with config_session(work, replicas=2) as s, \
                SteadyLoad(s.url, tenants, threads, read=lambda r: r.json()["adapter_version"]) as load:
            time.sleep(2)
            for k in range(injections):
                how = ("truncate", "flip")[k % 2]
                good = store.current_version(tenant)
                bad = _claim_copy(store, tenant, good)
                _corrupt(store.version_dir(tenant, bad), how)
                t0 = time.time()
                store.set_current(tenant, bad)  # a pointer moved by hand or by a tool that skips verification
                corrupt.add(f"v{bad}")
                time.sleep(3)  # > poll_interval_s: both replicas have seen the pointer
                status = requests.get(f"{s.url}/v1/tenants/{tenant}", timeout=30).json()
                fallbacks += bool(status.get("fallback_reason")) and status.get("adapter_version") == f"v{good}"
                fixed = _republish(store, tenant, of=good)
                recovery.append(_until_served(load, tenant, f"v{fixed}", time.time()))
                windows.append((t0, time.time()))
                log(f"corrupt {k + 1}/{injections} ({how}): v{bad} live on disk, served {status.get('adapter_version')} "
                    f"(fallback: {status.get('fallback_reason')!r:.80}); good v{fixed} after {recovery[-1]:.2f} s")
        served_corrupt = sum(1 for *_, t, v in load.read_values if t == tenant and v in corrupt)
        return load_row("corrupt-version", injections, load, windows, recovery, served=lambda c: c in (200, 503),
                        corrupt_answers=served_corrupt, fallback_reported=fallbacks)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def replica_drain_row(root: Path, downscales: int, threads: int) -> dict[str, Any]:
    """Redeploy the shipped config from 2 replicas to 1 (``serve deploy`` with a new num_replicas),
    ``downscales`` times under load, back to 2 between; the stopped replica drains with the config's
    ``graceful_shutdown_*`` settings. recovery_s = the redeploy -> one replica left (the other stopped)."""
    recovery, windows = [], []
    with config_session(root, replicas=2) as s, SteadyLoad(s.url, live_tenants(root), threads) as load:
        time.sleep(2)
        for k in range(downscales):
            t0 = time.time()
            recovery.append(s.deploy(1))
            windows.append((t0, time.time()))
            up = s.deploy(2)
            windows.append((time.time() - up, time.time()))
            log(f"downscale {k + 1}/{downscales}: 2 -> 1 in {recovery[-1]:.1f} s, back to 2 in {up:.1f} s")
            time.sleep(2)
    return load_row("replica-drain", downscales, load, windows, recovery)


def worker_node_kill_row(root: Path, kills: int, threads: int, down_s: float = 5.0) -> dict[str, Any]:
    """SIGKILL of a whole Ray worker node under load, ``kills`` times: the sharded config
    (``Ingress -> Ranker``, the Ingress pinned to the head, one Ranker replica per node) on a head
    plus a worker node (``ray start --address``), every process of the worker node killed by pid,
    the node started again ``down_s`` later as a restarted VM or pod would. noticed_s = kill ->
    Serve lists one Ranker RUNNING; recovery_s = kill -> two Ranker replicas RUNNING, the killed
    one replaced (None when the node could not be started again: then the window ends 20 s after
    Serve noticed)."""
    layout = {"Ingress": 1, "Ranker": 2}
    options = {"Ingress": {"ray_actor_options": {"resources": {"chaos_head": 0.01}}}, "Ranker": {"max_replicas_per_node": 1}}
    recovery, windows, noticed, restart_failures = [], [], [], []
    with config_session(root, layout, config=SHARDED_CONFIG, options=options, head_resources={"chaos_head": 1},
                        worker_cpus=1) as s, SteadyLoad(s.url, live_tenants(root), threads) as load:
        time.sleep(2)
        for k in range(kills):
            before = {r["replica_id"] for r in s.replicas("Ranker")}
            t0 = time.time()
            pids = s.worker.kill()
            while len([r for r in s.replicas("Ranker") if r["state"] == "RUNNING"]) > 1 and time.time() - t0 < 120:
                time.sleep(0.3)
            noticed.append(round(time.time() - t0, 1))
            time.sleep(max(0.0, down_s - (time.time() - t0)))
            try:
                s.worker.start(timeout_s=240)
                while True:
                    running = {r["replica_id"] for r in s.replicas("Ranker") if r["state"] == "RUNNING"}
                    if len(running) == 2 and running != before:
                        break
                    if time.time() - t0 > 300:
                        raise TimeoutError(f"no second Ranker 300 s after the node kill: {s.replica_states('Ranker')}")
                    time.sleep(0.3)
            except (RuntimeError, TimeoutError) as e:  # the machine could not start the node again
                restart_failures.append(str(e).splitlines()[0])
                time.sleep(max(0.0, t0 + noticed[-1] + 20 - time.time()))
                windows.append((t0, time.time()))
                log(f"node kill {k + 1}/{kills}: {len(pids)} processes, noticed after {noticed[-1]} s; restart failed: {e!s:.200}")
                break
            recovery.append(time.time() - t0)
            windows.append((t0, time.time()))
            log(f"node kill {k + 1}/{kills}: {len(pids)} processes, noticed after {noticed[-1]} s, "
                f"two Rankers again after {recovery[-1]:.1f} s")
            time.sleep(2)
        # calls the Ingress retried on another Ranker: > 0 shows the dead node's replica had traffic to lose
        retried = s.ingress_stats().get("ingress_retries")
    return load_row("worker-node-kill", len(windows), load, windows, recovery, down_s=down_s, noticed_s=noticed,
                    node_restart_failures=restart_failures, ingress_retries=retried)


FAULTS = ("fuzz", "events-disk-full", "replica-sigkill", "gcs-kill", "noisy-neighbour", "publish-rollback",
          "corrupt-version", "replica-drain", "worker-node-kill", "readapt-worker-kill",
          "pretrain-worker-kill", "tune-driver-kill")
PROTOCOL = {
    "load": "closed-loop HTTP threads through a Serve proxy (--threads: 6 in replica-sigkill, 4 in the other rows on the "
            "shipped config; gcs-kill uses 2), round-robin over the root's two tenants, zero-shot asks (history [], k 5)",
    "replica-sigkill": "config.sharded.yaml on the shipped-config harness below (tenants multiplexed over the Rankers "
                       "as shipped), Ingress + 2 Rankers at 0.3 CPU; the Ranker with the lower pid SIGKILLed; "
                       "recovery_s = kill -> 2 Rankers RUNNING, the killed one replaced; ingress_retries = calls retried",
    "events-disk-full": "events/ on a 128 KiB tmpfs; 503 counted in 5xx as the issue allows (Retry-After), not as client errors",
    "gcs-kill": "bench/gcs_kill.py: 2 HTTP threads; private redis-server, GCS-FT head (0 CPUs) + worker node with the single-hop "
                "Recommender, load on the worker's proxy, gcs_server SIGKILLed, head restarted 5 s after it went "
                "down; recovery_s = kill -> serve.status() RUNNING; window = kill -> a new deployment answered",
    "shipped config": "replica-sigkill, noisy-neighbour, publish-rollback, corrupt-version, replica-drain, worker-node-kill: "
                      "serve_apps/config.yaml (replica-sigkill, worker-node-kill: config.sharded.yaml) applied with the Serve REST API (serve deploy) on a private "
                      "2-CPU head (bench/ray_head.py), fixed replica counts instead of autoscaling, 0.3 CPU per replica, "
                      "the shipped graceful_shutdown_* and poll_interval_s (1 s); p99_ms_during = answers ending inside "
                      "a fault window (+1 s)",
    "noisy-neighbour": NOISY_PROTOCOL,
    "publish-rollback": "a new version = the live bundle claimed as v<N>, verified, pointer moved (rec publish's last "
                        "steps; the bench root has no backbone to export a new one), then rec.export.publish.rollback_tenant; "
                        "stale_answers = answers whose version was not live from poll_interval_s + 0.5 s before the "
                        "send to the answer; recovery_s = pointer move -> 10 answers in a row carry the new version",
    "corrupt-version": "a copy of the live version claimed as v<N>, then catalog.safetensors truncated to half or one "
                       "byte flipped (alternately), then the pointer moved onto it with no verification; status read 3 s "
                       "later; then the good bundle republished; 200 and 503 are expected answers, anything else is a "
                       "client error; recovery_s = the good republish -> served",
    "replica-drain": "serve deploy num_replicas 2 -> 1 (recovery_s = until one replica is left), then back to 2; the "
                     "shipped graceful_shutdown_wait_loop_s 2 / graceful_shutdown_timeout_s 30",
    "worker-node-kill": "head (2 CPUs, the Ingress pinned there) + worker node (1 CPU, ray start --address), one Ranker "
                        "replica per node (max_replicas_per_node 1), multiplexed by tenant as shipped; ray start, raylet "
                        "and every process under them SIGKILLed by pid; the node started again 5 s later in a fresh "
                        "folder; noticed_s = kill -> Serve lists one Ranker RUNNING; recovery_s = kill -> 2 Ranker "
                        "replicas RUNNING, the killed one replaced; ingress_retries = calls the Ingress retried",
    "readapt-worker-kill": chaos_training.PROTOCOL,
    "pretrain-worker-kill": chaos_pretrain.PROTOCOL,
    "tune-driver-kill": chaos_tune.PROTOCOL,
    "machine": "2 cores shared with other jobs (load average 10-64 during the runs): absolute p99 values are noisy, "
               "compare ratios and error counts",
    "worker-node-kill runs": "two runs pooled: 21:43 (2 kills, node back both times; ingress_retries not yet recorded) and "
                             "21:49 (1 kill, ingress_retries 1; the node could not start again within 240 s on the loaded "
                             "machine, so recovery_s is the first run's and the window ended 20 s after Serve noticed)",
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
    p.add_argument("--cycles", type=int, default=3, help="publish + rollback cycles; corrupt versions; downscales")
    p.add_argument("--repeats", type=int, default=3, help="noisy neighbour: solo/flood phase pairs")
    p.add_argument("--phase-s", type=float, default=10.0, help="noisy neighbour: seconds per phase")
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
    runs: dict[str, Callable[[], dict[str, Any]]] = {
        "fuzz": lambda: fuzz_row(root, args.fuzz_examples),
        "events-disk-full": lambda: disk_full_row(root, 3),
        "replica-sigkill": lambda: replica_kill_row(root, args.kills, args.threads),
        "gcs-kill": lambda: gcs_kill_row(root, args.gcs_kills, min(args.threads, 2)),
        "noisy-neighbour": lambda: noisy_neighbour_row(root, args.repeats, args.phase_s),
        "publish-rollback": lambda: publish_rollback_row(root, args.cycles, args.threads),
        "corrupt-version": lambda: corrupt_version_row(root, args.cycles, args.threads),
        "replica-drain": lambda: replica_drain_row(root, args.cycles, args.threads),
        "worker-node-kill": lambda: worker_node_kill_row(root, args.kills, args.threads),
        "readapt-worker-kill": lambda: chaos_training.readapt_kill_row(args.kills),
        "pretrain-worker-kill": lambda: chaos_pretrain.pretrain_kill_row(args.kills),
        "tune-driver-kill": lambda: chaos_tune.tune_kill_row(args.kills),
    }
    rows = []
    for fault in FAULTS:
        if fault in faults:
            log(fault)
            rows.append(runs[fault]())
            log(str(rows[-1]))
            write_results("chaos", PROTOCOL, _merge(rows), columns=SHOWN)  # each row saved as soon as it is measured


if __name__ == "__main__":
    main()
