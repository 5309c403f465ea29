"""`ray up cluster/local-cluster.yaml` on three hosts made of network namespaces on this machine,
then the whole flow of docs/cluster.md on that cluster: pretrain, a host failure, tune, publish,
serve, down.

Each "host" is a network namespace with its own address on a private bridge (10.251.N.0/24, no
route out: IP forwarding stays as it is and nothing is NATed) running its own sshd with a key made
for the test. The test fills the file's placeholders (head_ip, worker_ips, ssh user and key), runs
`ray up` from the root namespace and waits for the autoscaler on the head to bring up both workers
over SSH. Every job below is a real `ray job submit --working-dir .` with the token:

1. `rec pretrain` whose three DDP ranks must land on three hosts (STRICT_SPREAD, one CPU per host)
   and talk gloo across the namespaces.
2. A host failure: a 2-rank `rec pretrain` (`train.max_failures=3`); once the Train controller has
   registered a checkpoint, every Ray process of the worker host holding a rank is SIGKILLed (its
   sshd stays up, as on a machine whose Ray crashed). The job must still succeed: Ray Train
   restarts the worker group on the two hosts left and resumes from the registered checkpoint
   (`resumed_from` in the checkpointed history, `[FailurePolicy] RETRY` in the job logs). The
   head's autoscaler then restarts Ray on the host over SSH with the config's worker start command
   ("No recent heartbeat, restarting Ray to recover" in its monitor log) and the host rejoins as a
   new node.
3. `rec tune` on the backbone of step 1 for the one tenant it never saw, with
   `tuning/configs/quick.yaml` changed to one CPU per trial and three at a time, so concurrent
   trials can only run on different hosts: Tune's `node_ip` of the trials must name more than one
   host, and the best trial's adapter is published.
4. `rec publish` (a job) of that adapter into a serving root on the shared file system,
   `cluster/kuberay/render.py --serve-config` with that root and a free port, `serve deploy` to the
   head's dashboard; the head's `/readyz` answers, and `POST /v1/tenants/<t>/recommendations`
   there returns 10 items from the published version (cold start, then with a history).
5. Teardown is the `ray down` of this setup (see below).

What the test changes in the config, and why (the rest, including the start commands'
environment, runs as written):
- `ray stop` is dropped from the start commands, and teardown is by process id: the namespaces
  share one process table with the rest of the machine, where `ray stop` (and `ray down`, which
  runs it on every host over SSH) would stop every Ray of every user. What `ray down` does on a
  `local` provider -- stop Ray on every host and forget the cluster -- is done here by killing
  every process inside the test's namespaces (`ip netns pids`), deleting the namespaces (the
  "hosts") and removing the bootstrap files `ray up` wrote.
- setup commands and file mounts are dropped: the hosts share this machine's file system, so the
  project's venv is used in place of `~/fewshot-rec-env` (the setup commands need the internet).
- each host gets its own Ray temp folder (`--temp-dir`): on one shared /tmp, one node unpacking a
  job's working dir would replace the directory another node's driver runs in.
- GLOO_SOCKET_IFNAME=eth0: the namespaces share one hostname, which resolves to a loopback address.
- `--num-cpus=1` per host, to keep the shared machine usable.

Runs of this module on one machine take turns (a file lock; see `_one_run_per_machine`). It installs
openssh-server, openssh-client and rsync with apt-get when they are missing; it is skipped with the
reason only when not root, when `ip netns` is unavailable, or when that install fails. Cleanup always runs: every process inside the namespaces is killed by pid, then the
namespaces, veths and the bridge are deleted, and the files `ray up` leaves are removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import requests
import yaml

from rec.io.artifacts import read_manifest
from tests.conftest import REPO
from tests.integration._netns_hosts import (
    BIN,
    JOB_TIMEOUT_S,
    N_HOSTS,
    NODES_TIMEOUT_S,
    Dashboard,
    _client_env,
    _hosts,
    _nodes,
    _one_run_per_machine,
    _run,
    _run_job,
    _submit_no_wait,
    cluster_config,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

@pytest.fixture(scope="module")
def hosts():
    with _one_run_per_machine():
        yield from _hosts()



@pytest.fixture(scope="module")
def cluster(hosts):
    token = hosts.base / "token"
    token.write_text(secrets.token_hex(32))
    cfg_path = hosts.base / "cluster.yaml"
    cfg_path.write_text(yaml.safe_dump(cluster_config(hosts, token), sort_keys=False))
    env = _client_env(hosts, token)
    up = subprocess.run([str(BIN / "ray"), "up", str(cfg_path), "-y", "--no-config-cache"], cwd=hosts.base,
                        env=env, capture_output=True, text=True, timeout=NODES_TIMEOUT_S)
    assert up.returncode == 0, f"ray up failed:\n{(up.stdout + up.stderr)[-4000:]}"
    address = f"http://{hosts.ips[0]}:8265"
    deadline, nodes = time.time() + NODES_TIMEOUT_S, {}
    while time.time() < deadline:
        nodes = _nodes(address, env)
        if sorted(nodes.values()) == hosts.ips:
            break
        time.sleep(5)
    yield {"address": address, "env": env, "nodes": nodes, "base": hosts.base, "token": token,
           "dashboard": Dashboard(address, token)}


@pytest.fixture(scope="module")
def whole_cluster(cluster, hosts):
    if sorted(cluster["nodes"].values()) != hosts.ips:
        pytest.skip("the cluster did not come up (see test_ray_up_brings_every_host_into_the_cluster)")
    return cluster


# Tiny synthetic data and model shared by every job: the backbone's config carries them to
# `rec tune` and `rec publish`, which only add the tenant the backbone never saw.
PRETRAIN_TENANTS = 2
SMALL = {
    "data.synthetic.tenants": PRETRAIN_TENANTS, "data.synthetic.users_per_tenant": 120,
    "data.synthetic.items_per_tenant": 80, "data.max_seq_len": 20, "model.max_len": 20, "model.d_model": 32,
    "train.batch_size": 64, "train.cpus_per_worker": 1, "train.placement_strategy": "STRICT_SPREAD",
    "train.resume": "false",
}


def _pretrain_overrides(base: Path, out: Path, **extra) -> list[str]:
    o = {**SMALL, "train.output_dir": out, "ray.storage_path": out / "ray",
         # one text-embedding cache for every job: each catalog is encoded once
         "text.cache_dir": base / "text-cache", **extra}
    return [f"{k}={v}" for k, v in o.items()]


def _train_states(out: Path) -> list[Path]:
    return sorted((out / "ray" / "pretrain").glob("checkpoint_*/state"))


def _registered_epochs(out: Path) -> list[int]:
    """Epochs of the checkpoints Ray Train's controller has registered (a checkpoint folder on disk
    may not be registered yet: a restart would not restore it)."""
    snap = out / "ray" / "pretrain" / "checkpoint_manager_snapshot.json"
    try:
        data = json.loads(snap.read_text())
    except (FileNotFoundError, json.JSONDecodeError):  # absent or being rewritten
        return []
    return sorted(int(c["metrics"]["epoch"]) for c in data.get("checkpoint_results", []))


@pytest.fixture(scope="module")
def pretrained(whole_cluster, hosts) -> Path:
    """`rec pretrain` with STRICT_SPREAD over 3 ranks: one DDP rank per host. Its output folder."""
    out = whole_cluster["base"] / "pretrain"
    _run_job(whole_cluster, "rec", "pretrain", "--address", "auto",
             *_pretrain_overrides(whole_cluster["base"], out, **{"train.epochs": 2, "train.num_workers": N_HOSTS}))
    return out


def test_ray_up_brings_every_host_into_the_cluster(cluster, hosts):
    assert sorted(cluster["nodes"].values()) == hosts.ips, (
        f"alive Ray nodes {cluster['nodes']} after {NODES_TIMEOUT_S} s; expected one per host {hosts.ips}"
    )


def test_pretrain_job_runs_one_rank_per_host(pretrained, whole_cluster, hosts):
    manifest = read_manifest(pretrained / "checkpoint", kind="backbone")
    assert manifest["epochs_run"] == 2
    states = _train_states(pretrained)
    assert states, "no Ray Train checkpoint on the shared storage"
    history = read_manifest(states[-1], kind="train-state")["state"]["history"]
    for h in history:
        ranks = h["worker_nodes"].split(",")
        assert len(ranks) == N_HOSTS
        assert sorted(whole_cluster["nodes"][n] for n in ranks) == hosts.ips, f"epoch {h['epoch']}: ranks on {ranks}"


FT_EPOCHS = 20  # ~0.5 s each (the report blocks for the health-check interval): the kill lands mid-run
REJOIN_TIMEOUT_S = 180


def _is_sshd(pid: int) -> bool:
    with contextlib.suppress(psutil.NoSuchProcess):
        return psutil.Process(pid).name().startswith("sshd")
    return False


def _cmdlines(pids: list[int]) -> dict[int, str]:
    out = {}
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            out[pid] = " ".join(psutil.Process(pid).cmdline())
    return out


def test_killed_worker_host_job_resumes_and_host_rejoins(whole_cluster, hosts):
    """Kill every Ray process of one worker host mid-run (its sshd stays: the machine is up).

    Two ranks with STRICT_SPREAD on three one-CPU hosts: after the kill the two hosts left can still
    hold both ranks, so Ray Train restarts the worker group from the last checkpoint. The
    head's (v1) autoscaler sees the host's heartbeat stop and restarts Ray on it over SSH with the
    config's worker start command: the host rejoins the cluster as a new node."""
    cluster, dash = whole_cluster, whole_cluster["dashboard"]
    out = cluster["base"] / "pretrain-ft"
    job = _submit_no_wait(cluster, "rec", "pretrain", "--address", "auto", *_pretrain_overrides(
        cluster["base"], out, **{"train.epochs": FT_EPOCHS, "train.patience": FT_EPOCHS, "train.num_workers": 2,
                                 "train.max_failures": 3}))
    deadline, polls = time.time() + JOB_TIMEOUT_S, 0
    while not _registered_epochs(out):  # mid-run: a checkpoint is registered, many epochs to come
        polls += 1
        if polls % 10 == 0:
            status = dash.job_status(job)
            assert status in ("PENDING", "RUNNING"), f"job {status} before its first epoch:\n{dash.job_logs(job)[-4000:]}"
        assert time.time() < deadline, f"no checkpoint within {JOB_TIMEOUT_S} s:\n{dash.job_logs(job)[-4000:]}"
        time.sleep(0.2)
    nodes_before = dash.alive_nodes()
    trainers = {i: [c for c in _cmdlines(hosts.ns_pids(hosts.names[i])).values() if "RayTrainWorker" in c]
                for i in (1, 2)}
    victim = next((i for i, t in trainers.items() if t), None)
    assert victim is not None, "no Ray Train worker on either worker host"
    victim_ip, victim_ns = hosts.ips[victim], hosts.names[victim]
    victim_node = next(n for n, ip in nodes_before.items() if ip == victim_ip)
    ray_procs = {p: c for p, c in _cmdlines(hosts.ns_pids(victim_ns)).items() if not _is_sshd(p)}
    registered = _registered_epochs(out)
    for pid in ray_procs:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    killed_at = time.time()
    assert any("raylet" in c for c in ray_procs.values()), f"no raylet among {ray_procs}"
    assert registered[-1] < FT_EPOCHS - 1, "killed after the last epoch: nothing left to recover"

    status, logs = dash.wait_job(job)
    assert status == "SUCCEEDED", f"job {status} after killing {victim_ns}:\n{logs[-6000:]}"
    manifest = read_manifest(out / "checkpoint", kind="backbone")
    assert manifest["epochs_run"] == FT_EPOCHS
    history = read_manifest(_train_states(out)[-1], kind="train-state")["state"]["history"]
    before = [h for h in history if h["resumed_from"] < 0]
    after = [h for h in history if h["resumed_from"] >= 0]
    assert before and after, f"no resume in the history: {[(h['epoch'], h['resumed_from']) for h in history]}"
    assert any(victim_node in h["worker_nodes"].split(",") for h in before), "the killed host held no rank"
    resumed = int(after[0]["resumed_from"])
    # restored from the newest checkpoint the controller had registered when the host died
    assert resumed >= registered[-1], (resumed, registered)  # epoch indices: resumed_from is the last one done
    assert "[FailurePolicy] RETRY" in logs
    assert [int(h["epoch"]) for h in after] == list(range(resumed + 1, FT_EPOCHS))
    assert all(victim_node not in h["worker_nodes"] for h in after)
    for i in range(1, FT_EPOCHS + 1):
        assert f"epoch {i}/{FT_EPOCHS}" in logs, f"epoch {i} missing from the job logs:\n{logs[-4000:]}"

    # The host comes back by itself: the autoscaler restarts Ray on it over SSH.
    deadline, nodes = killed_at + REJOIN_TIMEOUT_S, {}
    while time.time() < deadline:
        nodes = dash.alive_nodes()
        if victim_ip in nodes.values():
            break
        time.sleep(3)
    assert victim_ip in nodes.values(), f"{victim_ip} did not rejoin within {REJOIN_TIMEOUT_S} s: {nodes}"
    assert victim_node not in nodes, "the killed node is still alive"
    assert sorted(nodes.values()) == hosts.ips
    monitor = "".join(p.read_text(errors="replace") for p in
                      (cluster["base"] / hosts.ips[0]).glob("session_*/logs/monitor.*"))
    assert "No recent heartbeat, restarting Ray to recover" in monitor
    cluster["nodes"] = dict(nodes)  # the rejoined node replaces the killed one for later tests
    print(f"killed {len(ray_procs)} Ray processes on {victim_ip} with epochs {registered} registered; "
          f"restarted after epoch {resumed + 1}; rejoined as {next(n for n, ip in nodes.items() if ip == victim_ip)[:12]} "
          f"{time.time() - killed_at:.0f} s after the kill")


