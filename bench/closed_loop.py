"""Closed loop: real users replayed in time order through the live Ray Serve app, which learns from them.

Protocol. The few-shot benchmark's text-only backbone (``bench/fewshot-2core.yaml``: pretrained
with Ray Train on its source tenants, cached under its ``runs_dir``, pretrained first if absent);
the six few-shot targets are never pretraining data. Per target, the whole catalog is published
zero-shot five times, one tenant per policy, into one artifact root served by one app (2
``Recommender`` replicas at 0.25 CPU, live feedback polled every 0.5 s). The replayed users are
users the few-shot benchmark's seeded 3,000-user sample of the target does not contain (ML-100K has
943 users, all in it: its users are used; no model here ever trained on any target user), each
capped at its first 50 interactions, and their interactions are replayed in time order,
``--events`` per target. At each step every tenant is asked over real HTTP (127.0.0.1, the Serve
proxy) for the top 10 given the user's true history; if the true next item is shown, a click
quoting the answer's ``request_id`` is posted, otherwise nothing (the service logged the
impression). Eight requests are in flight at a time. Policies (the ``policy`` column):

    static            zero-shot, greedy, online prior off: never updated
    popularity        greedy on the online counts (prior weight 1000: any counted item outranks any
                      uncounted one; the model only orders the uncounted ones). The online prior
                      counts clicks and each ask's newest history item (count_history=true)
    greedy+readapt    greedy + the online priors + re-adaptation. The popularity prior's weight and the
                      item-to-item prior's (rec.serving.online_transitions) are tuned per tenant on
                      users' next interactions (rec.serving.prior_tuning: every pair of TUNED_GRID x
                      TRANSITION_GRID, starting at the serving defaults 0.5 and 0, free to move after
                      30 judged interactions)
    thompson+readapt  thompson re-ranking of the model's top 50 + online prior + re-adaptation
    linucb+readapt    linucb (NeuralLinear) re-ranking of the top 50 + online prior + re-adaptation

Re-adaptation: every ``--readapt-every`` replayed events (2,000; not after the last window), each
``+readapt`` tenant gets one ``rec readapt`` round submitted as a Ray job with the trigger's Jobs SDK hooks
(``rec.feedback.trigger.job_hooks``), one at a time, and the replay waits for it (in production
users keep arriving meanwhile). A round learns from the log: clicks, and each ask's newest history item
(what the user did last, which the app reports when it asks: rec/feedback/log_reader.py), with
``feedback.readapt.method=item-terms`` (a per-item bias and ID residual over the frozen backbone,
shipped only when better than popularity on the tenant's own validation users); its gate (the 20
users who acted last, ``feedback.readapt.holdout_users=20``, ``min_train_users=10``: ML-100K's
replay has 48 users by its first round) publishes only a candidate strictly better than the live
version on their most recent events; a round with too few users ends without a version (``skipped``). Rows: one per (dataset, policy, window of ``--window``
events): ``hr@10``/``ndcg@10`` of that window; ``readapt_rounds`` = rounds published before the
window began; ``readapt_s`` = trigger -> live version (or -> decision when kept) of the round run
just before the window. Also measured: event -> reflected in the next ranking (a probe tenant with
the popularity settings: a click on an item outside the top 10, then recommendations every 20 ms
until it is shown), and a replica SIGKILL during the first dataset's second window, after which
every acknowledged answer and event must be in the log exactly once.

    python -m bench.closed_loop                       # the six targets, 4,000 events each
    python -m bench.closed_loop --datasets office --events 2000
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._results import RESULTS, log, write_results  # noqa: E402
from bench.ray_head import free_port, local_head  # noqa: E402
from bench.closed_loop_client import Acks, ReplayClient, Step, StepResult, check_log, window_metrics  # noqa: E402
from rec.serving.live_feedback import FeedbackSettings  # noqa: E402

COLUMNS = ["dataset", "policy", "window", "events", "hr@10", "ndcg@10", "readapt_rounds", "readapt_s"]
APP = "closed-loop"
POLL_S = 0.5
#: the learning arms tune their prior weight on users' next interactions (rec.serving.prior_tuning), starting at 0.5
TUNED_GRID = [0.0, 0.5, 1.0, 2.0, 4.0, 8.0]
#: ... together with the item-to-item prior's weight (rec.serving.online_transitions): every pair is tried
TRANSITION_GRID = [0.0, 1.0, 4.0]
ARMS: dict[str, tuple[FeedbackSettings, bool]] = {  # policy -> (tenant feedback settings, re-adapts)
    "static": (FeedbackSettings(policy="greedy", prior_weight=0.0), False),
    "popularity": (FeedbackSettings(policy="greedy", prior_weight=1000.0, count_history=True), False),
    "greedy+readapt": (FeedbackSettings(policy="greedy", count_history=True, prior_weight_grid=TUNED_GRID,
                                                  transition_weight_grid=TRANSITION_GRID), True),
    "thompson+readapt": (FeedbackSettings(policy="thompson", count_history=True, prior_weight_grid=TUNED_GRID,
                                                  transition_weight_grid=TRANSITION_GRID), True),
    "linucb+readapt": (FeedbackSettings(policy="linucb", count_history=True, prior_weight_grid=TUNED_GRID,
                                                  transition_weight_grid=TRANSITION_GRID), True),
}
# item-terms: what a zero-shot tenant lacks is its own item statistics (per-item bias from counts + ID residual,
# shipped only if it beats popularity and the blends on the tenant's own validation users); a LoRA round on a
# pilot replay kept its initial weights (gate tie)
# a gate of 20 users + 10 to train (defaults 50 + 20): ML-100K's replay has 48 users by its first round
# eval.exclude_history: the replay asks with the API's default exclude_history=true, so the gate and the
# method's validation must rank the same way (with history in, a popularity candidate re-recommends what
# ML-100K users already watched and its gate NDCG@10 fell to 0.0 in a first run)
READAPT_OVERRIDES = ["feedback.readapt.method=item-terms", "feedback.readapt.holdout_users=20",
                     "feedback.readapt.min_train_users=10", "eval.exclude_history=true", "adapt.torch_threads=1"]
USER_CAP = 50


def tenant_id(dataset: str, policy: str) -> str:
    return f"{dataset}-{policy.replace('+', '-')}"


@dataclass
class DatasetWorld:
    name: str
    steps: list[Step]
    tenants: dict[str, str]  # policy -> tenant id
    configs: dict[str, Path]  # tenant id -> config of its readapt jobs
    catalog_ids: np.ndarray
    users_note: str


# --- world ------------------------------------------------------------------------------------------
def _replay_users(src, tenant, events: int, seed: int = 0) -> tuple[list[int], str]:  # noqa: ANN001
    """Rows of ``tenant`` outside the few-shot benchmark's user sample, shuffled, enough for ``events``."""
    from rec.data.loaders import load_source

    rows = np.arange(tenant.num_users)
    note = "all users (the few-shot sample is the whole dataset)"
    if src.max_users is not None and src.max_users < tenant.num_users:
        sampled = set(map(str, load_source(src, min_seq_len=3).users))
        rows = np.array([u for u in rows if str(tenant.users[u]) not in sampled])
        note = f"{len(rows)} users outside the few-shot benchmark's {src.max_users}-user sample"
    rows = np.random.default_rng(seed).permutation(rows)
    picked, n = [], 0
    for u in rows:
        picked.append(int(u))
        n += min(USER_CAP, len(tenant.sequence(u)))
        if n >= events:
            break
    return picked, note


