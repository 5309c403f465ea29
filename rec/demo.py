"""The one-command demo (``rec demo``): the whole product on the embedded synthetic default.

Stages, each timed and shown with a progress bar:

1. **data** - generate the synthetic tenants: ``demo.source_tenants`` pretrain the backbone,
   ``demo.tuned_tenants`` are new tenants adapted by a sweep, one more is served zero-shot, and
   one arrives later as raw CSV files (the onboarding tenant).
2. **pretrain** - Ray Train (``rec.training.ray_train.pretrain``) on the source tenants.
3. **tune** - a Ray Tune sweep (``demo.sweep``, ASHA + Optuna) over adaptation hyper-parameters
   of the tuned tenants; each tenant's best adapter is published.
4. **export** - the shared serving model to ONNX (int8 by default) and one bundle per tenant
   (catalog matrix + adapter tensors) into a serving artifact root; the zero-shot tenant gets a
   catalog only.
5. **serve** - the recommender app (``serve_apps.recommender``) on a local Ray Serve.
6. **requests** - HTTP requests for every tenant (held-out users' histories); served HR@10.
7. **onboard** - the onboarding tenant from raw interactions to adapted recommendations served
   live: load CSV -> encode item text -> LoRA adaptation -> publish -> first HTTP answer from the
   new version. The wall time of this stage is the *tenant onboarding time*.
8. **feedback** - the zero-shot tenant improving from feedback (``rec.demo_feedback``): its
   users replayed over HTTP with an exploration policy and the online prior on, clicks posted
   when the true next item is shown; HR@10 per window, then one re-adaptation round from the log
   and a window served by the new version.
9. **report** - ``report.md``, ``report.json`` and PNGs under ``demo.output_dir``.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from rec.config import RecConfig, TenantSource, apply_overrides, config_from_dict
from rec.data.schema import Tenant

__all__ = ["DemoReport", "run_demo"]

STAGES = ("data", "pretrain", "tune", "export", "serve", "requests", "onboard", "feedback", "report")


@dataclass
class DemoReport:
    output_dir: Path
    stage_s: dict[str, float] = field(default_factory=dict)
    pretrain: dict[str, Any] = field(default_factory=dict)
    tenants: list[dict[str, Any]] = field(default_factory=list)  # one row per served tenant
    examples: dict[str, dict[str, Any]] = field(default_factory=dict)  # tenant -> one request/answer
    onboarding: dict[str, float] = field(default_factory=dict)
    feedback: dict[str, Any] = field(default_factory=dict)  # the zero-shot tenant learning from clicks
    latencies_ms: list[float] = field(default_factory=list)
    url: str = ""


def _with(cfg: RecConfig, **overrides: Any) -> RecConfig:
    return config_from_dict(apply_overrides(cfg.model_dump(mode="json"), [f"{k}={v}" for k, v in overrides.items()]))


def _post(url: str, body: dict[str, Any], timeout: float = 30.0) -> tuple[dict[str, Any], float]:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 - our own local endpoint
        out = json.loads(r.read())
    return out, (time.perf_counter() - t0) * 1000


def _wait_ready(base: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(base + "/readyz", timeout=5) as r:  # noqa: S310
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the recommender at {base} was not ready after {timeout_s:.0f} s")
        time.sleep(0.5)


def _heldout_requests(tenant: Tenant, n: int, seed: int) -> list[tuple[list[str], str]]:
    """(history ids, next item id) for ``n`` seeded users: what a live client would send."""
    rng = np.random.default_rng(seed)
    users = rng.permutation(tenant.num_users)[:n]
    out = []
    for u in users:
        seq = tenant.sequence(int(u))
        ids = [str(tenant.items.ids[i]) for i in seq]
        out.append((ids[:-1], ids[-1]))
    return out


@contextmanager
def _stage(report: DemoReport, progress: Any, task: Any, name: str) -> Iterator[None]:
    progress.update(task, description=f"[bold]{name}[/bold]")
    t0 = time.perf_counter()
    yield
    report.stage_s[name] = time.perf_counter() - t0
    progress.advance(task)


@dataclass
class _Tenants:
    """The demo's synthetic tenants, by role."""

    sources: list[Tenant]  # pretrain the backbone
    tuned: list[Tenant]  # adapted by the sweep
    zero_shot: Tenant  # served with no adapter
    newcomer: Tenant  # arrives later as raw files
    raw: Path  # the newcomer's CSV export