def _sweep_file(base: Path) -> Path:
    """tuning/configs/quick.yaml with one CPU per trial and 3 at a time: concurrent trials can only
    run on different hosts (one CPU each), so the sweep has to spread over the cluster."""
    spec = yaml.safe_load((REPO / "tuning" / "configs" / "quick.yaml").read_text())
    spec.update(name="netns-quick", num_samples=3, max_concurrent_trials=N_HOSTS, cpus_per_trial=1)
    path = base / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def tuned(pretrained, whole_cluster) -> dict:
    """`rec tune` on the pretrained backbone for the one tenant it never saw; published.json's entry."""
    base = whole_cluster["base"]
    storage, adapters = base / "tune", base / "adapters"
    logs = _run_job(whole_cluster, "rec", "tune", "--address", "auto", "--backbone", str(pretrained / "checkpoint"),
                    "--sweep", str(_sweep_file(base)), "--storage-path", str(storage),
                    f"data.synthetic.tenants={PRETRAIN_TENANTS + 1}", f"adapt.output_root={adapters}")
    published = json.loads((storage / "netns-quick" / "published.json").read_text())
    assert len(published) == 1, published
    entry = next(iter(published.values()))
    return {**entry, "logs": logs, "experiment": storage / "netns-quick", "adapters": adapters}


