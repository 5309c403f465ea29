"""Cold start of a serving replica: import cost of ``serve_apps.recommender`` and deployment-to-first-answer.

Measures, for one or more checkouts of the code side by side (``--code NAME=DIR``, e.g. the commit
before a change exported with ``git archive`` and the working tree), in that order, repeated:

- ``import``: a fresh interpreter runs ``import serve_apps.recommender``: wall seconds, peak RSS,
  and whether torch / ray.train / peft / transformers were loaded on the way;
- ``deploy``: a local Ray (2 CPUs, no dashboard, Serve's HTTP proxy already up) runs
  ``serve.run(build_app(args))`` and POSTs one recommendation until it answers 200: seconds to
  the first answer (the replica process starts, imports, loads the ONNX session; the tenant bundle
  loads on that first request), and the replica's RSS after the first answer and after 200 more.

The artifact root is built once (``--root``, created with a tiny untrained backbone when missing:
cold start does not depend on model quality). Each checkout runs in its own subprocess with its own
``PYTHONPATH``, so Ray workers import that checkout's code.

    python bench/serve_coldstart.py --code before="$(mktemp -d)" --code after=.

Writes ``bench/results/serve_coldstart.json`` (+ ``.md``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HEAVY = ("torch", "ray.train", "peft", "transformers")
APP = "coldstart"
_IMPORT_PROBE = (
    "import json, resource, sys, time\n"
    "t = time.perf_counter()\n"
    "import serve_apps.recommender\n"
    "dt = time.perf_counter() - t\n"
    "print(json.dumps({'import_s': dt, 'rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,\n"
    f"                  'heavy': [m for m in {HEAVY!r} if m in sys.modules]}}))\n"
)


# --- the artifact root ------------------------------------------------------------------------------
def build_root(root: Path) -> None:
    """A serving root with a tiny untrained backbone and two zero-shot tenants (torch needed here only)."""
    import torch

    from rec.config import load_config
    from rec.export.publish import ensure_serving_model, publish_tenant
    from rec.models.backbone import build_backbone
    from rec.training.checkpoint import export_backbone, load_backbone
    from rec.training.corpus import build_corpus, load_tenants

    work = Path(tempfile.mkdtemp(prefix="coldstart-"))
    overrides = ["data.synthetic.tenants=2", "data.synthetic.users_per_tenant=120", "data.synthetic.items_per_tenant=300",
                 "data.max_seq_len=20", "model.max_len=20", "model.d_model=64", f"text.cache_dir={work}/text"]
    cfg = load_config(None, overrides)
    corpus = build_corpus(cfg)
    torch.manual_seed(0)
    model = build_backbone(cfg.model)
    tenants = {t.name: {"id_offset": t.id_offset, "num_items": t.num_items, "data_hash": t.data_hash} for t in corpus.tenants}
    loaded = load_backbone(export_backbone(work / "checkpoint", model.state_dict(), cfg, tenants, {}, corpus.text_model))
    ensure_serving_model(root, loaded)
    for t, ct in zip(load_tenants(cfg.data), corpus.tenants, strict=True):
        publish_tenant(root, loaded, t, ct.text_emb)


def first_request(root: Path) -> tuple[str, dict[str, Any]]:
    """A tenant of ``root`` and a recommendation body with five of its item ids."""
    tenants = sorted(p.name for p in (root / "tenants").iterdir() if (p / "CURRENT").exists())
    tenant = tenants[0]
    version = json.loads((root / "tenants" / tenant / "CURRENT").read_text())["version"]
    ids = json.loads((root / "tenants" / tenant / f"v{version}" / "item_ids.json").read_text())
    return tenant, {"history": ids[:5], "k": 10}


# --- one checkout, in its own process -------------------------------------------------------------
def measure_imports(repeats: int) -> list[dict[str, Any]]:
    rows = []
    for i in range(repeats):
        out = subprocess.run([sys.executable, "-c", _IMPORT_PROBE], capture_output=True, text=True, check=True,
                             env={**os.environ}, cwd=tempfile.gettempdir())
        got = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append({"phase": "import", "run": i, "seconds": round(got["import_s"], 3), "rss_mb": round(got["rss_mb"], 1),
                     "heavy_modules": ",".join(got["heavy"]) or "-"})
    return rows


def _replica_rss_mb() -> float:
    from bench.serve_session import replica_rss_mb

    return replica_rss_mb(APP)


def _post_until_ok(url: str, body: dict[str, Any], deadline_s: float = 120.0) -> None:
    import requests

    stop = time.monotonic() + deadline_s
    while True:
        try:
            if requests.post(url, json=body, timeout=30).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        if time.monotonic() > stop:
            raise RuntimeError(f"{url} did not answer 200 within {deadline_s} s")
        time.sleep(0.02)


def measure_deploys(root: Path, repeats: int, port: int) -> list[dict[str, Any]]:
    import ray
    import requests
    from ray import serve

    from serve_apps.recommender import build_app

    tenant, body = first_request(root)
    url = f"http://127.0.0.1:{port}/v1/tenants/{tenant}/recommendations"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1"}})
    rows = []
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        for i in range(repeats):
            t0 = time.perf_counter()
            serve.run(build_app({"artifact_root": str(root)}), name=APP, route_prefix="/")
            ready = time.perf_counter() - t0
            _post_until_ok(url, body)
            first = time.perf_counter() - t0
            rss_first = _replica_rss_mb()
            for _ in range(200):
                requests.post(url, json=body, timeout=30).raise_for_status()
            rows.append({"phase": "deploy", "run": i, "seconds": round(first, 3), "ready_s": round(ready, 3),
                         "rss_mb": rss_first, "rss_after_200_mb": _replica_rss_mb()})
            serve.delete(APP)
            while _replica_rss_mb():
                time.sleep(0.1)
    finally:
        serve.shutdown()
        ray.shutdown()
    return rows


def _one_checkout(args: argparse.Namespace) -> None:
    rows = measure_imports(args.repeats) + measure_deploys(Path(args.root), args.repeats, args.port)
    print(json.dumps(rows))


# --- driver -----------------------------------------------------------------------------------------
def _summary(name: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for phase in ("import", "deploy"):
        got = [r for r in rows if r["phase"] == phase]
        row = {"code": name, "phase": phase, "runs": len(got), "median_s": statistics.median(r["seconds"] for r in got),
               "median_rss_mb": statistics.median(r["rss_mb"] for r in got)}
        if phase == "import":
            row["heavy_modules"] = got[0]["heavy_modules"]
        else:
            row["median_ready_s"] = statistics.median(r["ready_s"] for r in got)
            row["median_rss_after_200_mb"] = statistics.median(r["rss_after_200_mb"] for r in got)
        out.append(row)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--code", action="append", default=[], help="NAME=DIR of a checkout to measure (repeatable; default: this one)")
    p.add_argument("--root", default=str(Path(tempfile.gettempdir()) / "serve-coldstart-root"),
                   help="serving artifact root (built when missing)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--port", type=int, default=8123)
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # internal: measure this process's checkout
    args = p.parse_args()
    if args.one:
        _one_checkout(args)
        return
    from bench._results import log, write_results

    root = Path(args.root)
    if not (root / "model" / "manifest.json").is_file():
        log(f"building the artifact root {root}")
        build_root(root)
    codes = [c.split("=", 1) for c in args.code] or [["current", "."]]
    rows: list[dict[str, Any]] = []
    for name, folder in codes:
        folder = str(Path(folder).resolve())
        log(f"measuring {name} ({folder})")
        env = {**os.environ, "PYTHONPATH": folder, "RAY_USAGE_STATS_ENABLED": "0"}
        out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--one", "--root", str(root),
                              "--repeats", str(args.repeats), "--port", str(args.port)],
                             capture_output=True, text=True, env=env, cwd=folder)
        if out.returncode != 0:
            raise SystemExit(f"{name}: measurement failed:\n{out.stderr[-3000:]}")
        got = json.loads(out.stdout.strip().splitlines()[-1])
        rows += [{"code": name, **r} for r in got]
    summary = [r for name, _ in codes for r in _summary(name, [x for x in rows if x["code"] == name])]
    protocol = {
        "import": "fresh interpreter, `import serve_apps.recommender`: wall s and peak RSS (ru_maxrss); heavy_modules = "
                  f"which of {', '.join(HEAVY)} got imported",
        "deploy": "local Ray (2 CPUs, no dashboard), Serve proxy started first; serve.run(build_app({'artifact_root'})) "
                  "then POST one recommendation until 200: seconds to first answer (ready_s = serve.run returned); "
                  "replica RSS (psutil) after the first answer and after 200 more requests",
        "repeats": args.repeats,
        "codes": {n: str(Path(f).resolve()) for n, f in codes},
        "note": "the machine is shared with other jobs: compare checkouts measured in the same run",
    }
    path = write_results("serve_coldstart", protocol, summary + rows)
    log(f"wrote {path}")
    for r in summary:
        print(r)


if __name__ == "__main__":
    main()
