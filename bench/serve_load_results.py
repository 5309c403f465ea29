"""What a serving-benchmark run's rows mean: the modes compared, issue 5's targets, tables and plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

MODES = ("torch-multiplex", "ort-merged-multiplex", "ort-shared-fp32", "ort-shared-int8", "ort-shared-fp32-2hop",
         "ort-shared-sharded")
MULTIPLEX = ("torch-multiplex", "ort-merged-multiplex")
SHARED = ("ort-shared-fp32", "ort-shared-int8", "ort-shared-fp32-2hop", "ort-shared-sharded")
VARIANT = {"ort-shared-fp32": "fp32", "ort-shared-int8": "int8", "ort-shared-fp32-2hop": "fp32", "ort-shared-sharded": "fp32"}
ISSUE_SHARED = ("ort-shared-fp32", "ort-shared-int8")  # issue 5's design (c): the app as shipped
# How clients reach the app: Serve's HTTP proxy, the ingress replica's own port (Serve's
# throughput-optimized direct ingress, serve_apps/direct_ingress.py), or HAProxy in front of those ports.
INGRESS = ("proxy", "direct", "haproxy")
DIRECT_MODES = ("torch-multiplex", "ort-merged-multiplex", "ort-shared-fp32", "ort-shared-int8")


def ingress_of(r: dict[str, Any]) -> str:
    return r.get("ingress", "proxy")  # rows recorded before direct ingress was measured went through the proxy


def label(r: dict[str, Any]) -> str:
    """The mode as tables and plots name it: ``mode`` through the proxy, ``mode [direct]`` otherwise."""
    return r["mode"] if ingress_of(r) == "proxy" else f"{r['mode']} [{ingress_of(r)}]"


def _is_slo(load: str) -> bool:
    return load.startswith("open-slo")


def _row(rows: list[dict[str, Any]], mode: str, n: int, load: str) -> dict[str, Any] | None:
    return next((r for r in rows if r["mode"] == mode and r["tenants"] == n and r["load"] == load), None)


def _slo_row(rows: list[dict[str, Any]], mode: str, n: int) -> dict[str, Any] | None:
    return next((r for r in rows if r["mode"] == mode and r["tenants"] == n and _is_slo(r["load"])), None)


def by_ingress(rows: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """The rows split by how clients reached the app, in ``INGRESS`` order."""
    return [(i, sub) for i in INGRESS if (sub := [r for r in rows if ingress_of(r) == i])]


def _style(lab: str) -> dict[str, Any]:
    """One colour per mode, one line style and marker per ingress."""
    mode, _, ingress = lab.partition(" [")
    ingress = ingress.rstrip("]") or "proxy"
    return {"color": f"C{MODES.index(mode) % 10}", "ls": {"proxy": "-", "direct": ":", "haproxy": "--"}[ingress],
            "marker": {"proxy": "o", "direct": "s", "haproxy": "^"}[ingress]}


def plot_matrix(rows: list[dict[str, Any]], name: str, results: Path, slo_ms: float) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    modes = list(dict.fromkeys(label(r) for r in rows))
    closed = sorted({r["load"] for r in rows if r["load"].startswith("closed")}, key=lambda x: int(x.split("-")[1]))
    top = closed[-1] if closed else None
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    for m in modes:
        style = _style(m)
        slo = [r for r in rows if label(r) == m and _is_slo(r["load"])]
        axes[0].plot([r["tenants"] for r in slo], [r["rps"] for r in slo], label=m, **style)
        hi = [r for r in rows if label(r) == m and r["load"] == top]
        axes[1].plot([r["tenants"] for r in hi], [r["rps"] for r in hi], label=m, **style)
        axes[2].plot([r["tenants"] for r in hi], [r["p99_ms"] for r in hi], label=m, **style)
    axes[0].set(xscale="log", xlabel="tenants", ylabel="requests/s", title=f"highest rate with p99 <= {slo_ms:g} ms (open loop)")
    axes[1].set(xscale="log", xlabel="tenants", ylabel="requests/s", title=f"throughput ({top})")
    axes[2].set(xscale="log", yscale="log", xlabel="tenants", ylabel="p99 ms", title=f"p99 latency ({top})")
    axes[2].axhline(slo_ms, color="grey", ls=":", lw=1)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    paths.append(results / f"{name}_throughput_p99.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for m in modes:
        hi = [r for r in rows if label(r) == m and r["load"] == top]
        ax.plot([r["tenants"] for r in hi], [r["model_rss_mb"] for r in hi], label=m, **_style(m))
    ax.set(xscale="log", xlabel="tenants", ylabel="MiB", title="RSS of the model-holding replica vs tenants")
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(results / f"{name}_rss.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def plot_autoscale(auto: dict[str, Any], name: str, results: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    w = auto["windows"]
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    t = [x["t0"] + auto["window_s"] / 2 for x in w]
    a1.step([x["t0"] for x in w] + [w[-1]["t0"] + auto["window_s"]], [x["offered_rps"] for x in w] + [w[-1]["offered_rps"]],
            where="post", label="offered rps")
    a1.plot(t, [x["done_rps"] for x in w], marker=".", label="completed rps")
    a1.set(ylabel="requests/s", title=f"autoscaling run (ort-shared-fp32, {auto['deployment']}, {auto.get('ingress', 'proxy')}, open loop)")
    a1.legend(fontsize=8)
    s = auto["samples"]
    a2.step([x["t"] for x in s], [x["replicas"] for x in s], where="post", color="C2", label=f"{auto['deployment']} replicas")
    a2.set(xlabel="seconds", ylabel="replicas", ylim=(0, max(3, auto["max_replicas"] or 1) + 0.5))
    b = a2.twinx()
    b.plot(t, [x["p99_ms"] for x in w], color="C3", marker=".", label="p99 ms (window)")
    b.set(ylabel="p99 ms", yscale="log")
    a2.legend(loc="upper left", fontsize=8)
    b.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    path = results / f"{name}_autoscale.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def fmt_ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


# --- targets -------------------------------------------------------------------------------------
def targets(rows: list[dict[str, Any]], tenants: list[int], slo_ms: float) -> list[dict[str, Any]]:
    """Issue 5's targets, for each way clients reached the app (see :func:`ingress_targets`)."""
    out = []
    for ingress, sub in by_ingress(rows):
        out += [{**t, "ingress": ingress, "target": f"[{ingress}] {t['target']}"} for t in ingress_targets(sub, tenants, slo_ms)]
    errs = sum(r["errors"] for r in rows)
    out.append({"target": "0 errors (every row, every sweep probe)", "measured": f"{errs} errors in {sum(r['requests'] for r in rows)} "
                "counted requests", "value": errs, "met": errs == 0})
    return out