def test_tune_job_spreads_trials_over_hosts_and_publishes_an_adapter(tuned, whole_cluster, hosts):
    trials = [json.loads(line) for f in tuned["experiment"].glob("*/result.json")
              for line in f.read_text().splitlines() if line.strip()]
    assert trials, f"no trial results in {tuned['experiment']}"
    trial_ids = {r["trial_id"] for r in trials}
    assert len(trial_ids) == 3, trial_ids
    ips = {r["node_ip"] for r in trials}  # Tune fills node_ip in every result
    assert ips <= set(hosts.ips), ips
    # One CPU per host and one per trial: trials that ran at the same time must be on different
    # hosts. Whether they overlap at all depends on timing (a trial that ASHA stops after a fraction
    # of a second can end before Tune starts the next, which may then reuse its actor), so the
    # spread is asserted where it is required. Result timestamps are whole seconds: an overlap
    # counts when it is longer than that resolution.
    span = {}  # trial -> (start, end, node) from its last result
    for r in trials:
        span[r["trial_id"]] = (r["timestamp"] - r["time_total_s"], r["timestamp"], r["node_ip"])
    overlapping = [(a, b) for a in span for b in span
                   if a < b and min(span[a][1], span[b][1]) - max(span[a][0], span[b][0]) > 1.0]
    assert all(span[a][2] != span[b][2] for a, b in overlapping), (overlapping, span)
    assert len(ips) > 1 or not overlapping, f"every trial ran on {ips}"
    adapter = Path(tuned["adapter"])
    assert adapter.is_relative_to(tuned["adapters"])
    manifest = json.loads((adapter / "manifest.json").read_text())
    assert manifest["tune"]["trial_id"] == tuned["trial_id"]
    assert manifest["tune"]["trials_in_group"] == 3
    assert tuned["trial_id"] in tuned["logs"]
    print(f"tune: {len(trial_ids)} trials on {sorted(ips)}, {len(overlapping)} overlapping pairs; best {tuned['trial_id']} "
          f"({tuned['best_config']['adapt.method']}, val ndcg@10 {tuned['val_ndcg@10']:.4f}) -> {adapter}")


