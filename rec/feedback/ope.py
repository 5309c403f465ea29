"""Off-policy evaluation: what would a candidate policy have earned on the traffic we logged?

Pure numpy estimators over logged bandit feedback. Each logged decision ``i`` showed action
``a_i`` with the logging policy's probability ``p_i = pi_0(a_i | x_i)`` (the propensity the
service returns and writes to the impression log) and earned reward ``r_i`` (1 for a click, 0
otherwise). The candidate policy ``pi`` gave that same action probability ``q_i = pi(a_i | x_i)``;
the importance weight is ``w_i = q_i / p_i``.

    ips     mean(w r)                                   unbiased; variance grows with max w
            (Horvitz & Thompson 1952; Precup et al. 2000)
    snips   sum(w r) / sum(w)                           self-normalised: bounded by the rewards,
            small bias, much smaller variance (Swaminathan & Joachims, NeurIPS 2015)
    dr      mean(v_hat + w (r - r_hat))                 doubly robust: a reward model ``r_hat``
            (its value for the logged action) and ``v_hat`` (its expected value under ``pi``)
            corrected by the weighted residual; unbiased if either the propensities or the
            reward model are right (Dudik, Langford & Li, ICML 2011)

Confidence intervals: IPS and DR are means of i.i.d. terms, so a normal interval on their
sample standard error; SNIPS is a ratio, so the delta method on its linearised terms
``w (r - snips) / mean(w)``. :func:`bootstrap_interval` gives a percentile bootstrap for any
estimator when the sample is small or the weights heavy-tailed.

Slates: under the position-based (item-position) model a slate's value is the sum of its
positions' values, each position a bandit of its own (:func:`estimate_slates`; Li et al., "Offline
Evaluation of Ranking Policies with Click Models", KDD 2018). With the per-position propensities the
service logs, the value of a top-k policy is its expected clicks per slate (HR@k for one relevant
item).

Example::

    est = estimate("snips", rewards, logging_propensity, target_propensity)
    est.value, est.ci_low, est.ci_high, est.effective_sample_size
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Literal

import numpy as np

__all__ = ["ESTIMATORS", "Estimate", "LoggedFeedback", "estimate", "estimate_slates", "bootstrap_interval"]

Estimator = Literal["ips", "snips", "dr"]
ESTIMATORS: tuple[str, ...] = ("ips", "snips", "dr")


@dataclass(frozen=True)
class LoggedFeedback:
    """Logged decisions, validated once.

    Args:
        rewards: ``(n,)`` observed rewards of the logged actions (finite floats; clicks are 0/1).
        logging_propensity: ``(n,)`` ``pi_0(a_i|x_i)``, in (0, 1].
        target_propensity: ``(n,)`` ``pi(a_i|x_i)``, in [0, 1].
        reward_hat: ``(n,)`` reward model's estimate for the logged action (DR only).
        value_hat: ``(n,)`` reward model's expected reward under the target policy (DR only).

    Raises:
        ValueError: on a shape mismatch, an empty log, a propensity outside its range, a
            non-finite value, or DR inputs given for one side only.
    """

    rewards: np.ndarray
    logging_propensity: np.ndarray
    target_propensity: np.ndarray
    reward_hat: np.ndarray | None = None
    value_hat: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = _vector("rewards", self.rewards).shape[0]
        if n == 0:
            raise ValueError("the log is empty: OPE needs at least one logged decision")
        for name in ("logging_propensity", "target_propensity", "reward_hat", "value_hat"):
            value = getattr(self, name)
            if value is not None and _vector(name, value).shape[0] != n:
                raise ValueError(f"{name} has {len(value)} entries but rewards has {n}: pass one per logged decision")
        p = np.asarray(self.logging_propensity, np.float64)
        if (p <= 0).any() or (p > 1).any():
            raise ValueError(
                f"logging_propensity must lie in (0, 1] (got min {p.min():.3g}, max {p.max():.3g}): "
                "a zero propensity means the logged action could not have been shown; fix the log"
            )
        q = np.asarray(self.target_propensity, np.float64)
        if (q < 0).any() or (q > 1).any():
            raise ValueError(f"target_propensity must lie in [0, 1] (got min {q.min():.3g}, max {q.max():.3g})")
        if (self.reward_hat is None) != (self.value_hat is None):
            raise ValueError("reward_hat and value_hat come together: give both for DR, or neither")

    @property
    def weights(self) -> np.ndarray:
        """``(n,)`` importance weights ``pi / pi_0``."""
        return np.asarray(self.target_propensity, np.float64) / np.asarray(self.logging_propensity, np.float64)

    def take(self, idx: np.ndarray) -> LoggedFeedback:
        """The decisions at ``idx`` (a bootstrap resample)."""
        pick = lambda v: None if v is None else np.asarray(v)[idx]  # noqa: E731
        return LoggedFeedback(*(pick(v) for v in (self.rewards, self.logging_propensity, self.target_propensity,
                                                  self.reward_hat, self.value_hat)))


@dataclass(frozen=True)
class Estimate:
    """One estimate of a policy's value with its ``1 - alpha`` confidence interval."""

    estimator: str
    value: float
    ci_low: float
    ci_high: float
    n: int
    effective_sample_size: float  # (sum w)^2 / sum w^2: how many on-policy samples the log is worth

    def as_row(self) -> dict[str, float | int | str]:
        return asdict(self)


