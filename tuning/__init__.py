"""Hyper-parameter sweeps of few-shot adaptation with Ray Tune (``rec tune``, docs/tuning.md).

Example::

    from tuning import load_sweep, run_sweep

    res = run_sweep(load_sweep("tuning/configs/quick.yaml"), cfg, "runs/quickstart/checkpoint")
    print(res.md_path, res.best)
"""

from tuning.search_spaces import SweepError, SweepSpec, load_sweep, space_from_tune, trial_config, trial_overrides
from tuning.scheduler import PerGroupScheduler
from tuning.search import PerGroupSearcher
from tuning.sweep import SweepInterrupted, SweepResult, run_sweep

__all__ = [
    "PerGroupScheduler",
    "PerGroupSearcher",
    "SweepError",
    "SweepInterrupted",
    "SweepResult",
    "SweepSpec",
    "load_sweep",
    "run_sweep",
    "space_from_tune",
    "trial_config",
    "trial_overrides",
]