def ingress_targets(rows: list[dict[str, Any]], tenants: list[int], slo_ms: float) -> list[dict[str, Any]]:
    """Issue 5's targets over rows of one ingress: throughput AT the SLO (the open-loop rate sweep)
    of the shared app vs torch-multiplex, RSS of the model replica 1 -> max tenants, overhead ratio."""
    out = []
    n_max, n_min = max(tenants), min(tenants)
    for n in tenants:
        torch_r = _slo_row(rows, "torch-multiplex", n)
        for mode in ISSUE_SHARED:
            r = _slo_row(rows, mode, n)
            if not (r and torch_r):
                continue
            if torch_r["rps"] > 0:
                ratio = r["rps"] / torch_r["rps"]
                text = (f"{ratio:.2f}x ({r['rps']:.0f} vs {torch_r['rps']:.0f} rps at p99 <= {slo_ms:g} ms; "
                        f"p99 {r['p99_ms']:.0f} vs {torch_r['p99_ms']:.0f} ms)")
            else:  # torch met the SLO at no probed rate: its capacity is below the lowest one probed
                lowest = min(p["rate"] for p in torch_r["slo_probes"])
                ratio = r["rps"] / lowest
                text = (f">= {ratio:.2f}x (lower bound: {r['rps']:.0f} rps vs torch-multiplex meeting p99 <= {slo_ms:g} ms "
                        f"at no probed rate, lowest {lowest:.0f} rps)")
            out.append({"target": f"{mode} >= 3x torch-multiplex throughput at p99 <= {slo_ms:g} ms, {n} tenants",
                        "measured": text, "value": round(ratio, 3), "met": bool(ratio >= 3 and r["rps"] > 0)})
    top = max((r["load"] for r in rows if r["load"].startswith("closed")), key=lambda x: int(x.split("-")[1]), default=None)
    for mode in ISSUE_SHARED:
        lo, hi = _row(rows, mode, n_min, top), _row(rows, mode, n_max, top)
        if lo and hi:
            d = hi["model_rss_mb"] - lo["model_rss_mb"]
            out.append({"target": f"{n_max} tenants on one replica within +100 MB ({mode}, vs {n_min} tenant)",
                        "measured": f"{d:+.1f} MB ({lo['model_rss_mb']:.0f} -> {hi['model_rss_mb']:.0f} MB); "
                                    f"{hi['bundle_kb_per_tenant']} KB per tenant in the cache",
                        "value": round(d, 1), "met": bool(d <= 100)})
    shared = [r for r in rows if r["mode"] in ISSUE_SHARED and not _is_slo(r["load"])]
    if shared:
        best = min(shared, key=lambda r: r["overhead_ratio"])
        big = max(shared, key=lambda r: r["batch_max"])
        out.append({"target": "serving overhead (end-to-end p50 / raw ORT time of the same batch) <= 1.5x (ort-shared)",
                    "measured": f"{best['overhead_ratio']:.0f}x at best ({best['mode']}, {best['tenants']} tenants, "
                                f"{best['load']}: p50 {best['p50_ms']:.1f} ms vs session.run {best['raw_ms']:.2f} ms for batch "
                                f"{best['batch_median']}; vs the whole in-process rank_batch {best['overhead_vs_rank']:.0f}x); "
                                f"at the largest batch formed ({big['batch_max']} rows, {big['mode']} {big['tenants']} tenants "
                                f"{big['load']}): {big['overhead_ratio_max_batch']:.0f}x",
                    "value": round(best["overhead_ratio"], 2), "met": bool(best["overhead_ratio"] <= 1.5)})
    return out


