"""Does pretraining transfer to unseen catalogs once the sources are larger?

The few-shot benchmark (bench/fewshot.py, 2-core protocol) pretrains on 3,000 users per source,
and its held-out selection published the **untrained init**: every trained epoch ranked the
held-out catalog worse zero-shot. This probe asks whether that is a data-size effect. For each
``--runs`` setting (users per source, 0 = every user, x width) it pretrains the same backbone (the
``pretrain`` overrides of the few-shot config: text-only, d_model 64, 2 layers, full-softmax CE)
on the same six sources with ``rec.training.loop`` in one process (a GPU when there is one), and
after every epoch ranks, zero-shot, the held-out tenant (``game2018``) and the six few-shot
targets on **the benchmark's own held-out users** (``k_shot_split`` seed 0, 500 users: the rows
``zero-shot`` of bench/results/fewshot.json are scored on the same users).

``--runs`` takes ``USERSxD_MODEL`` pairs, so a wider model can be tried on the larger samples.

Rows: ``users_per_source``, ``d_model``, ``epoch`` (-1 = the untrained init), ``dataset``, ``ndcg@10``,
``hr@10``, ``vs_init`` (ndcg@10 / the init's), ``train_rows``, ``epoch_s``.

    # here: the data as compact arrays (datasets are read from ../shared, never copied into git)
    python -m bench.transfer_scale --export .devwork/tenants
    # a GPU machine (or here, slowly): pretrain and rank
    python -m bench.transfer_scale --tenants .devwork/tenants --runs 3000x64 30000x64 0x64 0x256 --epochs 8
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._results import RESULTS, log, write_results  # noqa: E402
from bench.fewshot import compact_catalog  # noqa: E402
from bench.fewshot_config import load_bench_config, rec_config, with_data_root  # noqa: E402
from rec.config import DATA_ROOT_ENV  # noqa: E402
from rec.data.schema import ItemTable, Tenant  # noqa: E402

COLUMNS = ["users_per_source", "d_model", "epoch", "dataset", "role", "ndcg@10", "hr@10", "vs_init", "train_rows", "epoch_s"]
NUM_EVAL_USERS = 500  # as bench/fewshot-2core.yaml


# --- data: full tenants as compact arrays (no pickle) ---------------------------------------------
def save_tenant(t: Tenant, folder: Path) -> None:
    np.savez_compressed(folder / f"{t.name}.npz", offsets=t.offsets.astype(np.int64), item_index=t.item_index.astype(np.int32))
    with gzip.open(folder / f"{t.name}.json.gz", "wt", encoding="utf-8") as f:
        json.dump({"ids": [str(i) for i in t.items.ids], "text": list(t.items.text), "source": t.source}, f)


def read_tenant(folder: Path, name: str) -> Tenant:
    arrays = np.load(folder / f"{name}.npz", allow_pickle=False)
    with gzip.open(folder / f"{name}.json.gz", "rt", encoding="utf-8") as f:
        meta = json.load(f)
    offsets, flat = arrays["offsets"], arrays["item_index"].astype(np.int64)
    users = np.array([f"u{i}" for i in range(len(offsets) - 1)], dtype=object).astype(str)
    return Tenant(name, ItemTable(np.asarray(meta["ids"], dtype=str), meta["text"]), users, offsets, flat,
                  np.full(len(flat), -1, np.int64), meta["source"])


def sample_users(t: Tenant, n: int, seed: int) -> Tenant:
    """``load_source``'s ``max_users`` sample (same rng, same order), then the touched catalog."""
    if n and t.num_users > n:
        t = t.subset_users(np.sort(np.random.default_rng(seed).choice(t.num_users, size=n, replace=False)))
    return compact_catalog(t)


