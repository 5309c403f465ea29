"""A sweep's results: one row per trial, written as CSV and markdown next to the experiment."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from rec.io.artifacts import atomic_write_bytes
from tuning.search_spaces import SweepSpec, k_label, trial_config, trial_overrides
from tuning.trial import METRIC

__all__ = ["trial_row", "write_tables"]


def trial_row(result, spec: SweepSpec, tree: dict) -> dict[str, Any]:  # noqa: ANN001
    """One results-table row: tenant, k, trial id, every swept key, best val NDCG@10, epochs, status."""
    config, m = result.config, result.metrics or {}
    trial_id = m.get("trial_id") or Path(result.path).name.removeprefix("trial_")
    over = trial_overrides(spec, config)
    row: dict[str, Any] = {"tenant": config["tenant"], "k": k_label(config["k_users"]), "k_users": config["k_users"], "trial_id": trial_id}
    row.update({p.key: over[p.key] for p in spec.swept()})
    df = result.metrics_dataframe
    row["val_ndcg@10"] = float(df[METRIC].max()) if df is not None and METRIC in df and len(df) else None
    row["epochs"] = int(m.get("epoch", 0))
    if result.error is not None:
        row["status"] = "error"
    elif row["val_ndcg@10"] is None:
        row["status"] = "no result"
    else:
        tc = trial_config(tree, spec, config)
        planned = tc.fed.rounds if spec.job == "fed" else tc.adapt.epochs
        if row["epochs"] >= planned or (m.get("final") and row["epochs"] == 0):
            row["status"] = "completed"
        elif m.get("final"):
            row["status"] = "early-stopped (patience)"
        else:
            row["status"] = "stopped (ASHA)"
    if spec.job == "fed":
        row["adapter"] = m.get("adapter")  # a federated trial publishes its own adapter
    row["best"] = False
    row["_config"] = config
    return row


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return "[" + ", ".join(map(str, v)) + "]"
    return "" if v is None else str(v)


def write_tables(exp_dir: Path, spec: SweepSpec, rows: list[dict], best: list[dict]) -> tuple[Path, Path]:
    cols = ["tenant", "k", "trial_id", *[p.key for p in spec.swept()], "val_ndcg@10", "epochs", "status", "best"]
    rows = sorted(rows, key=lambda r: (r["tenant"], r["k"], -(r["val_ndcg@10"] if r["val_ndcg@10"] is not None else np.inf)))
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(cols)
    for r in rows:
        w.writerow([_fmt(r[c]) if not isinstance(r[c], float) else repr(r[c]) for c in cols])
    csv_path, md_path = exp_dir / "results.csv", exp_dir / "results.md"
    atomic_write_bytes(csv_path, buf.getvalue().encode())
    md = [f"# Sweep `{spec.name}`", "",
          f"{len(rows)} trials; search `{spec.search}`, scheduler `{spec.scheduler.type}`; objective: validation "
          "NDCG@10 of each tenant's held-out users (best epoch).", "", "## Best per (tenant, K)", "",
          "| tenant | k | trial | val ndcg@10 | test ndcg@10 | adapter |", "|---|---|---|---|---|---|"]
    for b in best:
        md.append(f"| {b['tenant']} | {b['k']} | {b['trial_id']} | {b['val_ndcg@10']:.4f} | "
                  f"{_fmt(b.get('test', {}).get('ndcg@10'))} | {b.get('adapter', '')} |")
    md += ["", "## All trials", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    md += ["| " + " | ".join(_fmt(r[c]) if c != "best" else ("✓" if r[c] else "") for c in cols) + " |" for r in rows]
    atomic_write_bytes(md_path, ("\n".join(md) + "\n").encode())
    return csv_path, md_path
