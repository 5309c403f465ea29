"""Early stopping of sweep trials: one ASHA per (tenant, K), so rungs never mix catalogs."""

from __future__ import annotations

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from tuning.trial import METRIC, MODE, Group

__all__ = ["PerGroupScheduler"]


class PerGroupScheduler(FIFOScheduler):
    """One ASHA per (tenant, K), so rungs never mix catalogs. Time is the reported ``epoch``.

    ``training_iteration`` would count the trial's closing report as an extra epoch; trials that
    survive the last rung are not stopped (``stop_last_trials=False``) so they send that report.

    Tune does not checkpoint schedulers: after ``Tuner.restore`` the trials that had finished are
    replayed into their group's rungs (last result at the highest rung it reached).
    """

    def __init__(self, max_t: int, grace_period: int, reduction_factor: int, metric: str = METRIC, mode: str = MODE) -> None:
        super().__init__()
        self._metric, self._mode = metric, mode
        self._kwargs = dict(time_attr="epoch", metric=metric, mode=mode, max_t=max_t, stop_last_trials=False,
                            grace_period=min(grace_period, max_t), reduction_factor=reduction_factor)
        self._subs: dict[Group, ASHAScheduler] = {}

    def _sub(self, trial) -> ASHAScheduler:  # noqa: ANN001
        g = (trial.config["tenant"], trial.config["k_users"])
        if g not in self._subs:
            self._subs[g] = ASHAScheduler(**self._kwargs)
        return self._subs[g]

    def set_search_properties(self, metric, mode, **spec) -> bool:  # noqa: ANN001
        return True

    def on_trial_add(self, tune_controller, trial) -> None:  # noqa: ANN001
        sub = self._sub(trial)
        sub.on_trial_add(tune_controller, trial)
        if trial.status == trial.TERMINATED and trial.last_result:
            sub.on_trial_complete(tune_controller, trial, trial.last_result)

    def on_trial_result(self, tune_controller, trial, result) -> str:  # noqa: ANN001
        return self._sub(trial).on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result) -> None:  # noqa: ANN001
        if trial.trial_id in self._sub(trial)._trial_info:
            self._sub(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial) -> None:  # noqa: ANN001
        self._sub(trial)._trial_info.pop(trial.trial_id, None)

    def on_trial_error(self, tune_controller, trial) -> None:  # noqa: ANN001
        self._sub(trial)._trial_info.pop(trial.trial_id, None)

    def debug_string(self) -> str:
        stopped = sum(s._num_stopped for s in self._subs.values())
        return f"ASHA per (tenant, K): {len(self._subs)} groups, {stopped} trials stopped early"
