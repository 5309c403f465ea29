"""Which pretraining objective and mixture transfer zero-shot to unseen catalogs? (issue 17, item 3)

Side by side on the few-shot benchmark's 2-core pretraining data (``bench/fewshot-2core.yaml``:
3,000-user samples, text-only backbone, d_model 64, dropout 0), each ``--run``:

* ``ce``: the benchmark's objective: full-softmax CE over each row's own catalog, natural mixture,
  batch 128, lr 1e-3.
* ``infonce``: mixed-domain in-batch InfoNCE (``model.loss=infonce``, ``rec.training.infonce``):
  candidates = the batch's target items from every source, cosine / 0.07, duplicates merged;
  domain-balanced batches (``train.mixture=balanced``, equal shares); batch 512, lr 1e-3.
* ``infonce-kv``: ``infonce`` with ``text.item_format=kv`` ("title: ...; brand: ...; category: ...").
* ``infonce-textlora``: ``infonce`` with LoRA on MiniLM's top ``--text-lora-layers`` layers trained by
  the same loss (``rec.training.text_tower``; issue 17 item 4): each batch's items are re-encoded
  from cached token states (``runs/transfer-probe/token-states``, built once), the text-preserving
  term ``--preserve`` keeps them near the frozen vectors, LoRA learns at ``--text-lora-lr``;
  ``--freeze-backbone`` trains LoRA alone on the untrained init's sequence model. Every catalog
  is ranked with its re-encoded text; the selected epoch's merged encoder is saved as a model
  folder (``tuned-encoder-<run>``) that ``text.model`` loads.

After every epoch, and once before the first (epoch -1 = the untrained init), the model ranks
zero-shot (full ranking, 500 held-out users, ``k_shot_split`` seed 0, as the few-shot benchmark
and ``bench/transfer_scale.py``): the **selection catalogs** (``game2018`` and ``health``; health is
moved out of the sources so that two Amazon catalogs that are neither sources nor targets choose
the checkpoint) and the six few-shot **targets**. Each run selects its epoch on the mean selection
NDCG@10 (init included), as ``train.select_on=holdout`` does with several held-out tenants.
``vs_init`` columns divide by the untrained init with the loaders' joined text (today's reference).

    python -m bench.transfer_objective --prepare              # load + cache the tenants (npz) once
    python -m bench.transfer_objective --run ce --epochs 4    # one run: rows to runs/transfer-probe/
    python -m bench.transfer_objective --run infonce-textlora --lr 1e-4 --text-lora-layers 1 --epochs 3
    python -m bench.transfer_objective --report               # bench/results/transfer_objective.{json,md,png}
"""

from __future__ import annotations

import argparse
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
from bench.transfer_scale import read_tenant, save_tenant  # noqa: E402
from rec.config import DATA_ROOT_ENV, ConfigError, apply_overrides, config_from_dict  # noqa: E402

PROBE_DIR = ROOT / "runs" / "transfer-probe"
SELECTION = ("game2018", "health")  # health: moved from the sources to the selection catalogs
AMAZON_TARGETS = ("office", "scientific", "toy", "beauty")  # T2 of issue 17 averages these
NUM_EVAL_USERS = 500
RUNS: dict[str, dict[str, Any]] = {
    "ce": {"model.loss": "ce", "train.mixture": "natural", "train.batch_size": 128, "text.item_format": "joined"},
    "infonce": {"model.loss": "infonce", "train.mixture": "balanced", "train.batch_size": 512, "text.item_format": "joined"},
    "infonce-kv": {"model.loss": "infonce", "train.mixture": "balanced", "train.batch_size": 512, "text.item_format": "kv"},
    "ce-balanced": {"model.loss": "ce", "train.mixture": "balanced", "train.batch_size": 128, "text.item_format": "joined"},
    "infonce-textlora": {"model.loss": "infonce", "train.mixture": "balanced", "train.batch_size": 512, "text.item_format": "joined"},
}


