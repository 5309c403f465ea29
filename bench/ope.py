"""Off-policy evaluation on real data: estimate greedy's value from an epsilon-greedy log.

Protocol (per dataset): real users replayed in time order. At each step the service's zero-shot
title prior (the user vector is the mean MiniLM vector of the last 20 history items; scores are
cosine similarities; history excluded) proposes its top-50, and the service's own ``epsilon``
policy (:func:`rec.serving.policies.choose`, epsilon 0.2) shows 10 of them with per-position
propensities. The user "clicks" when the true next item is shown (position-independent clicks).
From that log, IPS, SNIPS and DR (:func:`rec.feedback.ope.estimate_slates`) estimate the value of
the greedy policy (expected clicks per slate = HR@10). ``replay_value`` is greedy's HR@10 on the
very same steps, computed directly. DR's reward model is the per-position click rate of the
greedy item, cross-fitted on the other half of the log. Targets (issue 18): SNIPS and DR within
10 % of the replayed value at >= 10,000 logged events.

    python -m bench.ope                     # ml-100k, office, scientific; 1k..20k events
    python -m bench.ope --quick             # ml-100k, 2,000 events (CI smoke)
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench._results import RESULTS, log, write_results

COLUMNS = ["dataset", "estimator", "logged_events", "estimate", "ci_low", "ci_high", "replay_value", "rel_error", "ess"]
DATASETS = {
    "ml-100k": {"format": "movielens-100k", "path": "ml-100k"},
    "office": {"format": "lcrec", "path": "amazon2014-office-lcrec"},
    "scientific": {"format": "unisrec", "path": "amazon-scientific-unisrec"},
}
SLATE, CANDIDATES, WINDOW = 10, 50, 20


def load_dataset(name: str, max_users: int, text_cache: Path) -> tuple[Any, np.ndarray]:
    """The dataset as a Tenant and its items' L2-normalised MiniLM vectors."""
    from rec.config import TenantSource, TextConfig
    from rec.data.loaders import load_source
    from rec.data.paths import data_root, resolve_source
    from rec.text import encode_items

    src = TenantSource(**DATASETS[name], name=name, max_users=max_users)
    tenant = load_source(resolve_source(src, data_root(None, os.environ.get("REC_DATA_ROOT"))))
    emb = encode_items(list(tenant.items.text), TextConfig(cache_dir=str(text_cache)))
    emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-9)
    return tenant, emb.astype(np.float32)


def replay_log(tenant: Any, emb: np.ndarray, max_events: int, epsilon: float, seed: int) -> dict[str, np.ndarray]:
    """Replay users through the title prior + epsilon policy; ``(n, SLATE)`` arrays of the log."""
    from rec.serving.policies import PolicyConfig, choose

    rng = np.random.default_rng(seed)
    cfg = PolicyConfig("epsilon", epsilon=epsilon)
    rewards, logging_p, target_p, greedy_hit = [], [], [], []
    for u in rng.permutation(tenant.num_users):
        seq = tenant.sequence(int(u))
        for t in range(1, len(seq)):
            hist, target = seq[max(0, t - WINDOW):t], int(seq[t])
            scores = emb @ emb[hist].mean(axis=0)
            scores[seq[:t]] = -np.inf
            cand = np.argpartition(-scores, CANDIDATES)[:CANDIDATES]
            cand = cand[np.argsort(-scores[cand], kind="stable")]
            slate = choose(cand, scores[cand], None, SLATE, cfg, None, rng)
            rewards.append(slate.rows == target)
            logging_p.append(slate.propensities)
            target_p.append(slate.rows == cand[:SLATE])  # greedy shows candidate j at position j
            greedy_hit.append(target in cand[:SLATE])
            if len(rewards) >= max_events:
                return _arrays(rewards, logging_p, target_p, greedy_hit)
    return _arrays(rewards, logging_p, target_p, greedy_hit)


def _arrays(*cols: list) -> dict[str, np.ndarray]:
    names = ("rewards", "logging_p", "target_p", "greedy_hit")
    return {n: np.asarray(c, np.float64) for n, c in zip(names, cols, strict=True)}


