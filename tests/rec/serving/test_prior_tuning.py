"""The online prior's weight tuned per tenant on users' next interactions (rec.serving.prior_tuning):
the probe ranks like the blend, the tuner picks the weight that held what users did next, and the
live loop moves a tenant to that weight from its own log."""

from __future__ import annotations

import time

import numpy as np
import pytest

from rec.serving.live_feedback import FeedbackSettings, write_feedback_settings
from rec.serving.online_prior import OnlinePrior
from rec.serving.prior_tuning import PROBE_KEY, PriorWeightTuner, probe_top_rows
from rec.serving.ranking import IMPRESSION_KEY, RankRequest, rank_batch

from .test_live_feedback import _wait_for, loop  # noqa: F401 - the live-loop fixture


def test_the_probe_ranks_exactly_like_the_blend_and_honours_exclusions():
    rng = np.random.default_rng(0)
    scores, counts = rng.normal(size=300), rng.poisson(0.5, size=300).astype(float)
    prior = OnlinePrior(300, weight=1.0)
    for row in np.flatnonzero(counts):
        prior.observe(np.array([row]), 0.0, amount=counts[row])
    z, pop = prior.parts(scores, np.arange(300), 0.0)
    exclude = np.array([int(np.argmax(scores)), 7])
    for w, top in zip([0.0, 1.0, 3.0], probe_top_rows(z, pop, [0.0, 1.0, 3.0], 10, exclude), strict=True):
        prior.weight = w
        blended = prior.blend(scores, np.arange(300), 0.0) if w else (scores - scores.mean()) / scores.std()
        blended[exclude] = -np.inf
        assert top.tolist() == np.argsort(-blended, kind="stable")[:10].tolist()
        assert not set(exclude.tolist()) & set(top.tolist())


def _probe(weights, tops):
    return {"weights": weights, "top": tops}


def test_the_tuner_moves_to_the_weight_that_held_users_next_items_only_after_enough_evidence():
    tuner = PriorWeightTuner([0.0, 1.0, 4.0], default=1.0, min_evidence=5, decay=1.0)
    grid = [0.0, 1.0, 4.0]
    for u in range(8):
        user = f"u{u}"
        # the earlier ask: only weight 4's top held "hit"; the next ask reports "hit" as the newest interaction
        tuner.observe_ask(user, "a", _probe(grid, [["x", "y"], ["x", "z"], ["hit", "x"]]))
        tuner.observe_ask(user, "hit", None)
        assert tuner.weight == (4.0 if u + 1 >= 5 else 1.0), f"after {u + 1} judgements"
    assert tuner.judged == 8 and tuner.hits.tolist() == [0.0, 0.0, 8.0]


def test_repeated_asks_ties_and_foreign_probes_leave_the_configured_weight():
    grid = [0.0, 2.0]
    tuner = PriorWeightTuner(grid, default=2.0, min_evidence=1, decay=1.0)
    tuner.observe_ask("u", "a", _probe(grid, [["b"], ["b"]]))
    tuner.observe_ask("u", "a", _probe(grid, [["b"], ["b"]]))  # a refresh: same newest item, nothing judged
    assert tuner.judged == 0
    tuner.observe_ask("u", "b", _probe([0.0, 3.0], [["c"], ["d"]]))  # a tie (both held b): default kept
    assert tuner.judged == 1 and tuner.weight == 2.0
    tuner.observe_ask("u", "c", None)  # the last probe was of another grid: not judged
    assert tuner.judged == 1
    with pytest.raises(ValueError, match=">= 2 weights"):
        PriorWeightTuner([1.0], default=1.0)
    with pytest.raises(ValueError, match="prior_weight_grid"):
        FeedbackSettings(prior_weight_grid=[0.0, 0.0])


def test_a_live_tenant_whose_users_follow_popularity_learns_a_large_weight_from_its_log(serving_world, loop):  # noqa: F811
    store, ranker, reg, log, live = loop
    write_feedback_settings(store.tenant_dir("courses"), FeedbackSettings(
        prior_weight=0.0, prior_weight_grid=[0.0, 4.0], prior_min_evidence=5, count_history=True))
    bundle = reg.get("courses").bundle
    fb = _wait_for(live, "courses", bundle)
    base = ("x",) + tuple(bundle.item_ids.tolist()[:3])
    first = rank_batch(ranker, reg, [RankRequest("courses", base, 10)], ranker.max_len, "m", feedback=live)[0]
    shown = {i["item_id"] for i in first["items"]} | set(base)
    popular = next(i for i in bundle.item_ids.tolist()[::-1] if i not in shown)  # the model ranks it low
    log.append("courses", [{"kind": "event", "type": "purchase", "item_id": popular, "timestamp": time.time()}] * 20)
    deadline = time.monotonic() + 5
    while fb.prior.total < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    # 8 users ask, then each comes back having taken the popular item: weight 4 held it, weight 0 did not
    for round_ in range(2):
        asks = [RankRequest("courses", base + ((popular,) if round_ else ()), 10, user_id=f"u{u}") for u in range(8)]
        answers = rank_batch(ranker, reg, asks, ranker.max_len, "m", feedback=live)
        probe = answers[0][IMPRESSION_KEY][PROBE_KEY]
        assert probe["weights"] == [0.0, 4.0]
        log.append_unkeyed("courses", [a[IMPRESSION_KEY] for a in answers])
        if round_ == 0:  # what the next asks are judged on
            assert popular in probe["top"][1] and popular not in probe["top"][0]
            assert all(a["items"][0]["item_id"] != popular for a in answers), "weight 0 must not blend the prior in"
    deadline = time.monotonic() + 5
    while fb.prior.weight != 4.0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fb.tuner.judged == 8 and fb.prior.weight == 4.0
    ans = rank_batch(ranker, reg, [RankRequest("courses", base, 10)], ranker.max_len, "m", feedback=live)[0]
    assert ans["items"][0]["item_id"] == popular