# --- data -----------------------------------------------------------------------------------------
def prepare(bc: Any, folder: Path) -> None:
    """Sources (3,000-user samples, touched catalogs), selection catalogs and targets as npz."""
    from rec.data.loaders import load_source

    folder.mkdir(parents=True, exist_ok=True)
    sel = [s for s in [*bc.holdout, *bc.sources] if s.name in SELECTION]
    for role, specs in (("source", [s for s in bc.sources if s.name not in SELECTION]), ("selection", sel), ("target", bc.targets)):
        for s in specs:
            t = load_source(s, min_seq_len=3)
            save_tenant(compact_catalog(t) if role == "source" else t, folder)
            log(f"{role} {t.name}: {t.num_users} users, {t.num_items} items")
    (folder / "index.json").write_text(json.dumps({"sources": [s.name for s in bc.sources if s.name not in SELECTION],
                                                    "selection": list(SELECTION), "targets": [s.name for s in bc.targets]}))


def eval_sets(folder: Path, index: dict, text_cfg: Any) -> list[tuple[str, str, Any, Any]]:
    """(name, role, TenantCorpus with the benchmark's 500 held-out users, text embeddings)."""
    import torch

    from rec.adaptation.adapt import fewshot_corpus
    from rec.data.splits import k_shot_split
    from rec.text import encode_items

    out = []
    for role, names in (("selection", index["selection"]), ("target", index["targets"])):
        for name in names:
            t = read_tenant(folder, name)
            emb = encode_items(list(t.items.text), text_cfg)
            out.append((name, role, fewshot_corpus(k_shot_split(t, 1, None, 0, NUM_EVAL_USERS), emb, 50), torch.from_numpy(emb)))
    return out


# --- one run ---------------------------------------------------------------------------------------
def run(bc: Any, name: str, folder: Path, a: argparse.Namespace) -> None:
    """Pretrain one setting; append one JSON line per epoch (init included) to ``PROBE_DIR/rows-<name><tag>.jsonl``."""
    import torch

    from rec.models.backbone import build_backbone
    from rec.training.corpus import build_corpus
    from rec.training.loop import CorpusLoss, train_epoch
    from rec.training.mixture import epoch_rows

    torch.set_num_threads(a.threads)
    cfg = config_from_dict(apply_overrides(rec_config(
        {**bc.pretrain, **RUNS[name], "train.lr": a.lr, "train.infonce_temperature": a.temperature,
         "text.cache_dir": str(ROOT / ".cache" / "rec-text"), "text.num_threads": a.threads, "train.select_on": "valid",
         **text_lora_settings(a)}).model_dump(mode="json"), list(a.set)))
    index = json.loads((folder / "index.json").read_text())
    corpus = build_corpus(cfg, tenants=[read_tenant(folder, n) for n in index["sources"]], holdout=[])
    evals = eval_sets(folder, index, cfg.text)
    torch.manual_seed(cfg.train.seed)
    model = build_backbone(cfg.model)
    lora, tower = None, None
    embs: list = [torch.from_numpy(t.text_emb) for t in corpus.tenants]
    if a.text_lora_layers:
        lora, evals = text_tower_run(cfg, corpus, folder, evals)
        tower, embs = lora.tower, lora.texts
    opt = run_optimizer(model, lora, a)
    # the tower is not registered in CorpusLoss here, so its gradients are not clipped with the backbone's
    # (rec pretrain registers it); the committed rows were measured this way
    loss_model = CorpusLoss(model, cfg.model.loss, cfg.model.num_negatives, cfg.train.infonce_temperature)
    regularizer = None
    if tower is not None:
        from rec.training.text_tower import preserve_regularizer

        regularizer = preserve_regularizer(embs, cfg.train.text_lora.preserve_weight)
    out = PROBE_DIR / f"rows-{name}{a.tag}.jsonl"
    out.unlink(missing_ok=True)
    log(f"{name}{a.tag}: {[(t.name, len(t.train_inputs), t.num_items) for t in corpus.tenants]}")
    start, best = time.perf_counter(), (-1.0, None, -1)
    for epoch in range(-1, a.epochs):
        t0 = time.perf_counter()
        loss = float("nan")
        if epoch >= 0:
            rows = epoch_rows(corpus, cfg.train, epoch)
            loss = train_epoch(loss_model, opt, corpus, rows, embs, cfg.train.batch_size, cfg.train.grad_clip, regularizer)
        row = {"run": name + a.tag, "lr": cfg.train.lr, "objective": cfg.model.loss, "mixture": cfg.train.mixture,
               "text_format": cfg.text.item_format, "batch_size": cfg.train.batch_size, "epoch": epoch, "train_loss": loss,
               "epoch_s": round(time.perf_counter() - t0, 1), **text_lora_columns(a), "overrides": " ".join(a.set)}
        row.update(score_catalogs(model, evals))
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        log(f"{name}{a.tag} epoch {epoch}: loss {loss:.3f} ({row['epoch_s']:.0f} s) | " + "  ".join(f"{ds} {row[ds]:.4f}" for ds, *_ in evals))
        sel = float(np.mean([row[s] for s in index["selection"]]))
        if tower is not None and sel > best[0]:
            best = (sel, None if epoch < 0 else {k: v.detach().clone() for k, v in tower.lora_tensors().items()}, epoch)
        if (time.perf_counter() - start) / 60 > a.max_minutes:
            log(f"{name}: stopped after epoch {epoch}, past --max-minutes {a.max_minutes}")
            break
    if tower is not None and best[1] is not None:
        save_selected_encoder(cfg, tower, best, name + a.tag)


