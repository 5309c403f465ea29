"""How much can live feedback add to the zero-shot model at the closed loop's event volume? (issue 18 §6)

The closed-loop benchmark (``bench/closed_loop.py``) asks for the best policy's last-window HR@10 to
reach 1.3x the static zero-shot model's. This measures, offline on the **same replay** (same users,
same time order, same 4,000 events per target) and the same backbone, what the online signals a
service can learn from that replay are worth, and an upper bound for any policy that blends them
with the model:

    static        the zero-shot backbone's top 10 (history excluded, as the API answers)
    popularity    top 10 by the counts of everything observed before the step (each ask's history)
    transitions   top 10 successors of the user's last item, counted over every consecutive pair
                  observed before the step (an online item-to-item prior)
    union-bound   share of steps whose true item is in static's top 10 OR popularity's OR
                  transitions': no list of 10 drawn from these candidates (any blend, any weights,
                  any bandit over them) hits more often
    blend-pop     what serving's online prior does: standardised model scores + w_p * log1p(counts),
                  w_p tuned online on the steps before by serving's own PriorWeightTuner
    blend-pop+transitions
                  the same + w_t * log1p(successor counts of the user's last item), (w_p, w_t) tuned
                  online over the grid's pairs: what an online item-to-item prior would add

Rows: ``dataset, window, events, signal, hr@10, ratio_to_static``, per window of 1,000 events. The
static row reproduces the closed-loop benchmark's static arm offline (a check that the replay is
the same). What the union bound does not cover: re-adaptation that learns new item vectors from
the events (bounded instead by how many events a round has: ~2,000).

    python -m bench.closed_loop_headroom                  # six targets, ~3 min on 2 cores
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._results import RESULTS, log, write_results  # noqa: E402

COLUMNS = ["dataset", "window", "events", "signal", "hr@10", "ratio_to_static"]
SIGNALS = ("static", "popularity", "transitions", "union-bound", "blend-pop", "blend-pop+transitions")
TARGETS = ("ml-100k", "office", "steam", "scientific", "toy", "beauty")


def model_scores(backbone, text_emb: np.ndarray, histories: list[list[int]], max_len: int):  # noqa: ANN001, ANN201
    """Yield ``(step index, (N,) zero-shot scores)`` in step order, the step's history set to -inf
    (the API excludes it by default)."""
    import torch

    from rec.data.padding import left_pad
    from rec.training.loop import _gather

    model = backbone.model.eval()
    with torch.no_grad():
        catalog = model.item_representations(torch.from_numpy(np.require(text_emb, np.float32, ["C"])))
        for start in range(0, len(histories), 256):
            chunk = histories[start:start + 256]
            hist, pad = _gather(catalog, torch.from_numpy(left_pad(chunk, max_len)))
            scores = model.scores(model.user_vector(hist, pad), catalog).numpy().astype(np.float64)
            for j, (row, h) in enumerate(zip(scores, chunk)):
                row[list(h)] = -np.inf
                yield start + j, row


def _top10(x: np.ndarray) -> np.ndarray:
    top = np.argpartition(-x, 10)[:10]
    return top[np.argsort(-x[top], kind="stable")]


def online_hits(histories: list[list[int]], targets: list[int], scores, num_items: int) -> dict[str, np.ndarray]:  # noqa: ANN001
    """Per step, whether each signal's top 10 holds the target, learning only from the steps before."""
    pop = np.zeros(num_items)
    trans: dict[int, collections.Counter] = collections.defaultdict(collections.Counter)
    from bench.closed_loop import TRANSITION_GRID, TUNED_GRID
    from rec.serving.prior_tuning import PriorWeightTuner, probe_top_rows

    pairs = [(wp, wt) for wt in TRANSITION_GRID for wp in TUNED_GRID]  # the closed loop's learning arms' grid
    pop_only = [i for i, (_, wt) in enumerate(pairs) if wt == 0.0]
    default = (0.5, 0.0)  # serving's prior_weight and transition_weight defaults
    # serving's own tuner (its defaults: 30 judged steps first, decay 0.995), judged on each step's hits
    tuners = {"blend-pop": PriorWeightTuner([pairs[i] for i in pop_only], default),
              "blend-pop+transitions": PriorWeightTuner(pairs, default)}
    hits = {s: np.zeros(len(targets), bool) for s in SIGNALS}
    for i, row in scores:
        h, t = histories[i], targets[i]
        if h:  # a user's steps come in order, so each ask reveals exactly one new interaction: its newest
            pop[h[-1]] += 1
            if len(h) > 1:
                trans[h[-2]][h[-1]] += 1
        finite = np.isfinite(row)
        z = np.where(finite, (row - row[finite].mean()) / (row[finite].std() or 1.0), -np.inf)
        lp = np.where(finite, np.log1p(pop), 0.0)
        succ = trans.get(h[-1]) if h else None
        lt = np.zeros(num_items)
        if succ:
            lt[list(succ)] = np.log1p(list(succ.values()))
        lt[~finite] = 0.0
        grid_hit = np.array([t in top for top in probe_top_rows(z, lp, pairs, 10, np.asarray(h, np.int64), lt)])  # serving's probe
        hits["static"][i] = t in _top10(z)
        hits["popularity"][i] = pop[t] > 0 and t in _top10(np.where(finite, pop, -np.inf))
        hits["transitions"][i] = lt[t] > 0 and t in _top10(np.where(finite, lt, -np.inf))
        hits["union-bound"][i] = hits["static"][i] or hits["popularity"][i] or hits["transitions"][i]
        for name, sub in (("blend-pop", pop_only), ("blend-pop+transitions", list(range(len(pairs))))):
            tuner = tuners[name]
            hits[name][i] = grid_hit[sub][tuner.entries.index(tuner.entry)]
            tuner.judge(sum(1 << j for j, hit in enumerate(grid_hit[sub]) if hit))
    return hits