def run_demo(cfg: RecConfig, console: Any | None = None) -> DemoReport:
    """Run every stage on ``cfg`` (its ``demo`` section says how many tenants, which sweep, ...).

    Starts a local Ray (``cfg.ray``) and shuts it down at the end unless ``demo.keep_serving``.

    Raises:
        RuntimeError: A stage failed (the message names it); ConfigError / SweepError on bad settings.
    """
    import ray
    from ray import serve
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from rec.ray_session import LOCAL_RUNTIME_ENV

    console = console or Console()
    d = cfg.demo
    out = Path(d.output_dir).resolve()
    if out.exists():
        shutil.rmtree(out)  # a demo run is a fresh story; nothing in it is an input
    out.mkdir(parents=True)
    report = DemoReport(out)
    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(num_cpus=cfg.ray.num_cpus, include_dashboard=False, runtime_env=LOCAL_RUNTIME_ENV,
                 log_to_driver=d.verbose)
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} stages"),
                      TimeElapsedColumn(), console=console) as progress:
            task = progress.add_task("demo", total=len(STAGES))
            with _stage(report, progress, task, "data"):
                tenants = _make_tenants(cfg, out, console)
            with _stage(report, progress, task, "pretrain"):
                loaded = _pretrain(cfg, out, report)
            with _stage(report, progress, task, "tune"):
                best = _tune(cfg, tenants, loaded, out)
            root = out / "serving"
            with _stage(report, progress, task, "export"):
                _export(cfg, tenants, loaded, best, root)
            with _stage(report, progress, task, "serve"):
                report.url = base = _serve(cfg, root)
            with _stage(report, progress, task, "requests"):
                for t in tenants.tuned + [tenants.zero_shot]:
                    _request_tenant(cfg, t, best.get(t.name, {}), base, report)
            with _stage(report, progress, task, "onboard"):
                report.onboarding = _onboard(cfg, loaded, tenants.raw, tenants.newcomer.name, root, base, report)
            with _stage(report, progress, task, "feedback"):
                from rec.demo_feedback import feedback_story

                report.feedback = feedback_story(cfg, loaded, tenants.zero_shot, root, base)
            with _stage(report, progress, task, "report"):
                _write_report(report)
    finally:
        if not d.keep_serving:
            serve.shutdown()
            if started_ray:
                ray.shutdown()
    _print_summary(report, console)
    return report


def _data_cfg(cfg: RecConfig) -> RecConfig:
    """``cfg`` generating every demo tenant (sources, tuned, zero-shot, newcomer)."""
    d = cfg.demo
    return _with(cfg, **{"data.synthetic.tenants": d.source_tenants + d.tuned_tenants + 2})


def _make_tenants(cfg: RecConfig, out: Path, console: Any) -> _Tenants:
    from rec.data.export_csv import write_generic
    from rec.data.synthetic import generate_tenants

    d = cfg.demo
    tenants = generate_tenants(_data_cfg(cfg).data.synthetic)
    newcomer = tenants[-1]
    raw = out / "raw" / newcomer.name
    write_generic(newcomer, raw)  # arrives later as files, like a real customer's export
    roles = _Tenants(tenants[: d.source_tenants], tenants[d.source_tenants: d.source_tenants + d.tuned_tenants],
                     tenants[-2], newcomer, raw)
    console.print(f"tenants: pretrain on {[t.name for t in roles.sources]}, tune {[t.name for t in roles.tuned]}, "
                  f"zero-shot {roles.zero_shot.name!r}, onboard {newcomer.name!r} from {raw}")
    return roles


