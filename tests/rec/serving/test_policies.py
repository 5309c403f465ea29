"""Exploration policies: exact and Monte Carlo propensities, learning from clicks, state on disk."""

from __future__ import annotations

import numpy as np
import pytest

from rec.serving.online_prior import OnlinePrior
from rec.serving.policies import PolicyConfig, PolicyState, choose

N, K, DIM = 30, 5, 8


def _candidates(seed: int = 0):
    rng = np.random.default_rng(seed)
    rows = rng.permutation(200)[:N]
    scores = np.sort(rng.normal(size=N))[::-1].copy()
    vectors = rng.normal(size=(N, DIM))
    return rows, scores, vectors


def test_greedy_is_the_model_order_with_propensity_one():
    rows, scores, vectors = _candidates()
    slate = choose(rows, scores, vectors, K, PolicyConfig("greedy"), None, np.random.default_rng(0))
    assert slate.rows.tolist() == rows[:K].tolist()
    assert slate.propensities.tolist() == [1.0] * K
    assert slate.policy == "greedy"


def test_epsilon_propensities_are_exact_frequencies():
    rows, scores, vectors = _candidates()
    cfg = PolicyConfig("epsilon", epsilon=0.3)
    rng = np.random.default_rng(1)
    trials = 20_000
    at_pos0 = {}
    props0 = {}
    for _ in range(trials):
        s = choose(rows, scores, vectors, K, cfg, None, rng)
        at_pos0[int(s.rows[0])] = at_pos0.get(int(s.rows[0]), 0) + 1
        props0[int(s.rows[0])] = s.propensities[0]
    # the greedy top item: 0.7 + 0.3/N; any other: 0.3/N
    assert props0[int(rows[0])] == pytest.approx(0.7 + 0.3 / N)
    assert at_pos0[int(rows[0])] / trials == pytest.approx(0.7 + 0.3 / N, abs=0.01)
    other = int(rows[7])
    assert props0[other] == pytest.approx(0.3 / N)
    assert at_pos0[other] / trials == pytest.approx(0.3 / N, abs=0.004)


@pytest.mark.parametrize("name", ["thompson", "lints"])
def test_sampled_policies_report_monte_carlo_propensities(name):
    rows, scores, vectors = _candidates()
    state = PolicyState(200, DIM)
    cfg = PolicyConfig(name, propensity_samples=256)
    slate = choose(rows, scores, vectors, K, cfg, state, np.random.default_rng(2))
    assert len(set(slate.rows.tolist())) == K
    assert set(slate.rows.tolist()) <= set(rows.tolist())
    assert ((slate.propensities > 0) & (slate.propensities <= 1)).all()
    # the reported propensity of position 0 matches how often that item is drawn there
    rng = np.random.default_rng(3)
    hits = sum(choose(rows, scores, vectors, K, cfg, state, rng).rows[0] == slate.rows[0] for _ in range(400))
    assert hits / 400 == pytest.approx(slate.propensities[0], abs=0.12)


def test_untrained_contextual_policies_rank_like_the_model():
    rows, scores, vectors = _candidates()
    state = PolicyState(200, DIM)
    ucb = choose(rows, scores, vectors, K, PolicyConfig("linucb", alpha=0.0), state, np.random.default_rng(0))
    assert ucb.rows.tolist() == rows[:K].tolist()


@pytest.mark.parametrize("name", ["thompson", "lints", "linucb"])
def test_policies_learn_which_candidate_users_click(name):
    """Users always click one low-ranked candidate; after feedback the policy shows it first."""
    rows, scores, vectors = _candidates()
    liked = 20  # candidate index the model ranks 21st
    state = PolicyState(200, DIM)
    cfg = PolicyConfig(name)
    rng = np.random.default_rng(4)
    for _ in range(300):
        s = choose(rows, scores, vectors, K, cfg, state, rng)
        idx = np.array([int(np.flatnonzero(rows == r)[0]) for r in s.rows])
        # show the liked item now and then (as exploration would) so there is something to learn
        if rng.random() < 0.3 and liked not in idx:
            idx[-1] = liked
        state.update(rows[idx], (idx == liked).astype(float), _z(scores)[idx], vectors[idx])
    firsts = [choose(rows, scores, vectors, K, cfg, state, rng).rows[0] for _ in range(50)]
    assert np.mean(np.array(firsts) == rows[liked]) > 0.6


def _z(scores):
    return (scores - scores.mean()) / scores.std()


def test_state_round_trips_atomically(tmp_path):
    state = PolicyState(200, DIM)
    rows, scores, vectors = _candidates()
    state.update(rows[:K], np.array([1, 0, 0, 1, 0.0]), _z(scores)[:K], vectors[:K])
    path = tmp_path / "tenant" / "policy.safetensors"
    state.save(path)
    back = PolicyState.load(path, 200, DIM)
    np.testing.assert_array_equal(back.clicks, state.clicks)
    np.testing.assert_array_equal(back.precision, state.precision)
    assert [p.name for p in path.parent.iterdir()] == ["policy.safetensors"]  # no temp file left
    assert PolicyState.load(tmp_path / "none.safetensors", 200, DIM).impressions.sum() == 0
    with pytest.raises(ValueError, match="catalog changed"):
        PolicyState.load(path, 201, DIM)


def test_bad_policy_settings_say_what_to_do():
    with pytest.raises(ValueError, match="choose one of greedy, epsilon"):
        PolicyConfig("softmax")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="epsilon must lie in"):
        PolicyConfig("epsilon", epsilon=1.5)
    rows, scores, vectors = _candidates()
    with pytest.raises(ValueError, match="needs the tenant's PolicyState"):
        choose(rows, scores, vectors, K, PolicyConfig("thompson"), None, np.random.default_rng(0))
    with pytest.raises(ValueError, match="needs one catalog vector"):
        choose(rows, scores, None, K, PolicyConfig("lints"), PolicyState(200, DIM), np.random.default_rng(0))


def test_online_prior_moves_popular_items_up_and_decays():
    prior = OnlinePrior(num_items=10, half_life_s=100.0, weight=2.0)
    scores = np.linspace(1.0, 0.0, 10)  # the model prefers row 0
    rows = np.arange(10)
    assert np.argmax(prior.blend(scores, rows, t=0.0)) == 0  # no events: the model's order
    for t in range(20):
        prior.observe(np.array([9]), t=float(t))
    assert np.argmax(prior.blend(scores, rows, t=20.0)) == 9
    # a half-life later the counts halve; events may arrive out of order
    assert prior.counts(120.0)[9] == pytest.approx(prior.counts(20.0)[9] / 2)
    before = prior.counts(20.0)[3]
    prior.observe(np.array([3]), t=10.0)
    assert prior.counts(20.0)[3] == pytest.approx(before + 2 ** (-10 / 100))  # 10 s old at t=20
    with pytest.raises(ValueError, match="not from this catalog"):
        prior.observe(np.array([10]), t=21.0)
