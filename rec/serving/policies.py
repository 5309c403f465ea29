"""Exploration policies that re-rank the model's top-N into the ``k`` items a user is shown.

The model proposes ``N`` candidates (its best-scored catalog rows); a policy picks and orders
``k`` of them and says, for each shown position, the probability with which it would have put
that item there (the *propensity*; off-policy evaluation in :mod:`rec.feedback.ope` needs it).

    greedy     the model's order; propensity 1.0
    epsilon    with probability ``1 - eps`` the greedy slate, else ``k`` candidates uniformly at
               random; P(item at position j) = (1 - eps) [greedy_j = item] + eps / N, exactly
    thompson   Beta-Bernoulli posterior per item, prior mean from the model's softmax over the
               candidates; ranks by one posterior draw (Chapelle & Li, NeurIPS 2011)
    lints      NeuralLinear (Riquelme, Tucker & Snoek, ICLR 2018): Bayesian linear regression of
    linucb     the click on features ``[1, z, c]`` (z: the model score standardised over the
               candidates, c: the item's own catalog vector, i.e. the model's last layer); the
               prior mean puts all weight on z, so an untrained policy ranks like the model.
               lints ranks by a posterior draw, linucb by mean + alpha * std (Li et al., WWW 2010)

Stochastic policies estimate their position propensities by Monte Carlo (``propensity_samples``
draws from the same posterior; the shown ranking is one of them, so no shown item gets 0).
Policy state (:class:`PolicyState`) is plain arrays, updated from impressions and clicks and
saved/loaded atomically, so every replica can reload the same state.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from safetensors.numpy import load_file, save_file

__all__ = ["POLICIES", "PolicyConfig", "PolicyState", "Slate", "choose", "greedy_slate"]

PolicyName = Literal["greedy", "epsilon", "thompson", "lints", "linucb"]
POLICIES: tuple[str, ...] = ("greedy", "epsilon", "thompson", "lints", "linucb")


@dataclass(frozen=True)
class PolicyConfig:
    """A tenant's exploration settings (validated here: the serving path has no torch config)."""

    name: PolicyName = "greedy"
    epsilon: float = 0.1
    prior_strength: float = 10.0  # thompson: pseudo-impressions behind the model's prior
    ridge: float = 1.0  # lin*: prior precision of the regression weights
    noise: float = 0.25  # lints: posterior scale
    alpha: float = 0.5  # linucb: width of the optimism bonus
    score_weight: float = 0.05  # lin*: prior mean of the weight on the standardised model score
    propensity_samples: int = 64

    def __post_init__(self) -> None:
        if self.name not in POLICIES:
            raise ValueError(f"unknown policy {self.name!r}: choose one of {', '.join(POLICIES)}")
        if not 0.0 <= self.epsilon <= 1.0:
            raise ValueError(f"epsilon must lie in [0, 1], got {self.epsilon}")
        for key in ("prior_strength", "ridge", "noise", "score_weight"):
            if getattr(self, key) <= 0:
                raise ValueError(f"{key} must be > 0, got {getattr(self, key)}")
        if self.alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {self.alpha}")
        if self.propensity_samples < 1:
            raise ValueError(f"propensity_samples must be >= 1, got {self.propensity_samples}")


@dataclass(frozen=True)
class Slate:
    """What one user is shown: catalog ``rows`` best first and each position's propensity."""

    rows: np.ndarray  # (k,) int64
    propensities: np.ndarray  # (k,) float64 in (0, 1]
    policy: str
    z: np.ndarray  # (k,) the shown rows' standardised model scores: the features a later update needs


