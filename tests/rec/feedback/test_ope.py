"""Off-policy estimators against hand-computed cases and a simulated bandit with a known value."""

from __future__ import annotations

import numpy as np
import pytest

from rec.feedback.ope import LoggedFeedback, bootstrap_interval, estimate, estimate_slates

# Four logged decisions: w = q / p = [2, 0, 2, 2]
R = np.array([1.0, 0.0, 1.0, 0.0])
P = np.array([0.5, 0.5, 0.25, 0.25])
Q = np.array([1.0, 0.0, 0.5, 0.5])


def test_hand_computed_values():
    assert estimate("ips", R, P, Q).value == pytest.approx((2 + 0 + 2 + 0) / 4)
    assert estimate("snips", R, P, Q).value == pytest.approx(4 / 6)
    # DR with a constant reward model 0.5: terms 0.5 + w (r - 0.5) = [1.5, 0.5, 1.5, -0.5]
    half = np.full(4, 0.5)
    assert estimate("dr", R, P, Q, half, half).value == pytest.approx(0.75)
    # effective sample size (sum w)^2 / sum w^2 = 36 / 12
    assert estimate("ips", R, P, Q).effective_sample_size == pytest.approx(3.0)


def test_on_policy_log_gives_the_sample_mean_for_every_estimator():
    rng = np.random.default_rng(0)
    r = rng.binomial(1, 0.3, 500).astype(float)
    p = rng.uniform(0.1, 1.0, 500)
    zeros = np.zeros(500)
    for name, extra in (("ips", {}), ("snips", {}), ("dr", {"reward_hat": zeros, "value_hat": zeros})):
        est = estimate(name, r, p, p, **extra)
        assert est.value == pytest.approx(r.mean())
        assert est.ci_low < r.mean() < est.ci_high
    assert estimate("ips", r, p, p).effective_sample_size == pytest.approx(500)


def _simulated_log(n: int, seed: int, epsilon: float = 0.3):
    """An epsilon-greedy logging policy over 20 arms; the target is the greedy policy."""
    rng = np.random.default_rng(seed)
    arms = 20
    ctr = np.linspace(0.02, 0.2, arms)
    greedy = arms - 1  # the logging policy's greedy choice is the best arm
    explore = rng.random(n) < epsilon
    action = np.where(explore, rng.integers(0, arms, n), greedy)
    p = np.where(action == greedy, 1 - epsilon + epsilon / arms, epsilon / arms)
    q = (action == greedy).astype(float)
    r = rng.binomial(1, ctr[action]).astype(float)
    return r, p, q, ctr, action, greedy


def test_estimates_of_the_greedy_policy_from_an_epsilon_log_match_its_true_value():
    r, p, q, ctr, action, greedy = _simulated_log(20_000, seed=1)
    truth = ctr[greedy]
    # a reward model that is right on average per arm (fitted on the log itself)
    per_arm = np.array([r[action == a].mean() if (action == a).any() else 0.0 for a in range(len(ctr))])
    r_hat, v_hat = per_arm[action], np.full(len(r), per_arm[greedy])
    for name, extra in (("ips", {}), ("snips", {}), ("dr", {"reward_hat": r_hat, "value_hat": v_hat})):
        est = estimate(name, r, p, q, **extra)
        assert abs(est.value - truth) / truth < 0.05, (name, est)
        assert est.ci_low < truth < est.ci_high, (name, est)
    # a good reward model shrinks the interval: DR's is narrower than IPS's
    dr = estimate("dr", r, p, q, r_hat, v_hat)
    ips = estimate("ips", r, p, q)
    assert dr.ci_high - dr.ci_low < ips.ci_high - ips.ci_low


def test_interval_coverage_is_near_nominal():
    covered = {"ips": 0, "snips": 0}
    trials = 200
    for seed in range(trials):
        r, p, q, ctr, _, greedy = _simulated_log(2_000, seed=100 + seed)
        for name in covered:
            est = estimate(name, r, p, q)
            covered[name] += est.ci_low <= ctr[greedy] <= est.ci_high
    for name, hits in covered.items():
        assert 0.88 <= hits / trials <= 0.99, (name, hits / trials)