def _free_port_in(ns: str) -> int:
    r = _run("ip", "netns", "exec", ns, sys.executable, "-S", "-c",
             "import socket; s = socket.socket(); s.bind(('', 0)); print(s.getsockname()[1])")
    return int(r.stdout)


@pytest.fixture(scope="module")
def served(tuned, pretrained, whole_cluster, hosts) -> dict:
    """`rec publish` (job) of the tuned tenant, then `serve deploy` of the rendered cluster config."""
    base, env = whole_cluster["base"], whole_cluster["env"]
    root = base / "serving"
    logs = _run_job(whole_cluster, "rec", "publish", "--root", str(root), "--backbone", str(pretrained / "checkpoint"),
                    "--tenant", tuned["tenant"], tuned["adapter"], f"data.synthetic.tenants={PRETRAIN_TENANTS + 1}")
    m = re.search(rf"published {re.escape(tuned['tenant'])} v(\d+) \((\w[\w-]*)", logs)
    assert m, f"no publish line in:\n{logs[-3000:]}"
    serve_cfg = base / "serve-cluster.yaml"
    _run(sys.executable, "cluster/kuberay/render.py", "--serve-config", str(serve_cfg), cwd=REPO)
    cfg = yaml.safe_load(serve_cfg.read_text())
    port = _free_port_in(hosts.names[0])
    cfg["applications"][0]["args"]["artifact_root"] = str(root)
    cfg["http_options"]["port"] = port
    serve_cfg.write_text(yaml.safe_dump(cfg, sort_keys=False))
    r = _run(str(BIN / "serve"), "deploy", str(serve_cfg), "--address", whole_cluster["address"],
             env=env, check=False, timeout=180)
    assert r.returncode == 0, f"serve deploy failed:\n{(r.stdout + r.stderr)[-3000:]}"
    http = requests.Session()
    http.trust_env = False
    url = f"http://{hosts.ips[0]}:{port}"
    deadline, last = time.time() + 240, None
    while time.time() < deadline:
        with contextlib.suppress(requests.RequestException):
            last = http.get(f"{url}/readyz", timeout=15)
            if last.status_code == 200:
                break
        time.sleep(2)
    return {"url": url, "port": port, "http": http, "tenant": tuned["tenant"], "version": f"v{m.group(1)}",
            "method": m.group(2), "readyz": last}


