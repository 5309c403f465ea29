"""Shared writer for benchmark results: ``bench/results/<name>.json`` + ``<name>.md``.

JSON layout (all benchmarks): ``{"benchmark", "protocol", "machine", "rows": [flat dicts]}``.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
from pathlib import Path
from typing import Any

from rec.io.artifacts import atomic_write_bytes, library_versions

RESULTS = Path(__file__).resolve().parent / "results"

__all__ = ["RESULTS", "log", "machine_info", "peak_rss_mb", "write_results", "markdown_table"]


def log(msg: str) -> None:
    """One timestamped progress line on stdout (benchmarks run for minutes to hours)."""
    import time

    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _gpu_name() -> str | None:
    """The GPU torch computes on, if this process imported torch and torch sees one."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_name(0)


def machine_info() -> dict[str, Any]:
    import psutil

    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "gpu": _gpu_name(),
        "os": platform.platform(),
        "versions": library_versions(),
    }


def peak_rss_mb(include_children: bool = True) -> float:
    """Peak resident memory of this process (and, optionally, its finished children) in MiB."""
    mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if include_children:
        mb = max(mb, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
    return round(mb, 1)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 100 else f"{v:.1f}"
    return str(v)


def markdown_table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    columns = columns or list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(_fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def write_results(
    name: str,
    protocol: str | dict[str, Any],
    rows: list[dict[str, Any]],
    columns: list[str] | None = None,
    notes: str = "",
    results_dir: Path = RESULTS,
) -> Path:
    """Write ``<name>.json`` and ``<name>.md`` atomically; returns the JSON path."""
    payload = {"benchmark": name, "protocol": protocol, "machine": machine_info(), "rows": rows}
    jpath = results_dir / f"{name}.json"
    atomic_write_bytes(jpath, json.dumps(payload, indent=2, default=str).encode())
    proto = protocol if isinstance(protocol, str) else "\n".join(f"- **{k}**: {v}" for k, v in protocol.items())
    md = f"# {name}\n\n{proto}\n\n{markdown_table(rows, columns)}\n" + (f"\n{notes}\n" if notes else "")
    atomic_write_bytes(results_dir / f"{name}.md", md.encode())
    return jpath