def _vector(name: str, value: np.ndarray) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array (one entry per logged decision), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} holds NaN or infinite values: drop or repair those log records")
    return arr


def _terms(log: LoggedFeedback, estimator: str) -> tuple[float, np.ndarray]:
    """The point estimate and the per-decision terms whose standard error gives the interval."""
    w, r = log.weights, np.asarray(log.rewards, np.float64)
    if estimator == "ips":
        terms = w * r
        return float(terms.mean()), terms
    if estimator == "snips":
        if w.sum() == 0:
            raise ValueError("SNIPS is undefined: the target policy gives probability 0 to every logged action")
        value = float((w * r).sum() / w.sum())
        return value, w * (r - value) / w.mean()  # delta-method linearisation; mean 0
    if estimator == "dr":
        if log.reward_hat is None:
            raise ValueError("the dr estimator needs reward_hat and value_hat (a reward model's predictions)")
        terms = np.asarray(log.value_hat, np.float64) + w * (r - np.asarray(log.reward_hat, np.float64))
        return float(terms.mean()), terms
    raise ValueError(f"unknown estimator {estimator!r}: choose one of {', '.join(ESTIMATORS)}")


def estimate(
    estimator: Estimator,
    rewards: np.ndarray,
    logging_propensity: np.ndarray,
    target_propensity: np.ndarray,
    reward_hat: np.ndarray | None = None,
    value_hat: np.ndarray | None = None,
    alpha: float = 0.05,
) -> Estimate:
    """Estimate the target policy's expected reward per decision from a logged sample.

    Args:
        estimator: ``ips``, ``snips`` or ``dr``.
        rewards, logging_propensity, target_propensity, reward_hat, value_hat: see
            :class:`LoggedFeedback`.
        alpha: the interval covers ``1 - alpha`` (normal approximation).

    Returns:
        The :class:`Estimate`.

    Raises:
        ValueError: on invalid inputs or an unknown estimator (the message names the fix).
    """
    log = LoggedFeedback(rewards, logging_propensity, target_propensity, reward_hat, value_hat)
    value, terms = _terms(log, estimator)
    return _with_interval(estimator, value, terms, log.weights, alpha)


def _with_interval(estimator: str, value: float, terms: np.ndarray, weights: np.ndarray, alpha: float) -> Estimate:
    """The estimate with a normal ``1 - alpha`` interval from its per-decision terms' standard error."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    n = terms.shape[0]
    stderr = float(terms.std(ddof=1) / np.sqrt(n)) if n > 1 else float("inf")
    z = NormalDist().inv_cdf(1 - alpha / 2)
    ess = float(weights.sum() ** 2 / (weights**2).sum()) if (weights > 0).any() else 0.0
    return Estimate(estimator, value, value - z * stderr, value + z * stderr, n, ess)


def bootstrap_interval(
    log: LoggedFeedback,
    estimator: Estimator,
    num_resamples: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap ``(low, high)`` of an estimator, resampling logged decisions.

    Raises:
        ValueError: when ``num_resamples`` < 10 or ``alpha`` is outside (0, 1).
    """
    if num_resamples < 10:
        raise ValueError(f"num_resamples must be >= 10 for a percentile interval, got {num_resamples}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    rng = np.random.default_rng(seed)
    n = log.rewards.shape[0]
    values = np.array([_terms(log.take(rng.integers(0, n, n)), estimator)[0] for _ in range(num_resamples)])
    return float(np.quantile(values, alpha / 2)), float(np.quantile(values, 1 - alpha / 2))


def estimate_slates(
    estimator: Estimator,
    rewards: np.ndarray,
    logging_propensity: np.ndarray,
    target_propensity: np.ndarray,
    reward_hat: np.ndarray | None = None,
    value_hat: np.ndarray | None = None,
    alpha: float = 0.05,
) -> Estimate:
    """Expected reward per slate of a target ranking policy from logged slates (position-based model).

    Every argument is ``(n, k)``: ``n`` logged slates of ``k`` positions; entry ``(i, j)`` is about
    the item shown at position ``j`` of slate ``i`` (its click, its logging propensity at that
    position, the target policy's probability of putting that item there). Each position is
    estimated as its own bandit and the positions are summed; the interval comes from the summed
    per-slate terms, so it keeps the positions' covariance.

    Raises:
        ValueError: on shapes that are not ``(n, k)`` alike, or the errors of :func:`estimate`.
    """
    arrays = [np.asarray(a, np.float64) for a in (rewards, logging_propensity, target_propensity)]
    dr = [None if a is None else np.asarray(a, np.float64) for a in (reward_hat, value_hat)]
    shape = arrays[0].shape
    if len(shape) != 2 or any(a.shape != shape for a in arrays + [a for a in dr if a is not None]):
        raise ValueError(f"slate arrays must all be (n, k); got {[a.shape for a in arrays]}")
    value, terms, weights = 0.0, np.zeros(shape[0]), np.zeros(shape[0])
    for j in range(shape[1]):
        log = LoggedFeedback(*(a[:, j] for a in arrays), *(None if a is None else a[:, j] for a in dr))
        v, t = _terms(log, estimator)
        value += v
        terms += t  # per-slate sum of the positions' terms: its spread gives the interval
        weights += log.weights
    return _with_interval(estimator, value, terms, weights, alpha)