def test_serve_deploy_answers_recommendations_from_the_published_version(served, hosts):
    ready = served["readyz"]
    assert ready is not None and ready.status_code == 200, (
        f"/readyz never answered 200: {None if ready is None else (ready.status_code, ready.text)}")
    assert ready.json()["status"] == "ready"
    http, tenant = served["http"], served["tenant"]
    cold = http.post(f"{served['url']}/v1/tenants/{tenant}/recommendations", json={"history": [], "k": 10}, timeout=30)
    assert cold.status_code == 200, cold.text
    history = [it["item_id"] for it in cold.json()["items"][:3]]
    assert len(cold.json()["items"]) == 10 and cold.json()["cold_start"], cold.json()
    r = http.post(f"{served['url']}/v1/tenants/{tenant}/recommendations", json={"history": history, "k": 10}, timeout=30)
    assert r.status_code == 200, (r.status_code, r.text)
    body = r.json()
    assert len(body["items"]) == 10
    assert not set(history) & {it["item_id"] for it in body["items"]}  # seen items are excluded
    assert body["adapter_version"] == served["version"], body
    assert body["method"] == served["method"] and not body["zero_shot"] and not body["cold_start"], body
    status = http.get(f"{served['url']}/v1/tenants/{tenant}", timeout=30).json()
    assert status["published_version"] == status["adapter_version"] == served["version"], status
    print(f"serve: {tenant} {served['version']} ({served['method']}) answered 10 items at {served['url']}; top: {body['items'][0]}")
