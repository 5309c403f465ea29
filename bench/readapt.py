"""Re-adaptation round latency: trigger -> live version, with 2,000 new events per round.

Protocol: a backbone of the default model size (random init: the round's cost does not depend on
what the weights know), one synthetic tenant of the default size published as v1 from a LoRA
adapter (``rec adapt`` defaults, K=64), a private Ray head with the dashboard (``num_cpus=2``, bench/ray_head.py) for the
Jobs SDK. Per round, 2,000 new click/purchase events (the tenant's next users, replayed through
``EventLog``: impressions + clicks, 30 % of the clicks without a user id) are appended; then the
clock starts, one ``trigger_pass`` decides the tenant is due (``every_events=2000``) and submits
``rec readapt`` as a Ray job; the clock stops when the tenant's ``CURRENT`` pointer names the new
version. ``min_gain=-1`` so every round publishes (the gate's numbers are reported; with random
weights they mean nothing). Training: ``adapt.*`` defaults (40 epochs, patience 8, 1 torch
thread), warm-started from the serving adapter; the job asks for 1 CPU. Target (issue 18): <= 60 s
on 2 cores.

    python -m bench.readapt               # 3 rounds
    python -m bench.readapt --rounds 1
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench._results import log, write_results
from bench.ray_head import local_head

COLUMNS = ["round", "events_new", "events_read", "users", "trigger_to_live_s", "job_round_s", "adapt_s", "adapt_epochs",
           "warm_start", "gate_new", "gate_current", "version"]
EVENTS_PER_ROUND = 2000


def build_world(work: Path):  # noqa: ANN201
    """Backbone checkpoint, the tenant, and a serving root with the tenant's v1 (LoRA, K=64)."""
    import torch

    from rec.adaptation.adapt import adapt_tenant, publish_adapter
    from rec.config import load_config
    from rec.data.synthetic import generate_tenants
    from rec.export.publish import ensure_serving_model, publish_tenant
    from rec.models.backbone import build_backbone
    from rec.text import encode_items
    from rec.training.checkpoint import export_backbone, load_backbone

    torch.manual_seed(0)
    cfg = load_config(None, ["data.synthetic.tenants=1", f"text.cache_dir={work / 'text-cache'}"])
    (tenant,) = generate_tenants(cfg.data.synthetic)
    meta = {tenant.name: {"id_offset": 0, "num_items": tenant.num_items, "data_hash": tenant.content_hash()}}
    ckpt = export_backbone(work / "backbone", build_backbone(cfg.model).eval().state_dict(), cfg, meta, {}, "bench")
    loaded = load_backbone(ckpt)
    emb = encode_items(list(tenant.items.text), cfg.text)
    acfg = cfg.adapt.model_copy(update={"output_root": str(work / "adapters")})
    res = adapt_tenant(loaded, tenant, acfg, cfg.eval, text_emb=emb)
    root = work / "root"
    ensure_serving_model(root, loaded)
    publish_tenant(root, loaded, tenant, emb, publish_adapter(res, loaded, acfg))
    return ckpt, tenant, root


def _users_for(tenant, start: int, events: int) -> tuple[list[int], int]:  # noqa: ANN001
    users, n, u = [], 0, start
    while n < events and u < tenant.num_users:
        users.append(u)
        n += len(tenant.sequence(u))
        u += 1
    return users, u


def run_round(i: int, root: Path, ckpt: Path, tenant, first_user: int, address: str, t0_unix: float) -> tuple[dict, int]:  # noqa: ANN001
    from rec.config import ReadaptConfig
    from rec.feedback.replay import replay_interactions
    from rec.feedback.rounds import read_records
    from rec.feedback.trigger import job_hooks, readapt_entrypoint, trigger_pass
    from rec.serving.store import ArtifactRoot

    users, next_user = _users_for(tenant, first_user, EVENTS_PER_ROUND)
    # event times move forward round after round, so each round's newest events are the gate's
    new = replay_interactions(root, tenant, users, t0_unix + i * 3 * EVENTS_PER_ROUND, step_s=1.0, version=f"v{i + 1}", seed=i)
    overrides = ["feedback.readapt.min_gain=-1.0", f"feedback.readapt.every_events={EVENTS_PER_ROUND}",
                 f"feedback.readapt.min_events={EVENTS_PER_ROUND}"]
    rcfg = ReadaptConfig(min_gain=-1.0, every_events=EVENTS_PER_ROUND, min_events=EVENTS_PER_ROUND)
    store = ArtifactRoot(root)
    before = store.current_version(tenant.name)
    submit, is_running = job_hooks(address, lambda t: readapt_entrypoint(t, root, ckpt, None, overrides), rcfg.job_num_cpus)
    t0 = time.perf_counter()
    ((decision, submission, _),) = trigger_pass(root, rcfg, submit, is_running)
    if submission is None:
        raise RuntimeError(f"round {i}: the trigger did not submit ({decision.reason})")
    while store.current_version(tenant.name) == before:
        if not is_running(submission):
            time.sleep(0.5)
            if store.current_version(tenant.name) == before:
                from ray.job_submission import JobSubmissionClient

                tail = JobSubmissionClient(address).get_job_logs(submission)[-3000:]
                raise RuntimeError(f"round {i}: job {submission} ended without publishing:\n{tail}")
        time.sleep(0.05)
    live_s = time.perf_counter() - t0
    rec = read_records(root, tenant.name, "round")[-1]
    row = {"round": i + 1, "events_new": new, "events_read": rec["events_read"], "users": rec["users"],
           "trigger_to_live_s": round(live_s, 2), "job_round_s": round(rec["seconds"], 2), "adapt_s": round(rec["adapt_s"], 2),
           "adapt_epochs": rec["adapt_epochs"], "warm_start": rec["warm_start"], "gate_new": rec["gate"]["new"],
           "gate_current": rec["gate"]["current"], "version": rec.get("version")}
    log(f"round {i + 1}: {row}")
    return row, next_user


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args(argv)
    # a private head first (free ports, a token): Ray reads its auth mode once, when first imported
    with local_head(num_cpus=2) as head, tempfile.TemporaryDirectory(prefix="bench-readapt-") as tmp:
        import ray

        work = Path(tmp)
        log("building the world (backbone, v1 LoRA adapter, serving root)")
        ckpt, tenant, root = build_world(work)
        ray.init(address=head.gcs_address, log_to_driver=False)
        try:
            rows, user, t0_unix = [], 0, time.time() - 86400.0
            for i in range(a.rounds):
                row, user = run_round(i, root, ckpt, tenant, user, head.dashboard, t0_unix)
                rows.append(row)
        finally:
            ray.shutdown()
    protocol = __doc__.split("\n\n")[1].replace("\n", " ")
    path = write_results("readapt", protocol, rows, COLUMNS,
                         notes="trigger_to_live_s includes the Ray job's start (process, imports, backbone load, Ray "
                               "connect); job_round_s is the round inside the job (log read -> record).")
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
