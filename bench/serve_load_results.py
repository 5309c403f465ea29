"""What a serving-benchmark run's rows mean: the modes compared, issue 5's targets, tables and plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

MODES = ("torch-multiplex", "ort-merged-multiplex", "ort-shared-fp32", "ort-shared-int8")
MULTIPLEX = ("torch-multiplex", "ort-merged-multiplex")


def plot_matrix(rows: list[dict[str, Any]], name: str, results: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    loads = list(dict.fromkeys(r["load"] for r in rows))
    fig, axes = plt.subplots(1, 2 + len(loads) - 1, figsize=(5 * (1 + len(loads)), 4))
    ax_rps, ax_p99 = axes[0], axes[1:]
    for m in modes:
        closed = [r for r in rows if r["mode"] == m and r["load"].startswith("closed")]
        ax_rps.plot([r["tenants"] for r in closed], [r["rps"] for r in closed], marker="o", label=m)
        for ax, ld in zip(ax_p99, loads):
            rs = [r for r in rows if r["mode"] == m and r["load"] == ld]
            ax.plot([r["tenants"] for r in rs], [r["p99_ms"] for r in rs], marker="o", label=m)
    ax_rps.set(xscale="log", xlabel="tenants", ylabel="requests/s", title=f"throughput ({loads[0]})")
    for ax, ld in zip(ax_p99, loads):
        ax.set(xscale="log", yscale="log", xlabel="tenants", ylabel="p99 ms", title=f"p99 latency ({ld})")
        ax.axhline(50, color="grey", ls=":", lw=1)
    ax_rps.legend(fontsize=8)
    fig.tight_layout()
    paths.append(results / f"{name}_throughput_p99.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for m in modes:
        closed = [r for r in rows if r["mode"] == m and r["load"].startswith("closed")]
        ax.plot([r["tenants"] for r in closed], [r["model_rss_mb"] for r in closed], marker="o", label=m)
    ax.set(xscale="log", xlabel="tenants", ylabel="MiB", title="RSS of the model-holding replica vs tenants")
    ax.legend(fontsize=8)
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
    a1.set(ylabel="requests/s", title="autoscaling run (ort-shared-fp32, open loop)")
    a1.legend(fontsize=8)
    s = auto["samples"]
    a2.step([x["t"] for x in s], [x["ranker"] for x in s], where="post", color="C2", label="Ranker replicas")
    a2.set(xlabel="seconds", ylabel="Ranker replicas", ylim=(0, max(3, auto["max_ranker_replicas"] or 1) + 0.5))
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
def targets(rows: list[dict[str, Any]], closed: str, opened: str, tenants: list[int]) -> list[dict[str, Any]]:
    """Issue 5's targets: throughput ratio from the closed loop (capacity), p99 from the open loop
    (a fixed, unsaturated offered load), RSS of the Ranker replica, overhead ratio, errors."""
    def row(mode: str, n: int, load: str = closed) -> dict[str, Any] | None:
        return next((r for r in rows if r["mode"] == mode and r["tenants"] == n and r["load"] == load), None)

    out = []
    n_max, n_min = max(tenants), min(tenants)
    for n in tenants:
        torch_r = row("torch-multiplex", n)
        for mode in ("ort-shared-fp32", "ort-shared-int8"):
            r, o = row(mode, n), row(mode, n, opened)
            if r and torch_r and o:
                ratio = r["rps"] / torch_r["rps"]
                out.append({"target": f"{mode} throughput >= 3x torch-multiplex ({closed}) at p99 <= 50 ms ({opened}), {n} tenants",
                            "measured": f"{ratio:.2f}x ({r['rps']:.1f} vs {torch_r['rps']:.1f} rps); p99 {o['p99_ms']:.0f} ms "
                                        f"at {opened} ({r['p99_ms']:.0f} ms at {closed})",
                            "value": round(ratio, 3), "p99_ms": round(o["p99_ms"], 1), "met": bool(ratio >= 3 and o["p99_ms"] <= 50)})
    for mode in ("ort-shared-fp32", "ort-shared-int8"):
        lo, hi = row(mode, n_min), row(mode, n_max)
        if lo and hi:
            d = hi["model_rss_mb"] - lo["model_rss_mb"]
            out.append({"target": f"{n_max} tenants on one Ranker replica within +100 MB ({mode}, vs {n_min} tenant)",
                        "measured": f"{d:+.1f} MB ({lo['model_rss_mb']:.0f} -> {hi['model_rss_mb']:.0f} MB)",
                        "value": round(d, 1), "met": bool(d <= 100)})
    shared = [r for r in rows if r["mode"].startswith("ort-shared")]
    if shared:
        best = min(shared, key=lambda r: r["overhead_ratio"])
        out.append({"target": "serving overhead (end-to-end p50 / raw ORT time of the same batch) <= 1.5x (ort-shared)",
                    "measured": f"{best['overhead_ratio']:.0f}x at best ({best['mode']}, {best['tenants']} tenants, {best['load']}: "
                                f"p50 {best['p50_ms']:.1f} ms vs raw {best['raw_ms']:.2f} ms for batch {best['batch_median']}); "
                                f"max {max(r['overhead_ratio'] for r in shared):.0f}x",
                    "value": round(best["overhead_ratio"], 2), "met": bool(best["overhead_ratio"] <= 1.5)})
    errs = sum(r["errors"] for r in rows)
    out.append({"target": "0 errors (every row)", "measured": f"{errs} errors in {sum(r['requests'] for r in rows)} requests",
                "value": errs, "met": errs == 0})
    return out


def ratios(rows: list[dict[str, Any]], closed: str) -> str:
    """Side-by-side closed-loop throughput ratios per tenant count (modes ran back to back)."""
    lines = ["| tenants | " + " | ".join(f"{m} rps" for m in MODES) + " | shared-fp32 / torch | shared-fp32 / merged |",
             "|" + "---|" * (len(MODES) + 3)]
    for n in sorted({r["tenants"] for r in rows}):
        rps = {r["mode"]: r["rps"] for r in rows if r["tenants"] == n and r["load"] == closed}
        cell = [f"{rps[m]:.1f}" if m in rps else "-" for m in MODES]
        f = rps.get("ort-shared-fp32")
        rt = f"{f / rps['torch-multiplex']:.2f}x" if f and rps.get("torch-multiplex") else "-"
        rm = f"{f / rps['ort-merged-multiplex']:.2f}x" if f and rps.get("ort-merged-multiplex") else "-"
        lines.append(f"| {n} | " + " | ".join(cell) + f" | {rt} | {rm} |")
    return "\n".join(lines)
