"""Tables, target checks and the plot of the few-shot benchmark, computed from its result rows."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from bench.fewshot_config import METHODS, SCRATCH


def means(rows: list[dict[str, Any]], col: str = "ndcg@10") -> dict[tuple, tuple[float, float, int]]:
    """(dataset, method, k as str) -> (mean, std, n seeds)."""
    groups: dict[tuple, list[float]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["method"], str(r["k"])), []).append(float(r[col]))
    return {g: (float(np.mean(v)), float(np.std(v)), len(v)) for g, v in groups.items()}


def k_order(ks: set[str]) -> list[str]:
    return sorted(ks, key=lambda k: (k == "all", int(k) if k != "all" else 0))


def pivot_tables(rows: list[dict[str, Any]]) -> str:
    mean = means(rows)
    out = []
    for ds in dict.fromkeys(r["dataset"] for r in rows):
        ks = k_order({g[2] for g in mean if g[0] == ds})
        methods = [m for m in METHODS if any(g[0] == ds and g[1] == m for g in mean)]
        lines = [f"**{ds}** — mean NDCG@10 ± std over seeds (n seeds in brackets when < max)", "",
                 "| method | " + " | ".join(f"K={k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
        nmax = max(v[2] for g, v in mean.items() if g[0] == ds)
        for m in methods:
            cells = []
            for k in ks:
                v = mean.get((ds, m, k))
                cells.append("" if v is None else f"{v[0]:.4f}" + (f" ±{v[1]:.4f}" if v[2] > 1 else "")
                             + (f" ({v[2]})" if v[2] < nmax else ""))
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        out.append("\n".join(lines))
    return "\n\n".join(out)


def cost_table(rows: list[dict[str, Any]]) -> str:
    """Per method: adapter size and mean adaptation time per K (over datasets and seeds)."""
    t, b = means(rows, "adapt_s"), means(rows, "adapter_bytes")
    ks = k_order({g[2] for g in t})
    lines = ["| method | adapter bytes (median over datasets) | " + " | ".join(f"adapt_s K={k}" for k in ks) + " |",
             "|---|---|" + "---|" * len(ks)]
    for m in [m for m in METHODS if any(g[1] == m for g in t)]:
        sizes = [v[0] for g, v in b.items() if g[1] == m]
        cells = []
        for k in ks:
            vals = [v[0] for g, v in t.items() if g[1] == m and g[2] == k]
            cells.append(f"{np.mean(vals):.1f}" if vals else "")
        lines.append(f"| {m} | {int(np.median(sizes)):,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def target_checks(rows: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """The issue's three targets per dataset, on mean NDCG@10 over the seeds that ran."""
    mean = means(rows)
    g = lambda ds, m, k: mean.get((ds, m, str(k)), (None,))[0]  # noqa: E731
    lines = ["| dataset | LoRA / best scratch @K=64 (target ≥ 2) | LoRA / scratch-sasrec-id @K=64 (≥ 2) | "
             "LoRA / full @K=all (target ≥ 0.95) | LoRA, low-rank adaptor / full @K=all (≥ 0.95) | "
             "zero-shot / popularity@K=16 (target ≥ 1.2) | zero-shot / uniform (K=0) |",
             "|---|---|---|---|---|---|---|"]
    summary: dict[str, Any] = {}

    def ratio(a, b, target):  # noqa: ANN001, ANN202
        if a is None or b is None:
            return "not run", None
        r = a / b if b > 0 else float("inf")
        return f"{r:.2f} {'✓' if r >= target else '✗'}", r >= target

    for ds in dict.fromkeys(r["dataset"] for r in rows):
        scratch = [v for v in (g(ds, "scratch-sasrec-id", 64), g(ds, "scratch-backbone", 64)) if v is not None]
        c1 = ratio(g(ds, "lora", 64), max(scratch) if scratch else None, 2.0)
        c1_id = ratio(g(ds, "lora", 64), g(ds, "scratch-sasrec-id", 64), 2.0)
        c2 = ratio(g(ds, "lora", "all"), g(ds, "full", "all"), 0.95)
        c2a = ratio(g(ds, "lora-lowrank-adaptor", "all"), g(ds, "full", "all"), 0.95)
        c3 = ratio(g(ds, "zero-shot", 0), g(ds, "popularity", 16), 1.2)
        c4 = ratio(g(ds, "zero-shot", 0), g(ds, "popularity", 0), 1.2)
        lines.append(f"| {ds} | {c1[0]} | {c1_id[0]} | {c2[0]} | {c2a[0]} | {c3[0]} | {c4[0]} |")
        summary[ds] = {"lora_2x_scratch_k64": c1[1], "lora_2x_scratch_sasrec_id_k64": c1_id[1], "lora_within_5pct_full_kall": c2[1],
                       "lora_lowrank_adaptor_within_5pct_full_kall": c2a[1],
                       "zero_shot_above_popularity_k16": c3[1], "zero_shot_above_uniform": c4[1]}
    return "\n".join(lines), summary


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mean = means(rows)
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    ks_all = k_order({g[2] for g in mean})
    xpos = {k: i for i, k in enumerate(ks_all)}
    ncol = min(3, len(datasets))
    nrow = -(-len(datasets) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(5.2 * ncol, 3.9 * nrow), squeeze=False)
    for ax, ds in zip(axes.flat, datasets):
        for m in METHODS:
            pts = sorted(((xpos[k], *mean[(ds, mm, k)][:2]) for (d, mm, k) in mean if d == ds and mm == m), key=lambda p: p[0])
            if not pts:
                continue
            x, y, e = zip(*pts)
            if m == "zero-shot":
                ax.axhline(y[0], ls="--", lw=1, color="black", label=f"zero-shot ({y[0]:.3f})")
                continue
            ax.errorbar(x, y, yerr=e if any(e) else None, marker="o", ms=3, lw=1.2, capsize=2, label=m,
                        ls=":" if m in SCRATCH or m == "popularity" else "-")
        ax.set_xticks(range(len(ks_all)), [f"K={k}" for k in ks_all])
        ax.set(title=ds, ylabel="test NDCG@10 (full ranking)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6.5, ncol=2)
    for ax in list(axes.flat)[len(datasets):]:
        ax.axis("off")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)
    plt.close(fig)
