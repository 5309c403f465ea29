"""The ``rec`` commands that learn from a serving root's event log: readapt, readapt-trigger, ope.

Split from :mod:`rec.cli` (one concept per module); they share its config helpers and its
one-line error handling (``rec.cli.main``). See docs/feedback-loop.md.
"""

from __future__ import annotations

import argparse
import json

from rec.cli import _backbone_cfg, _common, _flag_overrides, _load, _pick_tenant, _tenant_text

__all__ = ["add_feedback_commands", "cmd_ope", "cmd_readapt", "cmd_readapt_trigger"]


def cmd_readapt(args: argparse.Namespace) -> int:
    from rec.feedback.readapt import readapt_tenant
    from rec.ray_session import ray_session
    from rec.serving.store import ArtifactRoot
    from rec.training.checkpoint import load_backbone

    ArtifactRoot(args.root).tenant_dir(args.tenant)  # a bad tenant id fails before anything loads
    loaded = load_backbone(args.backbone)
    cfg = _backbone_cfg(args, loaded, _flag_overrides((args.address, "ray.address"), (args.method, "feedback.readapt.method")))
    tenant = _pick_tenant(cfg, args.tenant)
    text_emb = _tenant_text(loaded, tenant)
    with ray_session(cfg.ray):
        rec = readapt_tenant(args.root, loaded, tenant, text_emb, cfg.feedback.readapt, cfg.adapt, cfg.eval)
    gate = rec["gate"]
    outcome = f"published v{rec['version']}" if rec["decision"] == "published" else f"kept v{rec['from_version']} ({rec['reason']})"
    print(f"{rec['tenant']}: {outcome}; gate {gate['metric']} new {gate['new']:.4f} vs current {gate['current']:.4f}, "
          f"{rec['events_used']} events used ({rec['dropped_unknown_items']} on unknown items dropped), {rec['seconds']:.1f} s")
    if args.json:
        print(json.dumps(rec, indent=2))
    return 0


def cmd_readapt_trigger(args: argparse.Namespace) -> int:
    import time

    from rec.feedback.trigger import job_hooks, readapt_entrypoint, trigger_pass

    cfg = _load(args)
    rcfg = cfg.feedback.readapt
    submit, is_running = job_hooks(args.address, lambda t: readapt_entrypoint(t, args.root, args.backbone, args.config, args.overrides),
                                   rcfg.job_num_cpus)
    while True:
        for decision, submission, guard in trigger_pass(args.root, rcfg, submit, is_running):
            what = f"submitted {submission}" if submission else "not due"
            print(f"{decision.tenant}: {what} ({decision.reason}); guardrail: {'ROLLED BACK: ' if guard.rolled_back else ''}{guard.reason}",
                  flush=True)
        if args.once:
            return 0
        time.sleep(args.interval_s)


def cmd_ope(args: argparse.Namespace) -> int:
    from rec.feedback.logged import parse_target
    from rec.feedback.ope_report import ope_report, read_tenant_log
    from rec.serving.live_feedback import read_feedback_settings
    from rec.serving.store import ArtifactRoot

    parse_target(args.target)  # a bad target fails before the log is read
    records = read_tenant_log(args.root, args.tenant)
    candidates = args.candidates
    tenant_dir = ArtifactRoot(args.root).tenant_dir(args.tenant)
    if candidates is None and tenant_dir.is_dir():
        candidates = read_feedback_settings(tenant_dir).candidates
    report = ope_report(records, args.tenant, args.target, tuple(args.estimators), args.alpha, candidates)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
        return 0
    _print_ope(report)
    return 0


def _print_ope(report) -> None:  # noqa: ANN001 - an OpeReport
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"{report.tenant}: expected clicks per slate of {report.target!r}, "
                        f"{1 - report.alpha:.0%} intervals (off-policy, from the logged propensities)")
    for col in ("estimator", "logged_events", "estimate", "ci_low", "ci_high", "ess"):
        table.add_column(col, justify="left" if col == "estimator" else "right")
    for e in report.estimates:
        table.add_row(e.estimator, str(e.n), f"{e.value:.4f}", f"{e.ci_low:.4f}", f"{e.ci_high:.4f}", f"{e.effective_sample_size:.0f}")
    console.print(table)
    for p in report.logging:
        console.print(f"logged by {p.policy}: {p.slates} slates, {p.clicks_per_slate:.4f} clicks per slate "
                      f"(its on-policy value), CTR {p.ctr:.4f}")
    console.print(f"candidates (model top-N an epsilon target draws from): {report.candidates}")


def add_feedback_commands(sub: argparse._SubParsersAction) -> None:
    """readapt, readapt-trigger, ope: learning from a serving root's event log (docs/feedback-loop.md)."""
    from rec.adaptation.registry import method_names
    from rec.feedback.ope import ESTIMATORS

    p = sub.add_parser("readapt", help="re-adapt a served tenant from its event log; publishes only if the validation gate passes")
    p.add_argument("--config", "-c", help="YAML config whose data holds the tenant (default: the backbone's config)")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="dotted config overrides, e.g. feedback.readapt.min_gain=0.01")
    p.add_argument("--tenant", required=True, help="tenant id, published under --root and among the configured data's tenants")
    p.add_argument("--root", required=True, help="serving artifact root (tenants/, events/; rounds go to readapt/)")
    p.add_argument("--backbone", required=True, help="backbone folder the root was published with")
    p.add_argument("--method", choices=method_names(), help="feedback.readapt.method (default: the serving version's)")
    p.add_argument("--address", help="Ray cluster address, e.g. auto inside a Ray job (ray.address; default: a local Ray)")
    p.add_argument("--json", action="store_true", help="also print the round's record as JSON")
    p.set_defaults(func=cmd_readapt)

    p = sub.add_parser("ope", help="off-policy estimates (IPS, SNIPS, DR) of a candidate policy over a served tenant's event log")
    p.add_argument("--root", required=True, help="serving artifact root (its events/<tenant>/ log is read)")
    p.add_argument("--tenant", required=True, help="tenant id")
    p.add_argument("--target", required=True, help="candidate policy: greedy or epsilon:<0..1> (e.g. epsilon:0.1)")
    p.add_argument("--estimators", nargs="+", default=list(ESTIMATORS), choices=list(ESTIMATORS), help="default: all")
    p.add_argument("--alpha", type=float, default=0.05, help="intervals cover 1 - alpha (default 0.05)")
    p.add_argument("--candidates", type=int, help="model top-N an epsilon target draws from (default: the tenant's feedback.json)")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    p.set_defaults(func=cmd_ope)

    p = sub.add_parser("readapt-trigger", help="submit `rec readapt` Ray jobs for tenants with enough new events; roll back CTR drops")
    _common(p)
    p.add_argument("--root", required=True, help="serving artifact root")
    p.add_argument("--backbone", required=True, help="backbone folder, passed to each readapt job")
    p.add_argument("--address", help="Ray dashboard address for the Jobs SDK (http://HEAD:8265, or auto inside the cluster)")
    p.add_argument("--once", action="store_true", help="one pass over the tenants, then exit (what the RayCronJob runs)")
    p.add_argument("--interval-s", type=float, default=60.0, help="seconds between passes without --once")
    p.set_defaults(func=cmd_readapt_trigger)
