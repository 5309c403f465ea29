"""The online item-to-item prior (rec.serving.online_transitions): counted from users' consecutive
interactions in the live log, blended for the ask's newest item, and tuned with the popularity prior."""

from __future__ import annotations

import time

import numpy as np
import pytest

from rec.serving.live_feedback import FeedbackSettings, write_feedback_settings
from rec.serving.online_transitions import OnlineTransitions
from rec.serving.prior_tuning import PROBE_KEY, PriorWeightTuner, probe_top_rows
from rec.serving.ranking import IMPRESSION_KEY, RankRequest, rank_batch

from .test_live_feedback import _wait_for, loop  # noqa: F401 - the live-loop fixture


def test_successor_counts_order_and_forget_the_least_recent_source():
    t = OnlineTransitions(10, max_sources=2)
    for a, b in [(1, 2), (1, 3), (1, 3), (2, 2), (4, 5)]:  # 2 -> 2 is a repeat, not a transition
        t.observe(a, b)
    rows, counts = t.successors(1)
    assert rows.tolist() == [3, 2] and counts.tolist() == [2.0, 1.0] and t.total == 4.0
    dense = t.dense(1)
    assert dense[3] == pytest.approx(np.log1p(2)) and dense[2] == pytest.approx(np.log1p(1)) and dense.sum() == pytest.approx(np.log1p(2) + np.log1p(1))
    t.observe(6, 7)  # a third source: the least recently updated (1) goes, and its counts leave the total
    assert t.successors(1)[0].size == 0 and t.total == 2.0 and t.successors(4)[0].tolist() == [5]
    with pytest.raises(ValueError, match="outside the catalog"):
        t.observe(0, 10)


def test_the_probe_adds_the_transition_term_only_for_pair_entries():
    rng = np.random.default_rng(0)
    z, pop, succ = rng.normal(size=50), np.zeros(50), np.zeros(50)
    succ[int(np.argmin(z))] = np.log1p(5)  # the model's worst item is the usual successor
    worst = int(np.argmin(z))
    plain, pair0, pair4 = probe_top_rows(z, pop, [1.0, (1.0, 0.0), (1.0, 4.0)], 5, successors=succ)
    assert plain.tolist() == pair0.tolist() and worst not in plain.tolist()
    assert pair4[0] == worst


def test_the_tuner_picks_the_pair_that_held_users_next_items():
    grid = [(0.5, 0.0), (0.5, 4.0)]
    tuner = PriorWeightTuner(grid, default=(0.5, 0.0), min_evidence=3, decay=1.0)
    assert tuner.weights == [[0.5, 0.0], [0.5, 4.0]]  # what probes carry (JSON lists)
    for u in range(4):
        tuner.observe_ask(f"u{u}", "a", {"weights": [[0.5, 0.0], [0.5, 4.0]], "top": [["x"], ["b"]]})
        tuner.observe_ask(f"u{u}", "b", None)
    assert tuner.entry == (0.5, 4.0) and tuner.weight == 0.5
    # a probe of the scalar grid [0.5, 0.5] is another grid: never judged against the pairs
    tuner.observe_ask("v", "a", {"weights": [0.5, 0.5], "top": [["b"], ["b"]]})
    tuner.observe_ask("v", "b", None)
    assert tuner.judged == 4


def test_settings_pair_the_grids_and_say_what_is_missing():
    s = FeedbackSettings(prior_weight_grid=[0.0, 1.0], transition_weight_grid=[0.0, 2.0])
    assert s.tuning_grid() == [(0.0, 0.0), (1.0, 0.0), (0.0, 2.0), (1.0, 2.0)] and s.learns_transitions
    assert not FeedbackSettings().learns_transitions
    with pytest.raises(ValueError, match="set prior_weight_grid too"):
        FeedbackSettings(transition_weight_grid=[0.0, 2.0])
    with pytest.raises(ValueError, match="transition_weight_grid needs >= 2 distinct"):
        FeedbackSettings(prior_weight_grid=[0.0, 1.0], transition_weight_grid=[1.0])


def _asks(ranker, reg, live, histories, users):  # noqa: ANN001, ANN202
    reqs = [RankRequest("courses", h, 10, user_id=u) for h, u in zip(histories, users)]
    return rank_batch(ranker, reg, reqs, ranker.max_len, "m", feedback=live)


@pytest.mark.parametrize("weight", [0.0, 8.0])
def test_users_who_take_b_after_a_teach_the_next_user_who_took_a(serving_world, loop, weight):  # noqa: F811
    store, ranker, reg, log, live = loop
    write_feedback_settings(store.tenant_dir("courses"), FeedbackSettings(prior_weight=0.0, transition_weight=weight,
                                                                          count_history=True))
    bundle = reg.get("courses").bundle
    fb = _wait_for(live, "courses", bundle)
    ids = bundle.item_ids.tolist()
    a = ids[0]
    first = _asks(ranker, reg, live, [(a,)], ["probe"])[0]
    b = next(i for i in ids[::-1] if i not in {x["item_id"] for x in first["items"]} | {a})  # the model ranks it low after a
    # eight users ask after taking a, then come back having taken b next: a -> b, eight times
    for hist in ([(a,)] * 8, [(a, b)] * 8):
        answers = _asks(ranker, reg, live, hist, [f"u{u}" for u in range(8)])
        log.append_unkeyed("courses", [x[IMPRESSION_KEY] for x in answers])
    deadline = time.monotonic() + 5
    while (fb.transitions is None or fb.transitions.total < 8) and time.monotonic() < deadline and weight:
        time.sleep(0.05)
    time.sleep(0.3)  # a poll or two: the weight-0 tenant learns nothing, whatever the wait
    top = _asks(ranker, reg, live, [("zz", a)], ["new"])[0]["items"][0]["item_id"]
    if weight:
        assert fb.transitions.successors(bundle.item_ids.rows_of([a])[0][0])[1].tolist() == [8.0]
        assert top == b, "eight users going a -> b did not put b first for the next user who took a"
    else:
        assert fb.transitions is None and top != b