def replay_steps(tenant, users: list[int], events: int) -> list[Step]:  # noqa: ANN001
    """The users' first ``USER_CAP`` interactions in time order (ties: user, position), the first ``events``."""
    ids = tenant.items.ids
    order = []
    for u in users:
        seq = tenant.sequence(u)[:USER_CAP]
        ts = tenant.timestamps[tenant.offsets[u]: tenant.offsets[u] + len(seq)]
        order += [(int(ts[j]), u, j) for j in range(len(seq))]
    order.sort()
    steps = []
    for i, (_, u, j) in enumerate(order[:events]):
        seq = tenant.sequence(u)
        steps.append(Step(i, f"u{tenant.users[u]}", tuple(str(ids[x]) for x in seq[:j]), str(ids[seq[j]])))
    return steps


def build_dataset(ctx, name: str, loaded, root: Path, work: Path, events: int) -> DatasetWorld:  # noqa: ANN001
    """Publish the target's catalog zero-shot once per policy (+ a probe tenant), write the readapt configs."""
    import yaml

    from rec.config import load_config
    from rec.export.publish import publish_tenant
    from rec.serving.live_feedback import write_feedback_settings
    from rec.serving.store import ArtifactRoot
    from rec.text import encode_items
    from rec.training.corpus import load_tenants

    src = next(t for t in ctx.bc.targets if t.name == name)
    store = ArtifactRoot(root)
    tenants, configs, steps, note, ids = {}, {}, [], "", None
    for policy in [*ARMS, "probe"]:
        tid = tenant_id(name, policy)
        tree = loaded.cfg.model_dump(mode="json")
        tree["data"] = {**tree["data"], "sources": [src.model_copy(update={"max_users": None, "name": tid}).model_dump(mode="json")],
                        "holdout": []}
        tree["train"] = {**tree["train"], "select_on": "valid"}  # pretraining's setting; no holdout here
        path = work / "configs" / f"{tid}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(tree, sort_keys=False))
        (tenant,) = load_tenants(load_config(path).data)
        if not steps:
            emb = encode_items(list(tenant.items.text), loaded.cfg.text)
            users, note = _replay_users(src, tenant, events)
            steps, ids = replay_steps(tenant, users, events), tenant.items.ids
        publish_tenant(root, loaded, tenant, emb)
        settings = ARMS[policy][0] if policy in ARMS else ARMS["popularity"][0]
        write_feedback_settings(store.tenant_dir(tid), settings)
        configs[tid] = path
        if policy in ARMS:
            tenants[policy] = tid
    log(f"{name}: {len(ids)} items, {len(steps)} replay steps from {len({s.user for s in steps})} users ({note})")
    return DatasetWorld(name, steps, tenants, configs, ids, note)