def _pretrain(cfg: RecConfig, out: Path, report: DemoReport):  # noqa: ANN202 - LoadedBackbone
    from rec.training.checkpoint import load_backbone
    from rec.training.ray_train import pretrain

    pcfg = _with(cfg, **{"data.synthetic.tenants": cfg.demo.source_tenants,
                         "train.output_dir": str(out / "backbone"), "train.run_name": "demo-pretrain"})
    res = pretrain(pcfg, progress=False)
    report.pretrain = {"epochs": res.epochs, "train_s": res.train_s, "checkpoint": str(res.checkpoint),
                       "test_ndcg@10": {k: v.get("ndcg@10") for k, v in res.test_metrics.items()}}
    return load_backbone(res.checkpoint)


def _tune(cfg: RecConfig, tenants: _Tenants, loaded, out: Path) -> dict[str, dict[str, Any]]:  # noqa: ANN001
    """The sweep over the tuned tenants; their best trial (published adapter, test metrics) by name."""
    from tuning import load_sweep, run_sweep

    d = cfg.demo
    spec = load_sweep(d.sweep).model_copy(update={"tenants": [t.name for t in tenants.tuned], "name": "demo-sweep"})
    tcfg = _with(_data_cfg(cfg), **{"adapt.output_root": str(out / "adapters"), "ray.storage_path": str(out / "tune")})
    sweep = run_sweep(spec, tcfg, loaded, verbose=1 if d.verbose else 0)
    if sweep.missing:
        raise RuntimeError(f"tune stage: no successful trial for {sweep.missing} (see {sweep.experiment_dir})")
    return {b["tenant"]: b for b in sweep.best}


def _export(cfg: RecConfig, tenants: _Tenants, loaded, best: dict[str, dict[str, Any]], root: Path) -> None:  # noqa: ANN001
    """The shared serving model and a bundle per tuned tenant (its best adapter) and the zero-shot one."""
    from rec.export.publish import ensure_serving_model, publish_tenant
    from rec.text import encode_items

    d = cfg.demo
    ensure_serving_model(root, loaded, quantize=d.model_variant == "int8")
    for t in tenants.tuned + [tenants.zero_shot]:
        adapter = best[t.name]["adapter"] if t.name in best else None
        publish_tenant(root, loaded, t, encode_items(list(t.items.text), loaded.cfg.text), adapter, catalog_dtype=d.catalog_dtype)


def _serve(cfg: RecConfig, root: Path) -> str:
    """Start the recommender on a local Ray Serve; its base URL once ready."""
    from ray import serve

    from serve_apps.args import RecommenderArgs
    from serve_apps.recommender import build_app

    d = cfg.demo
    serve.start(http_options={"host": "127.0.0.1", "port": d.http_port})
    args = RecommenderArgs(artifact_root=str(root), model_variant=d.model_variant, poll_interval_s=0.2)
    serve.run(build_app(args), name="recommender", route_prefix="/")
    base = f"http://127.0.0.1:{d.http_port}"
    _wait_ready(base)
    return base


def _request_tenant(cfg: RecConfig, t: Tenant, best: dict[str, Any], base: str, report: DemoReport) -> None:
    """Held-out users' requests over HTTP: served HR@10, latencies and one example answer."""
    hits, lat = 0, []
    reqs = _heldout_requests(t, cfg.demo.requests_per_tenant, seed=1)
    for hist, nxt in reqs:
        ans, ms = _post(f"{base}/v1/tenants/{t.name}/recommendations", {"history": hist, "k": 10, "exclude_history": False})
        lat.append(ms)
        hits += nxt in [it["item_id"] for it in ans["items"]]
    report.latencies_ms += lat
    titles = dict(zip(map(str, t.items.ids), t.items.text))
    report.examples[t.name] = {"history": [titles[i] for i in reqs[0][0][-3:]],
                               "top3": [titles[it["item_id"]] for it in ans["items"][:3]]}
    report.tenants.append({
        "tenant": t.name, "served_as": ans["method"], "version": ans["adapter_version"],
        "zero_shot": ans["zero_shot"], "offline_test_ndcg@10": (best.get("test") or {}).get("ndcg@10"),
        "served_hr@10": hits / len(reqs), "p50_ms": float(np.percentile(lat, 50)),
    })