def score_catalogs(model: Any, evals: list) -> dict[str, float]:
    """Zero-shot test NDCG@10 per eval catalog (a TowerText's catalog re-encoded first) and
    ``text_shift``, the mean ``1 - cos`` of the re-encoded vectors to the frozen ones (0 without a tower)."""
    from rec.training.loop import evaluate_tenant
    from rec.training.text_tower import TowerText

    out, shifts = {}, []
    for ds, _, tc, emb in evals:
        text = emb.encode_all() if isinstance(emb, TowerText) else emb
        if isinstance(emb, TowerText):
            shifts.append(float((1 - (text * emb.states.frozen).sum(-1)).mean()))
        out[ds] = evaluate_tenant(model, tc, text, "test", ks=[10])["ndcg@10"]
    return {**out, "text_shift": float(np.mean(shifts)) if shifts else 0.0}


def text_lora_settings(a: argparse.Namespace) -> dict[str, Any]:
    """``train.text_lora.*`` of the run: the same section ``rec pretrain`` reads (empty: the frozen encoder)."""
    if not a.text_lora_layers:
        return {}
    return {"train.text_lora.layers": a.text_lora_layers, "train.text_lora.rank": a.text_lora_rank,
            "train.text_lora.lr": a.text_lora_lr, "train.text_lora.preserve_weight": a.preserve}


def text_lora_columns(a: argparse.Namespace) -> dict[str, Any]:
    """The LoRA settings of a row (0 layers: the frozen encoder)."""
    if not a.text_lora_layers:
        return {"text_lora_layers": 0}
    return {"text_lora_layers": a.text_lora_layers, "text_lora_rank": a.text_lora_rank, "text_lora_lr": a.text_lora_lr,
            "preserve": a.preserve, "backbone": "frozen" if a.freeze_backbone else "trained"}


def run_optimizer(model: Any, lora: Any, a: argparse.Namespace) -> Any:
    """AdamW with ``rec pretrain``'s groups (backbone at ``--lr``, LoRA at ``--text-lora-lr``); with
    ``--freeze-backbone`` the backbone's group is dropped and its weights frozen."""
    from rec.training.loop import make_optimizer

    if lora is None:
        return make_optimizer(model.parameters(), a.lr)
    groups = lora.param_groups(model, a.lr, a.text_lora_lr)
    if a.freeze_backbone:
        for p in model.parameters():
            p.requires_grad_(False)
        groups = groups[1:]
    return make_optimizer(groups, a.lr)