def export(bc: Any, out: Path) -> None:
    """Sources and the held-out tenant with every user; targets as the benchmark loads them."""
    from rec.data.loaders import load_source

    out.mkdir(parents=True, exist_ok=True)
    specs = [s.model_copy(update={"max_users": None}) for s in [*bc.sources, *bc.holdout]] + list(bc.targets)
    for s in specs:
        t = load_source(s, min_seq_len=3)
        save_tenant(t, out)
        log(f"{t.name}: {t.num_users} users, {t.num_items} items, {t.num_interactions} interactions")
    (out / "index.json").write_text(json.dumps({"sources": [s.name for s in bc.sources], "holdout": [s.name for s in bc.holdout],
                                                 "targets": [s.name for s in bc.targets], "seeds": {s.name: s.seed for s in bc.sources}}))


# --- the probe -------------------------------------------------------------------------------------
def zero_shot_sets(folder: Path, index: dict, cfg: Any, device: Any) -> list[tuple[str, str, Any, Any]]:
    """(name, role, TenantCorpus with the benchmark's 500 held-out users, text embeddings on device)."""
    import torch

    from rec.adaptation.adapt import fewshot_corpus
    from rec.data.splits import k_shot_split
    from rec.text import encode_items

    out = []
    for role, names in (("holdout", index["holdout"]), ("target", index["targets"])):
        for name in names:
            t = read_tenant(folder, name)
            emb = encode_items(list(t.items.text), cfg.text)
            tc = fewshot_corpus(k_shot_split(t, 1, None, 0, NUM_EVAL_USERS), emb, cfg.data.max_seq_len)
            out.append((name, role, tc, torch.from_numpy(emb).to(device)))
    return out


