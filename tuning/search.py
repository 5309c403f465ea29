"""Search over a sweep's space: one Optuna study per (tenant, K) inside one Tune experiment.

Tenants have different NDCG scales, so one study across tenants would compare values of different
catalogs; :class:`PerGroupSearcher` routes each trial to its group's searcher. ``search: random``
is Tune's grid/random generator over (tenant, K) and the space.
"""

from __future__ import annotations

import pickle
from typing import Any

from ray import tune
from ray.tune.search import BasicVariantGenerator, Searcher

from tuning.search_spaces import SweepSpec
from tuning.trial import METRIC, MODE, Group

__all__ = ["PerGroupSearcher", "build_searcher"]


class PerGroupSearcher(Searcher):
    """Routes each trial to the searcher of its (tenant, K); ``num_samples`` trials per group.

    OptunaSearch cannot take ``grid_search``, and one study across tenants would compare NDCG
    values of different catalogs. Groups are filled evenly (the least-sampled group goes next), so
    every tenant makes progress under ``max_concurrent_trials``. Its whole state (the sub-searchers
    included) is pickled by ``save`` so ``Tuner.restore`` continues every study.
    """

    def __init__(self, searchers: dict[Group, Searcher], num_samples: int, metric: str = METRIC, mode: str = MODE) -> None:
        super().__init__(metric=metric, mode=mode)
        self._searchers = dict(searchers)
        self._num_samples = num_samples
        self._issued = {g: 0 for g in searchers}
        self._trial_group: dict[str, Group] = {}

    def set_search_properties(self, metric, mode, config, **spec) -> bool:  # noqa: ANN001
        return True  # every sub-searcher was built with its space, metric and mode

    def suggest(self, trial_id: str) -> dict | None:
        open_groups = sorted((g for g, n in self._issued.items() if n < self._num_samples), key=lambda g: self._issued[g])
        if not open_groups:
            return Searcher.FINISHED
        for g in open_groups:
            cfg = self._searchers[g].suggest(trial_id)
            if cfg is None or cfg == Searcher.FINISHED:
                continue
            self._issued[g] += 1
            self._trial_group[trial_id] = g
            return {"tenant": g[0], "k_users": g[1], **cfg}
        return None

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._trial_group:
            self._searchers[self._trial_group[trial_id]].on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._trial_group:
            self._searchers[self._trial_group[trial_id]].on_trial_complete(trial_id, result, error)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))


class _Fixed(Searcher):
    """A searcher plus keys fixed by the sweep file (Optuna cannot take constants)."""

    def __init__(self, inner: Searcher, fixed: dict[str, Any]) -> None:
        super().__init__(metric=METRIC, mode=MODE)
        self.inner, self.fixed = inner, fixed

    def suggest(self, trial_id: str) -> dict | None:
        cfg = self.inner.suggest(trial_id)
        return cfg if cfg is None or cfg == Searcher.FINISHED else {**self.fixed, **cfg}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.inner.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self.inner.on_trial_complete(trial_id, result, error)


class _Constant(Searcher):
    """Every trial gets the same fixed keys (a sweep over tenants and K only)."""

    def __init__(self, fixed: dict[str, Any]) -> None:
        super().__init__(metric=METRIC, mode=MODE)
        self.fixed = fixed

    def suggest(self, trial_id: str) -> dict:
        return dict(self.fixed)


def build_searcher(spec: SweepSpec, groups: list[Group]):  # noqa: ANN202
    if spec.search == "random":
        return BasicVariantGenerator(random_state=spec.seed), {
            "tenant": tune.grid_search(list(dict.fromkeys(g[0] for g in groups))),
            "k_users": tune.grid_search(list(dict.fromkeys(g[1] for g in groups))),
            **spec.tune_space(),
        }
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    space = spec.tune_space()
    fixed = {k: v for k, v in space.items() if not hasattr(v, "sample")}
    domains = OptunaSearch.convert_search_space({k: v for k, v in space.items() if hasattr(v, "sample")})
    subs = {}
    for i, g in enumerate(groups):
        # TPE starts after a few random trials; Optuna's default of 10 would be all of a small sweep.
        sampler = optuna.samplers.TPESampler(seed=spec.seed + i, n_startup_trials=max(2, min(10, spec.num_samples // 3)))
        subs[g] = _Fixed(OptunaSearch(space=domains, metric=METRIC, mode=MODE, sampler=sampler), fixed) if domains else _Constant(fixed)
    return PerGroupSearcher(subs, spec.num_samples), {}