@dataclass
class PolicyState:
    """Per-tenant learned state: item click counts and the NeuralLinear posterior.

    ``impressions``/``clicks`` are indexed by catalog row; ``precision`` (``A``) and ``target``
    (``b``) are the regression's sufficient statistics over features of size ``2 + dim``.
    """

    num_items: int
    dim: int
    impressions: np.ndarray = field(default=None)  # type: ignore[assignment]
    clicks: np.ndarray = field(default=None)  # type: ignore[assignment]
    precision: np.ndarray = field(default=None)  # type: ignore[assignment]
    target: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        f = self.dim + 2
        self.impressions = np.zeros(self.num_items) if self.impressions is None else np.asarray(self.impressions, np.float64)
        self.clicks = np.zeros(self.num_items) if self.clicks is None else np.asarray(self.clicks, np.float64)
        self.precision = np.zeros((f, f)) if self.precision is None else np.asarray(self.precision, np.float64)
        self.target = np.zeros(f) if self.target is None else np.asarray(self.target, np.float64)
        if self.impressions.shape != (self.num_items,) or self.clicks.shape != (self.num_items,):
            raise ValueError(f"policy state counts must have shape ({self.num_items},): the catalog changed; reset the state")
        if self.precision.shape != (f, f) or self.target.shape != (f,):
            raise ValueError(f"policy state regression must have {f} features: the model's dim changed; reset the state")

    def observe_impression(self, rows: np.ndarray, z: np.ndarray, vectors: np.ndarray) -> None:
        """Count one shown slate (no click yet; clicks arrive later, :meth:`observe_click`).

        Args:
            rows: ``(k,)`` shown catalog rows.
            z: ``(k,)`` their standardised model scores (:attr:`Slate.z`, logged with the impression).
            vectors: ``(k, dim)`` their catalog vectors.
        """
        rows = self._check_rows(rows)
        np.add.at(self.impressions, rows, 1.0)
        x = features(np.asarray(z, np.float64), np.asarray(vectors, np.float64))
        self.precision += x.T @ x
        self._posterior = None

    def observe_click(self, rows: np.ndarray, z: np.ndarray, vectors: np.ndarray) -> None:
        """Count clicks on rows of an already observed impression (reward 1 for each)."""
        rows = self._check_rows(rows)
        np.add.at(self.clicks, rows, 1.0)
        x = features(np.asarray(z, np.float64), np.asarray(vectors, np.float64))
        self.target += x.sum(axis=0)
        self._posterior = None

    def update(self, rows: np.ndarray, clicked: np.ndarray, z: np.ndarray, vectors: np.ndarray) -> None:
        """Impression and its clicks at once (``clicked``: ``(k,)`` 1 where clicked)."""
        self.observe_impression(rows, z, vectors)
        hit = np.asarray(clicked, bool)
        if hit.any():
            self.observe_click(np.asarray(rows)[hit], np.asarray(z)[hit], np.asarray(vectors)[hit])

    def _check_rows(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, np.int64).reshape(-1)
        if rows.size and (rows.min() < 0 or rows.max() >= self.num_items):
            raise ValueError(f"rows must lie in [0, {self.num_items}): the slate is not from this catalog")
        return rows

    def posterior(self, cfg: PolicyConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(mean, cov, chol)`` of the regression weights; cached until the next update."""
        key = (cfg.ridge, cfg.score_weight)
        if getattr(self, "_posterior", None) is None or self._posterior[0] != key:
            mean, cov = _linear_posterior(self, cfg)
            chol = np.linalg.cholesky(cov + 1e-9 * np.eye(len(mean)))
            self._posterior = (key, mean, cov, chol)
        return self._posterior[1:]

    def save(self, path: str | Path) -> None:
        """Write atomically (temp file + rename), so a reader never sees half a state."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {"impressions": self.impressions, "clicks": self.clicks, "precision": self.precision, "target": self.target}
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        os.close(fd)
        try:
            save_file(arrays, tmp, metadata={"num_items": str(self.num_items), "dim": str(self.dim)})
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    @classmethod
    def load(cls, path: str | Path, num_items: int, dim: int) -> PolicyState:
        """Read a saved state, or a fresh one when none exists for this tenant yet."""
        path = Path(path)
        if not path.exists():
            return cls(num_items, dim)
        arrays = load_file(str(path))
        return cls(num_items, dim, **arrays)


def greedy_slate(rows: np.ndarray, scores: np.ndarray) -> Slate:
    """The model's own order (``rows`` already best first), propensity 1 each."""
    scores = np.asarray(scores, np.float64)
    return Slate(np.asarray(rows, np.int64), np.ones(len(rows)), "greedy", _standardise(scores) if len(scores) else scores)


# --- features ---------------------------------------------------------------------------------
def _standardise(scores: np.ndarray) -> np.ndarray:
    std = scores.std()
    return (scores - scores.mean()) / (std if std > 0 else 1.0)


def features(z: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """``(k, 2 + dim)`` NeuralLinear features ``[1, z, c / |c|]`` of shown or candidate rows."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = vectors / np.where(norms > 0, norms, 1.0)
    return np.concatenate([np.ones((len(z), 1)), z[:, None], unit], axis=1)


# --- the policies -----------------------------------------------------------------------------
def _greedy(scores: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-scores, kind="stable")[:k]


def _position_frequencies(draws: np.ndarray, shown: np.ndarray) -> np.ndarray:
    """P(shown[j] at position j) estimated from ``draws`` ``(M, k)`` of candidate indices."""
    return (draws == shown[None, :]).mean(axis=0)


def _sampled_slate(draws: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Rank by the first of ``draws`` ``(M, N)`` score samples; propensities from all ``M``."""
    order = np.argsort(-draws, axis=1, kind="stable")[:, :k]  # (M, k) candidate indices
    shown = order[0]
    return shown, _position_frequencies(order, shown)


def _thompson_draws(state: PolicyState, rows: np.ndarray, scores: np.ndarray, k: int, cfg: PolicyConfig,
                    rng: np.random.Generator) -> np.ndarray:
    prior = np.exp(scores - scores.max())
    prior = np.clip(k * prior / prior.sum(), 1e-3, 0.999)  # P(click | shown in a k-slate), per the model
    a = 1.0 + cfg.prior_strength * prior + state.clicks[rows]
    b = 1.0 + cfg.prior_strength * (1 - prior) + state.impressions[rows] - state.clicks[rows]
    return rng.beta(a, b, size=(cfg.propensity_samples, len(rows)))


def _linear_posterior(state: PolicyState, cfg: PolicyConfig) -> tuple[np.ndarray, np.ndarray]:
    f = state.dim + 2
    prior_mean = np.zeros(f)
    prior_mean[1] = cfg.score_weight  # an unlearned policy ranks like the model
    precision = cfg.ridge * np.eye(f) + state.precision
    cov = np.linalg.inv(precision)
    mean = cov @ (cfg.ridge * prior_mean + state.target)
    return mean, cov


def choose(
    rows: np.ndarray,
    scores: np.ndarray,
    vectors: np.ndarray | None,
    k: int,
    cfg: PolicyConfig,
    state: PolicyState | None,
    rng: np.random.Generator,
) -> Slate:
    """Pick and order ``k`` of the model's candidates.

    Args:
        rows: ``(N,)`` candidate catalog rows (the model's top-N).
        scores: ``(N,)`` their model scores.
        vectors: ``(N, dim)`` their catalog vectors (lints/linucb only).
        k: slate size (``<= N``; fewer candidates give a shorter slate).
        cfg: the tenant's policy settings.
        state: the tenant's learned state (all but greedy/epsilon).
        rng: the request's random generator.

    Returns:
        The :class:`Slate`.

    Raises:
        ValueError: when the inputs disagree in length or a learning policy has no state.
    """
    rows, scores = np.asarray(rows, np.int64), np.asarray(scores, np.float64)
    if rows.shape != scores.shape or rows.ndim != 1:
        raise ValueError(f"rows {rows.shape} and scores {scores.shape} must be 1-D and of one length")
    n, k = len(rows), min(k, len(rows))
    z = _standardise(scores) if n else scores
    if n == 0 or cfg.name == "greedy":
        idx = _greedy(scores, k)
        return Slate(rows[idx], np.ones(len(idx)), cfg.name, z[idx])
    if cfg.name == "epsilon":
        greedy = _greedy(scores, k)
        idx = greedy if rng.random() >= cfg.epsilon else rng.permutation(n)[:k]
        props = (1 - cfg.epsilon) * (idx == greedy) + cfg.epsilon / n
        return Slate(rows[idx], props, cfg.name, z[idx])
    if state is None:
        raise ValueError(f"policy {cfg.name!r} learns from feedback and needs the tenant's PolicyState")
    if cfg.name == "thompson":
        draws = _thompson_draws(state, rows, scores, k, cfg, rng)
    else:
        if vectors is None or len(vectors) != n:
            raise ValueError(f"policy {cfg.name!r} needs one catalog vector per candidate ({n})")
        x = features(z, np.asarray(vectors, np.float64))
        mean, cov, chol = state.posterior(cfg)
        if cfg.name == "linucb":
            bonus = np.sqrt(np.einsum("nf,nf->n", x @ cov, x))
            idx = _greedy(x @ mean + cfg.alpha * bonus, k)
            return Slate(rows[idx], np.ones(len(idx)), cfg.name, z[idx])
        thetas = mean[:, None] + cfg.noise * chol @ rng.standard_normal((len(mean), cfg.propensity_samples))
        draws = (x @ thetas).T  # (M, N)
    idx, props = _sampled_slate(draws, k)
    return Slate(rows[idx], props, cfg.name, z[idx])
