"""The few-shot benchmark's progress file: one JSON line per finished row, keyed and hashed.

Every finished (dataset, method, k, seed) row is appended with a hash of the settings it depends
on; a re-run skips rows whose hash still matches, and the report takes only rows of the current
settings, so a changed backbone or adaptation default re-runs and re-reports exactly what it affects.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from bench._results import log
from bench.fewshot_config import METHODS, ROW_KEYS, SCRATCH, ZERO_SHOT, portable_source
from rec.config import TenantSource

__all__ = ["row_key", "settings_hash", "read_progress", "append_progress", "final_rows"]


def row_key(r: dict[str, Any]) -> tuple:
    return (r["dataset"], r["method"], str(r["k"]), int(r["seed"]))


def settings_hash(ctx: Any, td_src: TenantSource, method: str) -> str:  # ctx: bench.fewshot.Context
    """What a row depends on besides (dataset, method, k, seed); a changed config re-runs the row."""
    part: dict[str, Any] = {"target": portable_source(td_src, ctx.bc.data_root), "num_eval_users": ctx.bc.num_eval_users, "quick": ctx.quick}
    if method in SCRATCH:
        part["scratch"] = ctx.bc.scratch.model_dump()
    elif method != "popularity":
        part["backbone"] = ctx.pretrain_key()
        if method not in ZERO_SHOT:
            part["adapt"] = ctx.adapt_defaults(method)
        if ctx.variant(method):
            part["variant"] = ctx.variant(method)
    if method == "lora-tuned":
        part["tune"] = ctx.bc.tune.model_dump()
    if method == "lora-meta":
        part["meta"] = ctx.bc.meta
    return hashlib.sha256(json.dumps(part, sort_keys=True, default=str).encode()).hexdigest()[:12]


def read_progress(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    out = []
    for i, line in enumerate(path.read_text().splitlines()):
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            log(f"{path}:{i + 1}: unreadable line skipped (interrupted write?)")
    return out


def append_progress(path: Path, row: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(row, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


def final_rows(progress: list[dict[str, Any]], ctx: Any) -> list[dict[str, Any]]:  # ctx: bench.fewshot.Context
    """The latest successful row per (dataset, method, k, seed) run with the current settings, in config order.

    Rows of an earlier backbone or adaptation setting (another settings hash) stay in the progress
    file but are never reported next to current ones.
    """
    bc, latest = ctx.bc, {}
    srcs = {t.name: t for t in bc.targets}
    current = {(n, m): settings_hash(ctx, src, m) for n, src in srcs.items() for m in METHODS}
    for r in progress:
        if r.get("status") == "ok" and r.get("settings") == current.get((r["dataset"], r["method"])):
            latest[row_key(r)] = {c: r[c] for c in ROW_KEYS}
    ds = {t.name: i for i, t in enumerate(bc.targets)}
    ks = {str(k): i for i, k in enumerate([0, 16, 64, 256, "all"])}
    order = lambda r: (ds.get(r["dataset"], 99), METHODS.index(r["method"]), ks.get(str(r["k"]), 50), r["seed"])  # noqa: E731
    return sorted(latest.values(), key=order)
