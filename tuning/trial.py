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

__all__ = ["METRIC", "MODE", "Group", "adaptation_trial", "federated_trial"]

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


def federated_trial(config: dict[str, Any], *, backbone_dir: str, base_tree: dict, spec, threads: int) -> None:  # noqa: ANN001
    """Tune function trainable of a ``job: fed`` sweep: one ``rec fed`` run with the trial's settings.

    Flower's Ray backend ends with ``ray.shutdown()``, which would cut this trial's own worker off
    its cluster, so the run is a child process (``rec fed --address auto``: its client actors run
    on the same cluster, beside the trials). It publishes its adapter under the trial folder and
    reports the final global adapter's validation metrics once, with ``epoch`` = rounds and the
    adapter's path.
    """
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    from rec.config import dump_config

    cfg = trial_config(base_tree, spec, config, torch_threads=threads)
    trial_dir = Path(tune.get_context().get_trial_dir())
    cfg = cfg.model_copy(update={"adapt": cfg.adapt.model_copy(update={"output_root": str(trial_dir / "adapters")})})
    cfg_path, record = trial_dir / "fed-config.yaml", trial_dir / "fed-record.json"
    cfg_path.write_text(dump_config(cfg))
    argv = [sys.executable, "-m", "rec.cli", "fed", "--config", str(cfg_path), "--backbone", str(backbone_dir), "--address", "auto",
            "--record", str(record)]
    r = subprocess.run(argv, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"rec fed failed ({r.returncode}): {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ''}")
    rec = yaml.safe_load(record.read_text())
    tune.report({**rec["valid"], "epoch": cfg.fed.rounds, "final": 1, "adapter": rec["adapter"], "tenant": config["tenant"],
                 "k": k_label(config["k_users"])})