def text_tower_run(cfg: Any, corpus: Any, folder: Path, evals: list) -> tuple[Any, list]:
    """``rec pretrain``'s text tower over the sources (``build_text_lora``) and the eval sets with a
    :class:`TowerText` each; token states cached under ``runs/transfer-probe/token-states/<catalog>``."""
    from rec.text.item_format import format_item_texts
    from rec.training.pretrain_text_lora import build_text_lora, tower_text

    root = PROBE_DIR / "token-states"
    t0 = time.perf_counter()
    run = build_text_lora(cfg, corpus, root)
    log(f"token states of {len(run.texts)} sources ready in {time.perf_counter() - t0:.0f} s")

    def texts_of(name: str) -> Any:
        t0 = time.perf_counter()
        text = tower_text(run, name, format_item_texts(list(read_tenant(folder, name).items.text), cfg.text.item_format), root)
        st = text.states
        log(f"token states {name}: {st.num_items} items, {st.states.shape[0]} tokens "
            f"({'built' if st.build_s else 'read'} in {time.perf_counter() - t0:.0f} s)")
        return text

    return run, [(ds, role, tc, texts_of(ds)) for ds, role, tc, _ in evals]


def save_selected_encoder(cfg: Any, tower: Any, best: tuple, run_name: str) -> None:
    """Write the selected epoch's merged encoder as a model folder (``text.model`` loads it)."""
    from rec.text import get_encoder
    from rec.text.lora_tower import save_tuned_encoder

    tower.load_lora(best[1])
    dest = save_tuned_encoder(get_encoder(cfg.text), tower, PROBE_DIR / f"tuned-encoder-{run_name}",
                              {"selected_epoch": best[2], "selection_mean_ndcg@10": best[0]})
    log(f"{run_name}: merged encoder of epoch {best[2]} saved to {dest}")


# --- report ----------------------------------------------------------------------------------------
def with_ratios(rows: list[dict[str, Any]], index: dict) -> list[dict[str, Any]]:
    """Add the selection mean, each target's ratio to the reference init (joined text, epoch -1 of
    the first run that has it) and the Amazon-4 mean ratio; mark each run's selected epoch."""
    ref = next(r for r in rows if r["epoch"] == -1 and r["text_format"] == "joined")
    out = []
    for r in rows:
        r = {"lr": 1e-3, "text_lora_layers": 0, "overrides": "", **r}  # rows recorded before these columns existed ran at the defaults
        r["selection_mean"] = float(np.mean([r[s] for s in index["selection"]]))
        for t in index["targets"]:
            r[f"{t}_vs_init"] = r[t] / ref[t] if ref[t] else None
        r["amazon4_vs_init"] = float(np.mean([r[f"{t}_vs_init"] for t in AMAZON_TARGETS]))
        out.append(r)
    for name in dict.fromkeys(r["run"] for r in out):
        mine = [r for r in out if r["run"] == name]
        best = max(mine, key=lambda r: r["selection_mean"])  # first best: the init wins ties
        for r in mine:
            r["selected"] = r is best
    return out


