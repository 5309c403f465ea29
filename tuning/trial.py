"""The Tune trainable of a sweep: one adaptation of one tenant with the trial's hyper-parameters.

Each trial is one :func:`rec.adaptation.adapt.adapt_tenant` call reporting validation NDCG@10 of
the tenant's held-out users after every epoch (``METRIC``, maximised); ASHA stops poor trials on
those reports.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ray import tune

from tuning.search_spaces import k_label, trial_config

__all__ = ["METRIC", "MODE", "Group", "adaptation_trial"]

METRIC, MODE = "ndcg@10", "max"
#: a sweep's unit of comparison: (tenant name, K users; None = all)
Group = tuple[str, "int | None"]


def adaptation_trial(config: dict[str, Any], *, backbone, tenants, text_embs, base_tree, spec, threads) -> None:  # noqa: ANN001
    """Tune function trainable: adapt one tenant with the trial's hyper-parameters.

    ``backbone`` (LoadedBackbone), ``tenants`` ({name: Tenant}) and ``text_embs`` ({name: (N, D)})
    arrive through ``tune.with_parameters`` (one object-store copy per node). Reports the
    validation metrics after every epoch (``epoch`` = epochs trained: ASHA's time attribute),
    tagged with the trial's tenant and K.
    """
    import torch

    from rec.adaptation.adapt import adapt_tenant

    # Ray reuses worker processes and sets OMP threads per task: pin torch explicitly.
    torch.set_num_threads(threads)
    cfg = trial_config(base_tree, spec, config, torch_threads=threads)
    name = config["tenant"]
    tags = {"tenant": name, "k": k_label(config["k_users"])}

    def report(epoch: int, val: dict[str, float]) -> None:
        tune.report({**val, "epoch": epoch + 1, **tags})

    text_emb = np.array(text_embs[name])  # object-store arrays are read-only; torch wants to own a writable one
    res = adapt_tenant(backbone, tenants[name], cfg.adapt, cfg.eval, text_emb=text_emb, on_epoch=report)
    # A closing report at the same epoch count: the metrics of the weights adapt_tenant keeps (best
    # epoch), which Optuna learns from, and ``final`` marks a trial that ended on its own (patience
    # or all epochs), which a trial stopped by ASHA never sends.
    tune.report({**res.valid, "epoch": res.epochs, "final": 1, **tags})