# --- Ray, Serve, jobs -------------------------------------------------------------------------------
def start_app(root: Path, port: int) -> str:
    from ray import serve

    from serve_apps.api import Ingress
    from serve_apps.args import RecommenderArgs
    from serve_apps.recommender import SINGLE_HOP

    args = RecommenderArgs(artifact_root=str(root), poll_interval_s=POLL_S, max_batch_size=16).model_dump(mode="json")
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    # serve_apps/config.yaml's Recommender, with 2 replicas at 0.25 CPU so one can be killed
    dep = Ingress.options(name=SINGLE_HOP, num_replicas=2, max_ongoing_requests=128, ray_actor_options={"num_cpus": 0.25})
    serve.run(dep.bind(args), name=APP, route_prefix="/")
    return f"http://127.0.0.1:{port}"


def kill_one_replica() -> int | None:
    """SIGKILL one Recommender replica of the app (Serve starts a new one); its pid."""
    import psutil

    for p in psutil.process_iter(["cmdline"]):
        if f"ServeReplica:{APP}:Recommender" in " ".join(p.info["cmdline"] or []):
            os.kill(p.pid, signal.SIGKILL)
            return p.pid
    return None


@dataclass
class RoundResult:
    tenant: str
    decision: str  # published / kept / skipped
    seconds: float
    detail: dict[str, Any]