def cross_fitted_reward_model(lg: dict[str, np.ndarray], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """DR's reward model: click rate of the greedy item per position, fitted on the other half."""
    n = len(lg["rewards"])
    half = np.random.default_rng(seed).permutation(n) < n // 2
    r_hat = np.zeros_like(lg["rewards"])
    for fit, apply in ((half, ~half), (~half, half)):
        is_greedy = lg["target_p"][fit] == 1
        ctr = np.array([lg["rewards"][fit][:, j][is_greedy[:, j]].mean() if is_greedy[:, j].any() else 0.0
                        for j in range(SLATE)])
        r_hat[apply] = np.tile(ctr, (int(apply.sum()), 1))
    return r_hat * lg["target_p"], r_hat  # (model's value of the logged item, of greedy's item)


def evaluate(name: str, lg: dict[str, np.ndarray], sizes: list[int], seed: int) -> list[dict[str, Any]]:
    from rec.feedback.ope import estimate_slates

    rows = []
    for n in [s for s in sizes if s <= len(lg["rewards"])]:
        sub = {k: v[:n] for k, v in lg.items()}
        replay = float(sub["greedy_hit"].mean())
        r_logged, r_greedy = cross_fitted_reward_model(sub, seed)
        for est_name in ("ips", "snips", "dr"):
            extra = (r_logged, r_greedy) if est_name == "dr" else (None, None)
            est = estimate_slates(est_name, sub["rewards"], sub["logging_p"], sub["target_p"], *extra)
            rows.append({"dataset": name, "estimator": est_name, "logged_events": n, "estimate": est.value,
                         "ci_low": est.ci_low, "ci_high": est.ci_high, "replay_value": replay,
                         "rel_error": abs(est.value - replay) / replay if replay else float("nan"),
                         "ess": round(est.effective_sample_size, 1)})
        log(f"{name} n={n}: replay {replay:.4f}, " + ", ".join(f"{r['estimator']} {r['estimate']:.4f}" for r in rows[-3:]))
    return rows


def target_checks(rows: list[dict[str, Any]]) -> str:
    lines = ["## Targets", ""]
    for r in rows:
        if r["estimator"] in ("snips", "dr") and r["logged_events"] >= 10_000:
            ok = r["rel_error"] <= 0.10
            lines.append(f"- {'met' if ok else 'MISSED'}: {r['dataset']} {r['estimator']} at {r['logged_events']} events: "
                         f"rel_error {r['rel_error']:.3f} (<= 0.10)")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["dataset"] for r in rows))
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        for est in ("ips", "snips", "dr"):
            rr = [r for r in rows if r["dataset"] == name and r["estimator"] == est]
            x = [r["logged_events"] for r in rr]
            ax.errorbar(x, [r["estimate"] for r in rr], yerr=[[r["estimate"] - r["ci_low"] for r in rr],
                        [r["ci_high"] - r["estimate"] for r in rr]], label=est, capsize=3, marker="o")
        rr = [r for r in rows if r["dataset"] == name and r["estimator"] == "ips"]
        ax.plot([r["logged_events"] for r in rr], [r["replay_value"] for r in rr], "k--", label="replayed greedy")
        ax.set_xscale("log")
        ax.set_title(name)
        ax.set_xlabel("logged slates")
        ax.set_ylabel("greedy HR@10")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("--sizes", nargs="+", type=int, default=[1000, 2000, 5000, 10000, 20000])
    p.add_argument("--epsilon", type=float, default=0.2)
    p.add_argument("--max-users", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--text-cache", type=Path, default=Path(".cache/rec-text"))
    p.add_argument("--quick", action="store_true", help="ml-100k, 2,000 events, results under /tmp")
    p.add_argument("--out", type=Path, default=None, help="results folder (default bench/results; --quick: $TMPDIR)")
    a = p.parse_args(argv)
    if a.quick:
        a.datasets, a.sizes = ["ml-100k"], [500, 2000]
    a.out = a.out or (Path(os.environ.get("TMPDIR", "/tmp")) if a.quick else RESULTS)
    t0 = time.time()
    rows: list[dict[str, Any]] = []
    for name in a.datasets:
        tenant, emb = load_dataset(name, a.max_users, a.text_cache)
        lg = replay_log(tenant, emb, max(a.sizes), a.epsilon, a.seed)
        log(f"{name}: {len(lg['rewards'])} logged slates from {tenant.num_users} users")
        rows += evaluate(name, lg, a.sizes, a.seed)
    protocol = {"what": "greedy's HR@10 estimated from an epsilon-greedy log vs replayed directly (module doc)",
                "epsilon": a.epsilon, "slate": SLATE, "candidates": CANDIDATES, "history_window": WINDOW,
                "max_users": a.max_users, "seed": a.seed, "wall_s": round(time.time() - t0, 1)}
    a.out.mkdir(parents=True, exist_ok=True)
    write_results("ope", protocol, rows, COLUMNS, notes=target_checks(rows), results_dir=a.out)
    plot(rows, a.out / "ope.png")
    log(f"wrote {a.out / 'ope.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