def _onboard(cfg: RecConfig, loaded, raw: Path, name: str, root: Path, base: str, report: DemoReport) -> dict[str, float]:  # noqa: ANN001
    """Raw CSV -> live adapted recommendations; returns the timed steps (seconds)."""
    from rec.adaptation.adapt import adapt_tenant, publish_adapter
    from rec.data.loaders import load_source
    from rec.export.publish import publish_tenant
    from rec.text import encode_items

    d = cfg.demo
    steps: dict[str, float] = {}
    t0 = time.perf_counter()
    src = TenantSource(format="generic", path=str(raw / "interactions.csv"), items_path=str(raw / "items.csv"), name=name)
    tenant = load_source(src, cfg.data.min_seq_len)
    steps["load_s"] = time.perf_counter() - t0
    t = time.perf_counter()
    emb = encode_items(list(tenant.items.text), loaded.cfg.text)
    steps["encode_s"] = time.perf_counter() - t
    t = time.perf_counter()
    acfg = cfg.adapt.model_copy(update={"method": d.onboard_method, "k_users": min(d.onboard_k_users, tenant.num_users // 2),
                                        "output_root": str(report.output_dir / "adapters")})
    res = adapt_tenant(loaded, tenant, acfg, cfg.eval, text_emb=emb)
    adapter = publish_adapter(res, loaded, acfg)
    steps["adapt_s"] = time.perf_counter() - t
    t = time.perf_counter()
    pub = publish_tenant(root, loaded, tenant, emb, adapter, catalog_dtype=d.catalog_dtype)
    steps["publish_s"] = time.perf_counter() - t
    t = time.perf_counter()
    hist = [str(tenant.items.ids[i]) for i in tenant.sequence(0)][:-1]
    want = f"v{pub.version}"
    while True:  # the first answer from the new version = live
        try:
            ans, _ = _post(f"{base}/v1/tenants/{name}/recommendations", {"history": hist, "k": 10})
            if ans["adapter_version"] == want:
                break
        except urllib.error.HTTPError as e:
            if e.code != 404:  # 404 until the replica sees the new tenant
                raise
        if time.perf_counter() - t > 60:
            raise RuntimeError(f"onboard stage: {name} {want} was not served within 60 s of publishing")
        time.sleep(0.05)
    steps["live_s"] = time.perf_counter() - t
    steps["onboarding_s"] = time.perf_counter() - t0
    steps["test_ndcg@10"] = res.test.get("ndcg@10", float("nan"))
    steps["k_users"] = float(acfg.k_users)
    report.tenants.append({"tenant": name, "served_as": ans["method"], "version": ans["adapter_version"],
                           "zero_shot": ans["zero_shot"], "offline_test_ndcg@10": steps["test_ndcg@10"],
                           "served_hr@10": None, "p50_ms": None})
    return steps


def _write_report(report: DemoReport) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rec.io.artifacts import atomic_write_bytes, atomic_write_json

    out = report.output_dir
    fig, ax = plt.subplots(1, 2, figsize=(11, 3.8))
    names = list(report.stage_s)
    ax[0].barh(names[::-1], [report.stage_s[n] for n in names][::-1], color="tab:blue")
    ax[0].set_xlabel("seconds")
    ax[0].set_title("demo stages (wall time)")
    ob = {k: v for k, v in report.onboarding.items() if k.endswith("_s") and k != "onboarding_s"}
    ax[1].barh(list(ob)[::-1], list(ob.values())[::-1], color="tab:green")
    ax[1].set_xlabel("seconds")
    ax[1].set_title(f"tenant onboarding: {report.onboarding.get('onboarding_s', float('nan')):.1f} s")
    fig.tight_layout()
    fig.savefig(out / "timings.png", dpi=110)
    plt.close(fig)
    if report.latencies_ms:
        fig, ax = plt.subplots(figsize=(5.5, 3.5))
        ax.hist(report.latencies_ms, bins=30, color="tab:orange")
        ax.set_xlabel("end-to-end request latency (ms)")
        ax.set_ylabel("requests")
        ax.set_title(f"HTTP latency, p50 {np.percentile(report.latencies_ms, 50):.1f} ms, "
                     f"p99 {np.percentile(report.latencies_ms, 99):.1f} ms")
        fig.tight_layout()
        fig.savefig(out / "latency.png", dpi=110)
        plt.close(fig)
    atomic_write_json(out / "report.json", {
        "stage_s": report.stage_s, "pretrain": report.pretrain, "tenants": report.tenants,
        "onboarding": report.onboarding, "feedback": report.feedback, "examples": report.examples, "url": report.url,
        "latency_ms": {"p50": float(np.percentile(report.latencies_ms, 50)) if report.latencies_ms else None,
                       "p99": float(np.percentile(report.latencies_ms, 99)) if report.latencies_ms else None},
    })
    lines = ["# fewshot-rec demo report", "", "## Stages", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in report.stage_s.items()]
    lines += ["", f"**Tenant onboarding** (raw CSV → adapted recommendations served live): "
              f"**{report.onboarding.get('onboarding_s', float('nan')):.1f} s**", "",
              "| step | seconds |", "|---|---|"]
    lines += [f"| {k[:-2]} | {v:.2f} |" for k, v in report.onboarding.items() if k.endswith("_s") and k != "onboarding_s"]
    lines += ["", "## Tenants", "", "| tenant | served as | version | offline test NDCG@10 | served HR@10 | p50 ms |",
              "|---|---|---|---|---|---|"]

    def f(v: Any, digits: int = 4) -> str:
        return "" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)

    lines += [f"| {r['tenant']} | {r['served_as']} | {r['version']} | {f(r['offline_test_ndcg@10'])} | "
              f"{f(r['served_hr@10'], 3)} | {f(r['p50_ms'], 1)} |" for r in report.tenants]
    if report.feedback:
        from rec.demo_feedback import report_lines

        lines += report_lines(report.feedback)
    lines += ["", "![timings](timings.png)", "", "![latency](latency.png)", ""]
    atomic_write_bytes(out / "report.md", "\n".join(lines).encode())