# --- markdown ------------------------------------------------------------------------------------
def _side_by_side(rows: list[dict[str, Any]], pick, title: str) -> str:  # noqa: ANN001
    modes = [m for m in MODES if any(r["mode"] == m for r in rows)]
    lines = [f"### {title}", "", "| tenants | " + " | ".join(modes) + " | fp32 / torch | int8 / torch |",
             "|" + "---|" * (len(modes) + 3)]
    for n in sorted({r["tenants"] for r in rows}):
        got = {m: pick(rows, m, n) for m in modes}
        cell = [f"{got[m]['rps']:.0f}" if got[m] else "-" for m in modes]
        t = got.get("torch-multiplex")
        ratio = [f"{got[m]['rps'] / t['rps']:.2f}x" if got.get(m) and t and t["rps"] > 0 else "-" for m in ISSUE_SHARED]
        lines.append(f"| {n} | " + " | ".join(cell) + " | " + " | ".join(ratio) + " |")
    return "\n".join(lines)


def _batches(rows: list[dict[str, Any]]) -> str:
    lines = ["### Batches the server formed (shared modes: one model call per batch, any tenant mix)", "",
             "| mode | tenants | load | batches | median | p90 | max | mean | tenants per batch (mean) | sizes: count |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["load"] != "closed-1":
            hist = ", ".join(f"{k}: {v}" for k, v in sorted(r["batch_hist"].items(), key=lambda kv: int(kv[0])))
            lines.append(f"| {label(r)} | {r['tenants']} | {r['load']} | {r['batches']} | {r['batch_median']} | "
                         f"{r['batch_p90']:.0f} | {r['batch_max']} | {r['batch_mean']} | {r['tenants_per_batch_mean']} | {hist} |")
    return "\n".join(lines)


STAGES = ("asgi", "handler", "call", "ranker", "queue", "thread", "resolve", "feed", "ort", "topk")


def _decomposition(rows: list[dict[str, Any]]) -> str:
    lines = ["### Where an unloaded request's time goes (closed-1, p50 ms; stages inside the replica(s))", "",
             "| mode | tenants | end-to-end | outside the model replica (client + HTTP + proxy + Serve) | "
             + " | ".join(STAGES) + " | ingress asgi (2-hop) | session.run in-process | rank_batch in-process | overhead ratio |",
             "|" + "---|" * (len(STAGES) + 7)]
    for r in rows:
        if r["load"] != "closed-1" or r["mode"] not in SHARED:
            continue
        st = r["stages_p50_ms"]
        front = st.get("ingress.asgi", st.get("asgi"))
        outside = r["p50_ms"] - front if front is not None else None
        cells = [f"{st[s]:.2f}" if s in st else "-" for s in STAGES]
        lines.append(f"| {label(r)} | {r['tenants']} | {r['p50_ms']:.2f} | {'-' if outside is None else f'{outside:.2f}'} | "
                     + " | ".join(cells) + f" | {st.get('ingress.asgi', float('nan')):.2f} | {r['raw_ms']:.3f} | "
                     f"{r['rank_ms']:.3f} | {r['overhead_ratio']:.0f}x |")
    return "\n".join(lines)


def _cpu(rows: list[dict[str, Any]], load: str) -> str:
    lines = [f"### CPU per request at saturation ({load}; ms of CPU per completed request, psutil)", "",
             "| mode | tenants | rps | HTTP proxy | replicas (by deployment) | load generator |", "|---|---|---|---|---|---|"]
    for r in rows:
        if r["load"] == load and r.get("cpu_ms_per_request"):
            cpu = dict(r["cpu_ms_per_request"])
            proxy = cpu.pop("proxy", None)
            reps = ", ".join(f"{k} {v:.2f}" for k, v in cpu.items())
            client = r["client_cpu_frac"] * r["wall_s"] * 1000 / max(1, r["requests"])
            lines.append(f"| {label(r)} | {r['tenants']} | {r['rps']:.0f} | {'-' if proxy is None else f'{proxy:.2f}'} | {reps} | {client:.2f} |")
    return "\n".join(lines)


def notes_markdown(rows: list[dict[str, Any]], tgt: list[dict[str, Any]], auto: dict[str, Any] | None,
                   pngs: list[Path]) -> str:
    top = max((r["load"] for r in rows if r["load"].startswith("closed")), key=lambda x: int(x.split("-")[1]))
    parts = [
        *(_side_by_side(sub, _slo_row, f"Highest open-loop rate with p99 <= SLO and 0 errors (rps), {i}")
          for i, sub in by_ingress(rows)),
        *(_side_by_side(sub, lambda rs, m, n: _row(rs, m, n, top), f"Closed-loop throughput, {top} (rps), {i}")
          for i, sub in by_ingress(rows)),
        _batches(rows),
        _decomposition(rows),
        _cpu(rows, top),
        "## Targets\n\n| target | measured | met |\n|---|---|---|\n" + "\n".join(
            f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else 'NO'} |" for t in tgt),
    ]
    if auto:
        parts.append(f"## Autoscaling run ({auto['deployment']}, through {auto.get('ingress', 'proxy')})\n\n| t0 s | offered rps | completed rps | p99 ms | errors | replicas (max) |\n"
                     "|---|---|---|---|---|---|\n" + "\n".join(
                         f"| {w['t0']:.0f} | {w['offered_rps']:.0f} | {w['done_rps']:.1f} | {fmt_ms(w['p99_ms'])} | "
                         f"{w['errors']} | {w['replicas_max']} |" for w in auto["windows"]))
    parts.append("Plots: " + ", ".join(f"`{p.name}`" for p in pngs))
    return "\n\n".join(parts)