def run_setting(users: int, d_model: int, folder: Path, index: dict, cfg: Any, evals: list, epochs: int, batch: int, lr: float,
                device: Any, rows: list[dict[str, Any]], save: Any) -> None:
    """Pretrain one (users per source, width) setting; append its rows and ``save()`` after every epoch."""
    import torch

    from rec.models.backbone import build_backbone
    from rec.training.batches import shard_rows
    from rec.training.corpus import build_corpus
    from rec.training.loop import CorpusLoss, evaluate_tenant, train_epoch

    tenants = [sample_users(read_tenant(folder, n), users, index["seeds"].get(n, 0)) for n in index["sources"]]
    corpus = build_corpus(cfg, tenants=tenants, holdout=[])
    embs = [torch.from_numpy(t.text_emb).to(device) for t in corpus.tenants]
    torch.manual_seed(cfg.train.seed)
    model = build_backbone(cfg.model.model_copy(update={"d_model": d_model})).to(device)
    loss_model = CorpusLoss(model, cfg.model.loss, cfg.model.num_negatives)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=cfg.train.weight_decay)
    tag = f"users/source={users or 'all'} d_model={d_model}"
    log(f"{tag}: {[(t.name, t.num_users, t.num_items) for t in tenants]}, {corpus.num_train_rows} rows")
    init: dict[str, float] = {}
    for epoch in range(-1, epochs):
        t0 = time.perf_counter()
        loss = float("nan")
        if epoch >= 0:
            loss = train_epoch(loss_model, opt, corpus, shard_rows(corpus.num_train_rows, epoch, cfg.train.seed, 0, 1), embs, batch,
                               cfg.train.grad_clip)
        epoch_s = time.perf_counter() - t0
        line = []
        for name, role, tc, emb in evals:
            m = evaluate_tenant(model, tc, emb, "test", ks=[10])
            init.setdefault(name, m["ndcg@10"])
            rows.append({"users_per_source": users or "all", "d_model": d_model, "epoch": epoch, "dataset": name, "role": role, "ndcg@10": m["ndcg@10"],
                         "hr@10": m["hr@10"], "vs_init": m["ndcg@10"] / init[name] if init[name] else None,
                         "train_rows": corpus.num_train_rows, "epoch_s": round(epoch_s, 1), "train_loss": loss})
            line.append(f"{name} {m['ndcg@10']:.4f}")
        log(f"{tag} epoch {epoch}: loss {loss:.3f} ({epoch_s:.0f} s) | " + "  ".join(line))
        save()  # a run stopped by a time limit keeps every finished epoch


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["dataset"] for r in rows))
    settings = list(dict.fromkeys((r["users_per_source"], r["d_model"]) for r in rows))
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.2), sharey=True)
    for ax, name in zip(np.atleast_1d(axes), names):
        for s in settings:
            pts = [(r["epoch"], r["vs_init"]) for r in rows if r["dataset"] == name and (r["users_per_source"], r["d_model"]) == s]
            ax.plot(*zip(*pts), marker="o", ms=3, label=f"{s[0]} users/source, d{s[1]}")
        ax.axhline(1.0, color="grey", lw=0.8, ls="--")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("epoch (-1 = init)")
    np.atleast_1d(axes)[0].set_ylabel("zero-shot NDCG@10 / untrained init")
    np.atleast_1d(axes)[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_pair(text: str) -> tuple[int, int]:
    """``"3000x64"`` -> ``(3000, 64)`` for ``--runs``."""
    users, sep, width = text.partition("x")
    if not (sep and users.isdigit() and width.isdigit() and int(width) > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not USERSxD_MODEL (e.g. 3000x64, or 0x256 for every user at width 256)")
    return int(users), int(width)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(ROOT / "bench" / "fewshot-2core.yaml"), help="sources, targets and pretrain overrides")
    ap.add_argument("--export", type=Path, help="write the tenants as compact arrays here, then stop")
    ap.add_argument("--tenants", type=Path, help="read the tenants --export wrote")
    ap.add_argument("--runs", nargs="+", type=run_pair, default=[(3000, 64), (30000, 64), (0, 64)],
                    help="USERSxD_MODEL pairs: users per source (0 = all) x width, e.g. 3000x64 0x256")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--text-model", default="minilm", help="text.model (a folder on a machine without the package)")
    ap.add_argument("--text-cache", default=str(ROOT / ".cache" / "rec-text"), help="text.cache_dir")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--results-dir", type=Path, default=RESULTS)
    ap.add_argument("--name", default="transfer_scale")
    a = ap.parse_args(argv)
    bc = load_bench_config(a.config)
    if a.export:
        export(with_data_root(bc, os.environ.get(DATA_ROOT_ENV)), a.export)
        return 0
    if not a.tenants:
        ap.error("pass --export DIR (here) or --tenants DIR (the machine that trains)")
    import torch

    torch.set_num_threads(a.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    index = json.loads((a.tenants / "index.json").read_text())
    cfg = rec_config({**bc.pretrain, "text.model": a.text_model, "text.device": "auto", "text.batch_size": 1024,
                      "text.num_threads": a.threads, "text.cache_dir": a.text_cache, "train.max_eval_users": 500,
                      "train.select_on": "valid"})  # no selection here: every epoch is reported
    t0 = time.perf_counter()
    evals = zero_shot_sets(a.tenants, index, cfg, device)
    log(f"held-out sets ready in {time.perf_counter() - t0:.0f} s on {device}")
    rows: list[dict[str, Any]] = []

    def save() -> None:
        write_results(a.name, protocol(a, device, index), rows, COLUMNS, results_dir=a.results_dir)
        plot(rows, a.results_dir / f"{a.name}.png")

    for users, d_model in a.runs:
        run_setting(users, d_model, a.tenants, index, cfg, evals, a.epochs, a.batch_size, a.lr, device, rows, save)
    return 0


def protocol(a: argparse.Namespace, device: Any, index: dict) -> dict[str, Any]:
    return {"question": "does zero-shot transfer to unseen catalogs improve with more pretraining users per source?",
            "sources": index["sources"], "holdout": index["holdout"], "targets": index["targets"],
            "config": Path(a.config).name, "runs (users per source x d_model)": [f"{u}x{d}" for u, d in a.runs], "epochs": a.epochs, "batch_size": a.batch_size, "lr": a.lr,
            "device": str(device), "eval": f"zero-shot test NDCG@10 / HR@10, full ranking, the few-shot benchmark's {NUM_EVAL_USERS} "
            "held-out users (k_shot_split seed 0); epoch -1 = the untrained init"}


if __name__ == "__main__":
    raise SystemExit(main())