def plot(rows: list[dict[str, Any]], index: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = ["selection_mean", "amazon4_vs_init", *[f"{t}_vs_init" for t in index["targets"]]]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.9 * len(panels), 3.0))
    for ax, col in zip(axes, panels):
        for name in dict.fromkeys(r["run"] for r in rows):
            pts = [(r["epoch"], r[col]) for r in rows if r["run"] == name]
            ax.plot(*zip(*pts), marker="o", ms=3, label=name)
        if col.endswith("_vs_init"):
            ax.axhline(1.0, color="grey", lw=0.8, ls="--")
        ax.set_title(col.replace("_vs_init", " / init"), fontsize=9)
        ax.set_xlabel("epoch (-1 = init)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def report(folder: Path, results_dir: Path, name: str, args: argparse.Namespace) -> None:
    index = json.loads((folder / "index.json").read_text())
    raw = [json.loads(line) for p in sorted(PROBE_DIR.glob("rows-*.jsonl")) for line in p.read_text().splitlines() if line.strip()]
    rows = with_ratios(raw, index)
    cols = ["run", "lr", "objective", "mixture", "text_format", "batch_size", "text_lora_layers", "text_lora_lr", "preserve",
            "backbone", "text_shift", "overrides", "epoch", "selected", "train_loss", "epoch_s",
            *index["selection"], "selection_mean", *index["targets"], *[f"{t}_vs_init" for t in index["targets"]], "amazon4_vs_init"]
    protocol = {
        "question": "which pretraining objective / mixture / item text transfers zero-shot to unseen catalogs (issue 17 item 3)?",
        "sources": index["sources"], "selection": index["selection"], "targets": index["targets"],
        "data": "bench/fewshot-2core.yaml sources, 3,000 users each (seeded sample, touched catalogs); health moved to selection",
        "model": "text-only backbone, d_model 64, 2 layers, dropout 0 (the few-shot pretrain overrides)",
        "runs": {k: RUNS[k] for k in dict.fromkeys(max((k for k in RUNS if r["run"].startswith(k)), key=len) for r in rows)},
        "infonce_temperature": args.temperature,
        "eval": f"zero-shot test NDCG@10, full ranking, {NUM_EVAL_USERS} held-out users per catalog (k_shot_split seed 0); "
                "epoch -1 = the untrained init; *_vs_init = ndcg / the joined-text untrained init; selected = best selection_mean",
        "text_lora": "text_lora_layers > 0: LoRA (rank text_lora_rank, alpha 2x rank, q/k/v + dense) on MiniLM's top layers, "
                     "trained by the same InfoNCE through rec.training.text_tower at text_lora_lr, plus preserve * mean(1 - cos(new, "
                     "frozen)); backbone = trained (at lr) or frozen at the untrained init; every catalog ranked with its re-encoded "
                     "text; text_shift = mean(1 - cos) of the eval catalogs' vectors to the frozen ones",
        "machine_note": "shared 2-core CPU machine. Rows of 2026-12-04 (ce, infonce, infonce-kv, infonce-lr1e-4): load average "
                        "35-67, ~2 CPU-seconds per minute per process, 1-4 epochs per run. Rows of 2026-12-05 (infonce-textlora*, "
                        "infonce-lr1e-4-3ep): load 3-5 (this probe plus a nice-19 training job), 3 epochs each",
    }
    write_results(name, protocol, rows, cols, results_dir=results_dir)
    plot(rows, index, results_dir / f"{name}.png")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(ROOT / "bench" / "fewshot-2core.yaml"))
    ap.add_argument("--tenants", type=Path, default=PROBE_DIR / "tenants")
    ap.add_argument("--prepare", action="store_true", help="load the tenants from the data root and cache them")
    ap.add_argument("--run", choices=sorted(RUNS), help="pretrain one setting and record its epochs")
    ap.add_argument("--report", action="store_true", help="write bench/results/<name>.{json,md,png} from the recorded runs")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--temperature", type=float, default=0.07)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tag", default="", help="suffix of the run's name (e.g. -lr1e-4 for a variant of --run)")
    ap.add_argument("--max-minutes", type=float, default=15.0, help="stop after the epoch that passes this")
    ap.add_argument("--text-lora-layers", type=int, default=0, help="LoRA on this many top MiniLM layers (0: frozen text)")
    ap.add_argument("--text-lora-rank", type=int, default=8)
    ap.add_argument("--text-lora-lr", type=float, default=1e-3)
    ap.add_argument("--preserve", type=float, default=1.0, help="weight of the text-preserving term mean(1 - cos(new, frozen))")
    ap.add_argument("--freeze-backbone", action="store_true", help="train only the text LoRA on the untrained sequence model")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="extra dotted config override on top of the run's setting (repeatable), e.g. model.adaptor_init=identity")
    ap.add_argument("--results-dir", type=Path, default=RESULTS)
    ap.add_argument("--name", default="transfer_objective")
    a = ap.parse_args(argv)
    try:
        return _main(a, ap)
    except ConfigError as e:  # a bad --set or bench config: one line saying what to fix
        raise SystemExit(f"transfer_objective: {e}") from None


def _main(a: argparse.Namespace, ap: argparse.ArgumentParser) -> int:
    bc = load_bench_config(a.config)
    PROBE_DIR.mkdir(parents=True, exist_ok=True)
    if a.prepare:
        prepare(with_data_root(bc, os.environ.get(DATA_ROOT_ENV)), a.tenants)
    if a.run:
        run(bc, a.run, a.tenants, a)
    if a.report:
        report(a.tenants, a.results_dir, a.name, a)
    if not (a.prepare or a.run or a.report):
        ap.error("pass --prepare, --run NAME and/or --report")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