def _print_summary(report: DemoReport, console: Any) -> None:
    from rich.table import Table

    t = Table(title="stage timings")
    t.add_column("stage")
    t.add_column("seconds", justify="right")
    for k, v in report.stage_s.items():
        t.add_row(k, f"{v:.1f}")
    t.add_row("[bold]tenant onboarding[/bold]", f"[bold]{report.onboarding.get('onboarding_s', float('nan')):.1f}[/bold]")
    console.print(t)
    t = Table(title="tenants served")
    for c in ("tenant", "served as", "version", "offline test NDCG@10", "served HR@10", "p50 ms"):
        t.add_column(c)
    for r in report.tenants:
        t.add_row(r["tenant"], r["served_as"], r["version"],
                  "" if r["offline_test_ndcg@10"] is None else f"{r['offline_test_ndcg@10']:.4f}",
                  "" if r["served_hr@10"] is None else f"{r['served_hr@10']:.3f}",
                  "" if r["p50_ms"] is None else f"{r['p50_ms']:.1f}")
    console.print(t)
    for name, ex in report.examples.items():
        console.print(f"[bold]{name}[/bold]: after {ex['history']} -> {ex['top3']}")
    if report.feedback:
        fb, w = report.feedback, report.feedback["windows"]
        console.print(f"[bold]{fb['tenant']}[/bold] learning from feedback ({fb['policy']} + online prior): HR@10 over "
                      f"the static zero-shot model {w[0]['lift']:.2f}x (first window) -> {w[-2]['lift']:.2f}x (last before "
                      f"re-adaptation) -> {w[-1]['lift']:.2f}x (served by {fb['version_after']}; readapt "
                      f"{fb['readapt']['decision']}, was {fb['version_before']})")
    console.print(f"report: {report.output_dir / 'report.md'}")