def readapt_round(address: str, root: Path, ckpt: Path, world: DatasetWorld, tid: str) -> RoundResult:
    """One ``rec readapt`` Ray job for ``tid``, submitted like the trigger does; waits for its outcome."""
    from ray.job_submission import JobSubmissionClient

    from rec.feedback.rounds import read_records
    from rec.feedback.trigger import job_hooks, readapt_entrypoint
    from rec.serving.store import ArtifactRoot

    store, client = ArtifactRoot(root), JobSubmissionClient(address)
    submit, _ = job_hooks(address, lambda t: readapt_entrypoint(t, root, ckpt, str(world.configs[t]), READAPT_OVERRIDES), 1.0)
    before, n_before = store.current_version(tid), len(read_records(root, tid, "round"))
    t0 = time.perf_counter()
    sid = submit(tid)
    while True:
        if store.current_version(tid) != before:
            seconds = time.perf_counter() - t0
            while not client.get_job_status(sid).is_terminal():
                time.sleep(0.2)
            break
        if client.get_job_status(sid).is_terminal():
            seconds = time.perf_counter() - t0
            break
        time.sleep(0.1)
    records = read_records(root, tid, "round")
    if len(records) > n_before:
        rec = records[-1]
        detail = {"gate_new": rec["gate"]["new"], "gate_current": rec["gate"]["current"], "events_used": rec["events_used"],
                  "users": rec["users"], "adapt_s": round(rec["adapt_s"], 1), "version": rec.get("version")}
        return RoundResult(tid, rec["decision"], seconds, detail)
    tail = [ln for ln in client.get_job_logs(sid).splitlines() if ln.strip()][-1:]
    return RoundResult(tid, "skipped", seconds, {"why": tail[0][:200] if tail else "no log"})


# --- the replay -------------------------------------------------------------------------------------
def event_to_ranking_s(client: ReplayClient, world: DatasetWorld, probes: int = 3) -> list[float]:
    """Seconds from an acknowledged click on an item outside the top 10 to the first answer that shows it."""
    tid = tenant_id(world.name, "probe")
    history = [str(world.catalog_ids[0])]
    out = []
    for i in range(probes):
        top = set(client.recommend(tid, history))
        item = next(str(x) for x in world.catalog_ids[1 + 7 * i:] if str(x) not in top)
        client.click(tid, item, key=f"probe-{tid}-{i}")
        t0 = time.perf_counter()
        while item not in client.recommend(tid, history):
            if time.perf_counter() - t0 > 30:
                raise RuntimeError(f"{tid}: a click on {item} was not reflected in 30 s")
            time.sleep(0.02)
        out.append(time.perf_counter() - t0)
    return out


def run_window(client: ReplayClient, world: DatasetWorld, steps: list[Step], kill_after_s: float | None) -> dict[str, list[StepResult]]:
    tasks = [(world.tenants[p], s) for s in steps for p in ARMS]
    timer = threading.Timer(kill_after_s, lambda: log(f"  SIGKILLed replica pid {kill_one_replica()}")) if kill_after_s else None
    if timer:
        timer.start()
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda t: client.step(*t), tasks))
    if timer:
        timer.join()
    by_tenant: dict[str, list[StepResult]] = {}
    for r in results:
        by_tenant.setdefault(r.tenant, []).append(r)
    return by_tenant


def replay_dataset(client: ReplayClient, world: DatasetWorld, address: str, root: Path, ckpt: Path, window: int,
                   readapt_every: int, kill: bool) -> tuple[list[dict], list[dict], dict]:
    rows, rounds, published = [], [], dict.fromkeys(ARMS, 0)
    last_s: dict[str, float | None] = dict.fromkeys(ARMS)
    cumulative: dict[str, list[int]] = {p: [] for p in ARMS}
    n_windows = (len(world.steps) + window - 1) // window
    for w in range(n_windows):
        t0 = time.perf_counter()
        res = run_window(client, world, world.steps[w * window:(w + 1) * window], 3.0 if kill and w == 1 else None)
        for policy, tid in world.tenants.items():
            m = window_metrics(res[tid])
            cumulative[policy] += [int(r.rank is not None) for r in sorted(res[tid], key=lambda r: r.index)]
            rows.append({"dataset": world.name, "policy": policy, "window": w + 1, "events": min(len(world.steps), (w + 1) * window),
                         "hr@10": round(m["hr@10"], 4), "ndcg@10": round(m["ndcg@10"], 4), "readapt_rounds": published[policy],
                         "readapt_s": None if last_s[policy] is None else round(last_s[policy], 1)})
        log(f"{world.name} window {w + 1}/{n_windows} ({time.perf_counter() - t0:.0f} s): "
            + ", ".join(f"{r['policy']} {r['hr@10']:.3f}" for r in rows[-len(ARMS):]))
        if w == n_windows - 1:
            break
        due = ((w + 1) * window) % readapt_every == 0
        for policy, (_, readapts) in ARMS.items():
            last_s[policy] = None
            if readapts and due:
                rr = readapt_round(address, root, ckpt, world, world.tenants[policy])
                published[policy] += rr.decision == "published"
                last_s[policy] = rr.seconds
                rounds.append({"dataset": world.name, "policy": policy, "after_window": w + 1, "decision": rr.decision,
                               "seconds": round(rr.seconds, 1), **rr.detail})
                log(f"  readapt {rr.tenant}: {rr.decision} in {rr.seconds:.1f} s {rr.detail}")
        time.sleep(2 * POLL_S)  # replicas pick up a moved CURRENT pointer on their next poll
    return rows, rounds, cumulative