def dataset_rows(name: str, backbone, bc, events: int, window: int) -> list[dict[str, Any]]:  # noqa: ANN001
    from bench.closed_loop import _replay_users, replay_steps
    from rec.data.loaders import load_source
    from rec.text import encode_items

    src = next(t for t in bc.targets if t.name == name)
    tenant = load_source(src.model_copy(update={"max_users": None}))
    users, _ = _replay_users(src, tenant, events)
    steps = replay_steps(tenant, users, events)
    index = {str(x): i for i, x in enumerate(tenant.items.ids)}
    histories = [[index[x] for x in s.history] for s in steps]
    targets = [index[s.target] for s in steps]
    scores = model_scores(backbone, encode_items(list(tenant.items.text), backbone.cfg.text), histories,
                          backbone.cfg.data.max_seq_len)
    hits = online_hits(histories, targets, scores, len(tenant.items.ids))
    rows = []
    for w in range(int(np.ceil(len(steps) / window))):
        sl = slice(w * window, min((w + 1) * window, len(steps)))
        base = float(hits["static"][sl].mean())
        for s in SIGNALS:
            hr = float(hits[s][sl].mean())
            rows.append({"dataset": name, "window": w + 1, "events": sl.stop, "signal": s, "hr@10": hr,
                         "ratio_to_static": hr / base if base else None})
    log(f"{name}: last window " + ", ".join(f"{r['signal']} {r['hr@10']:.3f}" for r in rows[-len(SIGNALS):]))
    return rows


def summary(rows: list[dict[str, Any]]) -> str:
    last = {}
    for r in rows:
        last[(r["dataset"], r["signal"])] = r
    lines = ["Last window, the union bound against the closed-loop target (best policy >= 1.3x static):", ""]
    for name in dict.fromkeys(r["dataset"] for r in rows):
        b = last[(name, "union-bound")]
        verdict = "reachable" if (b["ratio_to_static"] or 0) >= 1.3 else "**not reachable by blending these signals**"
        bp, bt = last[(name, "blend-pop")], last[(name, "blend-pop+transitions")]
        lines.append(f"- {name}: static {last[(name, 'static')]['hr@10']:.3f}, union bound {b['hr@10']:.3f} "
                     f"({b['ratio_to_static']:.2f}x): {verdict}; tuned blends: popularity {bp['hr@10']:.3f} "
                     f"({bp['ratio_to_static']:.2f}x), + transitions {bt['hr@10']:.3f} ({bt['ratio_to_static']:.2f}x)")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Last-window HR@10 per dataset and signal (bars), the 1.3x-static target as a tick per dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    last = {(r["dataset"], r["signal"]): r["hr@10"] for r in rows}
    names = list(dict.fromkeys(r["dataset"] for r in rows))
    fig, ax = plt.subplots(figsize=(1.6 * len(names) + 2, 3.6))
    width = 0.8 / len(SIGNALS)
    for j, sig in enumerate(SIGNALS):
        ax.bar(np.arange(len(names)) + j * width, [last[(n, sig)] for n in names], width, label=sig)
    ax.scatter(np.arange(len(names)) + 0.4 - width / 2, [1.3 * last[(n, "static")] for n in names], marker="_", s=400,
               color="k", label="1.3x static (target)")
    ax.set(xticks=np.arange(len(names)) + 0.4 - width / 2, xticklabels=names, ylabel="HR@10, last window")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", default=list(TARGETS))
    p.add_argument("--events", type=int, default=4000)
    p.add_argument("--window", type=int, default=1000)
    p.add_argument("--backbone", help="default: the few-shot benchmark's cached backbone (the closed loop's)")
    p.add_argument("--results-dir", type=Path, default=RESULTS)
    a = p.parse_args(argv)
    import torch

    from bench.federated import _backbone_dir
    from bench.fewshot_config import load_bench_config, with_data_root
    from rec.config import DATA_ROOT_ENV
    from rec.training.checkpoint import load_backbone

    torch.set_num_threads(2)
    import os

    bc = with_data_root(load_bench_config(str(ROOT / "bench" / "fewshot-2core.yaml")), os.environ.get(DATA_ROOT_ENV))
    ckpt = _backbone_dir(a.backbone)
    backbone = load_backbone(ckpt)
    rows = [r for name in a.datasets for r in dataset_rows(name, backbone, bc, a.events, a.window)]
    protocol = {"replay": "bench/closed_loop.py's: the same users, time order, 50-interaction cap and events per target",
                "backbone": f"{ckpt.relative_to(ROOT) if ckpt.is_relative_to(ROOT) else ckpt.name} (checksum {backbone.checksum})",
                "signals": {"static": "zero-shot top 10, history excluded", "popularity": "counts of every observed interaction",
                            "transitions": "successor counts of the user's last item over observed consecutive pairs",
                            "union-bound": "target in any of the three top-10 lists: bounds every blend of them",
                            "blend-pop": "z(model) + w_p log1p(counts), w_p in bench/closed_loop.py's TUNED_GRID tuned online by "
                                         "rec.serving.prior_tuning.PriorWeightTuner (its defaults; default weight 0.5)",
                            "blend-pop+transitions": "the same + w_t log1p(successor counts of the last item), (w_p, w_t) "
                                                     "over TUNED_GRID x TRANSITION_GRID tuned online (the learning arms' grid)"},
                "events": a.events, "window": a.window}
    write_results("closed_loop_headroom", protocol, rows, COLUMNS, notes=summary(rows), results_dir=a.results_dir)
    plot(rows, a.results_dir / "closed_loop_headroom.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