def test_bootstrap_interval_brackets_the_estimate():
    r, p, q, ctr, _, greedy = _simulated_log(3_000, seed=7)
    log = LoggedFeedback(r, p, q)
    low, high = bootstrap_interval(log, "snips", num_resamples=200, seed=0)
    value = estimate("snips", r, p, q).value
    assert low < value < high
    assert low < ctr[greedy] < high
    assert bootstrap_interval(log, "snips", num_resamples=200, seed=0) == (low, high)  # seeded


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"logging_propensity": np.array([0.5, 0.0, 0.25, 0.25])}, "logging_propensity must lie in"),
        ({"target_propensity": np.array([1.5, 0.0, 0.5, 0.5])}, "target_propensity must lie in"),
        ({"rewards": np.array([1.0, 0.0])}, "one per logged decision"),
        ({"rewards": np.array([1.0, np.nan, 1.0, 0.0])}, "NaN"),
        ({"rewards": np.zeros((2, 2))}, "1-D"),
    ],
)
def test_bad_logs_are_rejected_with_the_fix(kwargs, message):
    args = {"rewards": R, "logging_propensity": P, "target_propensity": Q} | kwargs
    with pytest.raises(ValueError, match=message):
        estimate("ips", **args)


def test_bad_estimator_arguments():
    with pytest.raises(ValueError, match="choose one of ips, snips, dr"):
        estimate("replay", R, P, Q)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs reward_hat and value_hat"):
        estimate("dr", R, P, Q)
    with pytest.raises(ValueError, match="give both"):
        estimate("dr", R, P, Q, reward_hat=np.zeros(4))
    with pytest.raises(ValueError, match="undefined"):
        estimate("snips", R, P, np.zeros(4))
    with pytest.raises(ValueError, match="empty"):
        estimate("ips", np.array([]), np.array([]), np.array([]))


def _slate_log(n: int, seed: int, eps: float = 0.2, cands: int = 20, k: int = 5):
    """Epsilon-greedy slates over ranked candidates; one relevant item per slate drawn from a
    rank-decaying distribution; a click when it is shown (position-independent)."""
    from rec.serving.policies import PolicyConfig, choose

    rng = np.random.default_rng(seed)
    rel_p = 1.0 / np.arange(1, cands + 1)
    rel_p /= rel_p.sum()
    scores = np.linspace(1.0, 0.0, cands)
    cfg = PolicyConfig("epsilon", epsilon=eps)
    r, p, q = (np.zeros((n, k)) for _ in range(3))
    for i in range(n):
        relevant = rng.choice(cands, p=rel_p)
        s = choose(np.arange(cands), scores, None, k, cfg, None, rng)
        r[i] = s.rows == relevant
        p[i] = s.propensities
        q[i] = s.rows == np.arange(k)  # greedy puts candidate j at position j
    truth = rel_p[:k].sum()  # greedy's expected clicks per slate
    return r, p, q, truth


def test_slate_estimates_of_greedy_from_an_epsilon_log():
    r, p, q, truth = _slate_log(8000, seed=3)
    for name in ("ips", "snips"):
        est = estimate_slates(name, r, p, q)
        assert abs(est.value - truth) / truth < 0.05, (name, est, truth)
        assert est.ci_low < truth < est.ci_high, (name, est, truth)
    # DR with a per-position reward model fitted on the log
    r_hat = np.tile(np.array([r[:, j][q[:, j] == 1].mean() for j in range(r.shape[1])]), (len(r), 1))
    est = estimate_slates("dr", r, p, q, r_hat * q, r_hat)
    assert abs(est.value - truth) / truth < 0.05 and est.ci_low < truth < est.ci_high
    with pytest.raises(ValueError, match=r"\(n, k\)"):
        estimate_slates("ips", r[:, 0], p[:, 0], q[:, 0])