# --- report -----------------------------------------------------------------------------------------
def plot(cumulative: dict[str, dict[str, list[int]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(cumulative)
    cols = min(3, n)
    fig, axes = plt.subplots((n + cols - 1) // cols, cols, figsize=(5 * cols, 3.6 * ((n + cols - 1) // cols)), squeeze=False)
    for ax, (dataset, curves) in zip(axes.flat, cumulative.items()):
        for policy, hits in curves.items():
            h = np.asarray(hits, float)
            ax.plot(np.arange(1, len(h) + 1), np.cumsum(h) / np.arange(1, len(h) + 1), label=policy,
                    linestyle="--" if policy in ("static", "popularity") else "-")
        ax.set_title(dataset)
        ax.set_xlabel("replayed events")
        ax.set_ylabel("cumulative HR@10")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def target_checks(rows: list[dict], lag: list[float], rounds: list[dict], loss: dict[str, int]) -> str:
    lines = ["Targets (issue 18, checked on this run):", ""]
    for d in dict.fromkeys(r["dataset"] for r in rows):
        last = max(r["window"] for r in rows if r["dataset"] == d)
        hr = {r["policy"]: r["hr@10"] for r in rows if r["dataset"] == d and r["window"] == last}
        best = max((p for p in hr if p.endswith("+readapt") or p == "popularity"), key=lambda p: hr[p])
        closed = max((p for p in hr if p.endswith("+readapt")), key=lambda p: hr[p])
        ok = hr[closed] >= 1.3 * hr["static"] and hr[closed] >= hr["popularity"]
        lines.append(f"- {d} (window {last}): best closed-loop {closed} HR@10 {hr[closed]:.4f} = "
                     f"{hr[closed] / max(hr['static'], 1e-9):.2f}x static {hr['static']:.4f}, "
                     f"{hr[closed] / max(hr['popularity'], 1e-9):.2f}x popularity {hr['popularity']:.4f} (best of all: {best}): "
                     + ("**met**" if ok else "**not met**"))
    if lag:
        lines.append(f"- event -> next ranking: median {np.median(lag):.2f} s, max {max(lag):.2f} s over {len(lag)} probes "
                     f"(target <= 2 s): " + ("**met**" if max(lag) <= 2.0 else "**not met**"))
    live = [r["seconds"] for r in rounds if r["decision"] != "skipped"]
    if live:
        lines.append(f"- re-adaptation rounds: {len(live)} ran ({sum(r['decision'] == 'published' for r in rounds)} published), "
                     f"trigger -> live/decision median {np.median(live):.1f} s, max {max(live):.1f} s "
                     f"(target <= 60 s for 2,000 new events: bench/results/readapt.md)")
    if loss:
        lines.append(f"- replica SIGKILL during the replay: {loss['acked_requests']} acknowledged answers, {loss['acked_events']} "
                     f"acknowledged events; lost {loss['lost']}, duplicated {loss['duplicated']}: "
                     + ("**met**" if loss["lost"] == 0 and loss["duplicated"] == 0 else "**not met**"))
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, default=ROOT / "bench" / "fewshot-2core.yaml",
                   help="few-shot benchmark config: its backbone, targets and data root")
    p.add_argument("--datasets", nargs="+", default=None, help="targets of the config (default: all six)")
    p.add_argument("--events", type=int, default=4000, help="replayed interactions per dataset")
    p.add_argument("--window", type=int, default=1000)
    p.add_argument("--readapt-every", type=int, default=2000, help="replayed events between re-adaptation rounds "
                   "(a multiple of --window; issue 18 sizes a round at 2,000 new events)")
    p.add_argument("--name", default="closed_loop")
    p.add_argument("--results-dir", type=Path, default=RESULTS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if a.readapt_every % a.window:
        raise SystemExit(f"--readapt-every {a.readapt_every} must be a multiple of --window {a.window}")
    # The head first: Ray reads its auth mode (the head's token) once, when it is first imported.
    with local_head(num_cpus=2) as head:
        return run(a, head)


def run(a: argparse.Namespace, head) -> int:  # noqa: ANN001 - bench.ray_head.LocalHead
    import ray
    import torch

    from bench.fewshot import Context
    from bench.fewshot_config import load_bench_config, with_data_root
    from rec.config import DATA_ROOT_ENV
    from rec.export.publish import ensure_serving_model
    from rec.ray_session import LOCAL_RUNTIME_ENV
    from rec.serving.events import EventLog
    from rec.serving.store import ArtifactRoot

    torch.set_num_threads(1)
    bc = with_data_root(load_bench_config(a.config), os.environ.get(DATA_ROOT_ENV))
    datasets = a.datasets or [t.name for t in bc.targets]
    unknown = sorted(set(datasets) - {t.name for t in bc.targets})
    if unknown:
        raise SystemExit(f"unknown dataset(s) {unknown}: choose among {[t.name for t in bc.targets]}")
    ctx = Context(bc, ROOT / bc.runs_dir, quick=False)
    loaded = ctx.backbone()  # pretrained with Ray Train (a local Ray of its own) unless cached under runs_dir
    ckpt = ctx.stage / "backbone" / "checkpoint"
    if not (ckpt / "manifest.json").is_file():
        raise SystemExit(f"no backbone checkpoint at {ckpt}: delete {ctx.stage} and re-run to pretrain it again")
    work = ctx.stage / f"closed-loop-{int(time.time())}"
    root = work / "root"
    ensure_serving_model(root, loaded)
    worlds = [build_dataset(ctx, d, loaded, root, work, a.events) for d in datasets]
    t_start = time.perf_counter()
    rows, rounds, lag, cumulative, loss = [], [], [], {}, {}
    ray.init(address=head.gcs_address, runtime_env=LOCAL_RUNTIME_ENV, log_to_driver=False)
    try:
        acks = Acks()
        client = ReplayClient(start_app(root, free_port()), acks)
        for i, world in enumerate(worlds):
            lag += event_to_ranking_s(client, world)
            r, rr, cum = replay_dataset(client, world, head.dashboard, root, ckpt, a.window, a.readapt_every, kill=i == 0)
            rows, rounds, cumulative[world.name] = rows + r, rounds + rr, cum
            if i == 0:
                loss = check_log(EventLog(ArtifactRoot(root).events_dir).read, acks)
                log(f"  log check after the replica kill: {loss}")
    finally:
        from ray import serve

        serve.shutdown()
        ray.shutdown()
    a.results_dir.mkdir(parents=True, exist_ok=True)
    plot(cumulative, a.results_dir / f"{a.name}.png")
    protocol = {"protocol": " ".join(__doc__.split("\n\n")[1].split()), "policies": " ".join(__doc__.split("\n\n")[2].split()),
                "readapt": " ".join(__doc__.split("\n\n")[3].split()), "events_per_dataset": a.events, "window": a.window,
                "backbone": f"{ckpt.relative_to(ROOT)} (checksum {loaded.checksum[:12]})",
                "users": {w.name: w.users_note for w in worlds}, "event_to_ranking_s": [round(x, 3) for x in lag],
                "replica_kill_log_check": loss, "rounds": rounds, "wall_s": round(time.perf_counter() - t_start, 1)}
    path = write_results(a.name, protocol, rows, COLUMNS, notes=target_checks(rows, lag, rounds, loss)
                         + f"\n\n![cumulative HR@10]({a.name}.png)", results_dir=a.results_dir)
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
