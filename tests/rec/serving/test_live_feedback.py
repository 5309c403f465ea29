"""Attribution and the live loop without Serve: answers carry request ids and propensities, the
log's clicks reach the next ranking through the online prior, and policies learn from the log."""

from __future__ import annotations

import time

import numpy as np
import pytest

from rec.serving.bundles import load_tenant_bundle
from rec.serving.events import EventLog
from rec.serving.live_feedback import FeedbackSettings, LiveFeedback, read_feedback_settings, write_feedback_settings
from rec.serving.ranking import IMPRESSION_KEY, RankRequest, rank_batch
from rec.serving.registry import TenantRegistry
from rec.serving.runtime import SharedRanker
from rec.serving.store import ArtifactRoot


@pytest.fixture
def loop(world_copy):
    store = ArtifactRoot(world_copy)
    ranker = SharedRanker(store.model_dir)
    reg = TenantRegistry(store, load_tenant_bundle)
    log = EventLog(store.events_dir)
    live = LiveFeedback(store.tenant_dir, log, poll_interval_s=0.1)
    yield store, ranker, reg, log, live
    live.close()


def _history(world, tenant: str, user: int = 0) -> tuple[str, ...]:
    t = world.tenants[tenant]
    return tuple(str(t.items.ids[i]) for i in t.sequence(user)[:6])


def _wait_for(live: LiveFeedback, tenant: str, bundle, timeout: float = 10.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        fb = live.get(tenant, bundle)
        if fb is not None:
            return fb
        time.sleep(0.02)
    raise AssertionError(f"live feedback for {tenant} not built within {timeout} s")


def test_a_greedy_answer_is_attributed(serving_world, loop):
    _, ranker, reg, _, _ = loop
    ans = rank_batch(ranker, reg, [RankRequest("podcasts", _history(serving_world, "podcasts"), 5, user_id="u1")],
                     ranker.max_len, "m")[0]
    assert ans["policy"] == "greedy" and len(ans["request_id"]) == 32
    assert [i["position"] for i in ans["items"]] == [1, 2, 3, 4, 5]
    assert [i["propensity"] for i in ans["items"]] == [1.0] * 5
    imp = ans[IMPRESSION_KEY]
    assert imp["request_id"] == ans["request_id"] and imp["user_id"] == "u1" and imp["kind"] == "impression"
    assert imp["items"] == [i["item_id"] for i in ans["items"]] and imp["adapter_version"] == ans["adapter_version"]


def test_clicks_in_the_log_reach_the_next_ranking_within_a_poll(serving_world, loop):
    store, ranker, reg, log, live = loop
    write_feedback_settings(store.tenant_dir("courses"), FeedbackSettings(prior_weight=2.0))
    req = RankRequest("courses", _history(serving_world, "courses"), 5)
    bundle = reg.get("courses").bundle
    _wait_for(live, "courses", bundle)
    first = rank_batch(ranker, reg, [req], ranker.max_len, "m", feedback=live)[0]
    shown = {i["item_id"] for i in first["items"]} | set(req.history)
    target = next(i for i in bundle.item_ids.tolist()[::-1] if i not in shown)  # an item the model ranks low
    t_event = time.monotonic()
    now = time.time()
    log.append("courses", [{"kind": "event", "type": "click", "item_id": target, "timestamp": now + j * 1e-3} for j in range(30)])
    while time.monotonic() - t_event < 5.0:
        ans = rank_batch(ranker, reg, [req], ranker.max_len, "m", feedback=live)[0]
        if ans["items"][0]["item_id"] == target:
            break
        time.sleep(0.02)
    reflected = time.monotonic() - t_event
    assert ans["items"][0]["item_id"] == target, "30 clicks on one item did not move it to the top"
    assert reflected <= 2.0, f"event -> next ranking took {reflected:.2f} s"


def test_asks_teach_the_prior_their_newest_history_item_once_per_user(serving_world, loop):
    store, ranker, reg, log, live = loop
    write_feedback_settings(store.tenant_dir("courses"), FeedbackSettings(prior_weight=2.0))
    bundle = reg.get("courses").bundle
    _wait_for(live, "courses", bundle)
    item = bundle.item_ids.tolist()[-1]
    row = int(bundle.item_ids.rows_of([item])[0][0])
    # three users ask with the item as their newest interaction; u1 asks twice (a refresh), and u2
    # clicked it before asking (the ask repeats the click), so the prior counts it 4 times, not 5
    asks = [RankRequest("courses", ("x", item), 3, user_id=u) for u in ("u1", "u1", "u3")]
    log.append("courses", [{"kind": "event", "type": "click", "item_id": item, "user_id": "u2", "timestamp": time.time()}])
    asks.append(RankRequest("courses", (item,), 3, user_id="u2"))
    asks.append(RankRequest("courses", (item,), 3))  # no user: counted
    answers = rank_batch(ranker, reg, asks, ranker.max_len, "m", feedback=live)
    assert all(a[IMPRESSION_KEY]["history_last"] == item for a in answers)
    log.append_unkeyed("courses", [a[IMPRESSION_KEY] for a in answers])
    deadline, count = time.monotonic() + 5, 0.0
    while count < 3.9 and time.monotonic() < deadline:
        time.sleep(0.05)
        count = live.get("courses", bundle).prior.counts(time.time())[row]
    assert count == pytest.approx(4.0, abs=1e-3)


@pytest.mark.parametrize("policy", ["epsilon", "thompson", "lints", "linucb"])
def test_a_tenant_policy_is_used_and_learns_from_logged_impressions(serving_world, loop, policy):
    store, ranker, reg, log, live = loop
    write_feedback_settings(store.tenant_dir("books"), FeedbackSettings(policy=policy, candidates=20, prior_weight=0.0))
    bundle = reg.get("books").bundle
    fb = _wait_for(live, "books", bundle)
    assert fb.settings.policy == policy
    req = RankRequest("books", _history(serving_world, "books"), 5)
    rng = np.random.default_rng(0)
    answers = [rank_batch(ranker, reg, [req], ranker.max_len, "m", feedback=live, rng=rng)[0] for _ in range(40)]
    assert {a["policy"] for a in answers} == {policy}
    props = np.array([i["propensity"] for a in answers for i in a["items"]])
    assert ((props > 0) & (props <= 1)).all()
    # log what was shown and a click on each answer's 3rd item; the state learns from it
    for a in answers:
        log.append("books", [a[IMPRESSION_KEY]])
        log.append("books", [{"kind": "event", "type": "click", "item_id": a["items"][2]["item_id"], "request_id": a["request_id"],
                              "timestamp": time.time()}])
    deadline = time.monotonic() + 5
    while fb.applied < 80 and time.monotonic() < deadline:
        time.sleep(0.05)
        fb = live.get("books", bundle) or fb
    assert fb.applied >= 80
    assert fb.state.impressions.sum() == 40 * 5 and fb.state.clicks.sum() == 40


def test_settings_are_validated_with_the_key_named(tmp_path):
    (tmp_path / "feedback.json").write_text('{"policy": "thompson", "epsilonn": 0.2}')
    with pytest.raises(ValueError, match="epsilonn"):
        read_feedback_settings(tmp_path)
    assert read_feedback_settings(tmp_path / "none").policy == "greedy"
