"""What the few-shot benchmark's non-adaptation rows compute: popularity, training from scratch, the
text-prior fusion, and the size of a from-scratch model (``bench/fewshot.py`` runs them per row)."""

from __future__ import annotations

import os
import tempfile
from typing import Any

import numpy as np

from bench.fewshot_config import ScratchSettings
from rec.metrics import popularity_metrics

__all__ = ["TEXT_PRIOR_WEIGHTS", "popularity", "state_bytes", "text_prior_fusion", "train_from_scratch"]


def popularity(split, n_items: int, seed: int) -> dict[str, float]:  # noqa: ANN001 - KShotSplit
    """Counts over the K users' sequences; ties broken by a seeded random order (not optimistically)."""
    counts = np.bincount(np.concatenate(split.train.sequences()), minlength=n_items)
    _, _, targets = split.eval_examples("test")
    return popularity_metrics(counts, targets, ks=[10], tie_seed=seed)


def train_from_scratch(model, tc, emb, s: ScratchSettings, seed: int) -> tuple[dict, dict, int]:  # noqa: ANN001
    """The library's tenant loop (AdamW, early stopping on validation NDCG@10) for a fresh model."""
    from rec.training.loop import evaluate_tenant
    from rec.training.tenant_fit import FitSettings, fit_tenant

    settings = FitSettings(epochs=s.epochs, lr=s.lr, batch_size=s.batch_size, patience=s.patience, seed=seed,
                           weight_decay=s.weight_decay)
    fit = fit_tenant(model, model, tc, emb, list(model.parameters()), settings)
    return fit.valid, evaluate_tenant(model, tc, emb, "test", [10]), fit.epochs


#: weights of the text-prior term tried on the validation users (0 = the model alone)
TEXT_PRIOR_WEIGHTS = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0)


def text_prior_fusion(model, tc, text_emb: np.ndarray) -> tuple[dict[str, float], dict[str, Any]]:  # noqa: ANN001
    """Test metrics of ``model``'s scores plus ``w * mean(t_h) . t_i`` (raw MiniLM vectors of the
    history ``h`` and item ``i``), with ``w`` the best of TEXT_PRIOR_WEIGHTS on the validation users.

    Issue 17 item 2, score fusion: a fixed-weight title-similarity term any trained model can fall
    back to. Measured here, at scoring time, before it is built into serving.
    """
    import torch

    from rec.adaptation.prepare import scoring_backbone
    from rec.metrics import metrics_from_ranks, rank_of_target
    from rec.training.loop import tenant_scores

    bb = scoring_backbone(model).eval()
    raw = torch.from_numpy(np.require(text_emb, np.float32, ["C", "W"]))

    def ranks(rows) -> dict[float, np.ndarray]:  # noqa: ANN001 - EvalRows
        out: dict[float, list[np.ndarray]] = {w: [] for w in TEXT_PRIOR_WEIGHTS}
        with torch.no_grad():
            for sl, scores in tenant_scores(bb, tc, raw, rows.histories, 256):
                hist = torch.from_numpy(np.array(rows.histories[sl]))
                keep = (hist >= 0).float()[..., None]  # (b, T, 1)
                mean = (raw[hist.clamp(min=0)] * keep).sum(1) / keep.sum(1).clamp(min=1.0)  # (b, text_dim)
                prior = mean @ raw.T  # (b, N)
                for w in TEXT_PRIOR_WEIGHTS:
                    out[w].append(rank_of_target((scores + w * prior).numpy(), rows.targets[sl]))
        return {w: np.concatenate(v) for w, v in out.items()}

    valid = {w: metrics_from_ranks(r, ks=[10], num_items=tc.num_items) for w, r in ranks(tc.valid).items()}
    best = max(TEXT_PRIOR_WEIGHTS, key=lambda w: (valid[w]["ndcg@10"], -w))
    test = metrics_from_ranks(ranks(tc.test)[best], ks=[10], num_items=tc.num_items)
    return test, {"text_prior_weight": best, "text_prior_valid": {str(w): round(m["ndcg@10"], 5) for w, m in valid.items()}}


def state_bytes(model) -> int:  # noqa: ANN001
    """Size of the model's weights as one safetensors file (a from-scratch model is its own adapter)."""
    from safetensors.torch import save_file

    with tempfile.TemporaryDirectory() as tmp:
        save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, f"{tmp}/m.safetensors")
        return os.path.getsize(f"{tmp}/m.safetensors")
