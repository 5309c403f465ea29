"""The demo's feedback stage: the zero-shot tenant learning from what its users do, live.

Protocol (issue 18's closed loop, small): the zero-shot tenant's ``feedback.json`` sets a policy
(``demo.feedback_policy``: greedy by default, i.e. the model's order) with the online prior on.
Then its users' real interactions are replayed in time order over HTTP against the running app:
at each step the user's history so far asks for the top 10 (with its ``user_id``); when the
user's true next item is among them, the client posts a click quoting the answer's
``request_id``; otherwise (``demo.feedback_organic``) it posts the item as a purchase made
elsewhere, quoting no answer (the service has logged the impression itself either way). The
replay runs in ``demo.feedback_windows`` windows of ``demo.feedback_window_events`` steps. Each
window's served HR@10 is set against the static zero-shot model's on the same steps (windows
hold different users, so only that ratio, the lift, compares across windows). Then one
re-adaptation round (:func:`rec.feedback.readapt.readapt_tenant`: the log read with Ray Data on
the demo's Ray, LoRA trained on the logged events, the validation gate, publish) and, once the
version it leaves live answers over HTTP, one more window against it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from rec.config import RecConfig
from rec.data.schema import Tenant

__all__ = ["feedback_story", "replay_steps", "report_lines"]


def replay_steps(tenant: Tenant, count: int) -> list[tuple[int, list[str], str]]:
    """The first ``count`` steps ``(user row, history ids, true next id)`` of the tenant's users in
    time order: every interaction after a user's first is one step."""
    steps = []
    ids = tenant.items.ids
    for u in range(tenant.num_users):
        lo = tenant.offsets[u]
        seq = tenant.sequence(u)
        steps += [(int(tenant.timestamps[lo + t]), u, t) for t in range(1, len(seq))]
    steps.sort()
    out = []
    for _, u, t in steps[:count]:
        seq = [str(ids[i]) for i in tenant.sequence(u)]
        out.append((u, seq[:t], seq[t]))
    return out


def _replay(base: str, tenant: str, steps: list[tuple[int, list[str], str]], max_history: int,
            organic: bool) -> tuple[float, int]:
    """Ask for the top 10 at each step; click when the true next item is shown, else (``organic``)
    post it as a purchase made elsewhere, quoting no answer. Returns (HR@10, clicks)."""
    from rec.demo import _post

    hits = 0
    for u, hist, nxt in steps:
        user = f"user-{u}"
        ans, _ = _post(f"{base}/v1/tenants/{tenant}/recommendations",
                       {"history": hist[-max_history:], "k": 10, "exclude_history": False, "user_id": user})
        event = {"type": "click", "item_id": nxt, "request_id": ans["request_id"], "user_id": user}
        if nxt in [it["item_id"] for it in ans["items"]]:
            hits += 1
        elif organic:
            event = {"type": "purchase", "item_id": nxt, "user_id": user}
        else:
            continue
        _post(f"{base}/v1/tenants/{tenant}/events", {"events": [event]})
    return hits / max(len(steps), 1), hits


def _static_hr(loaded, tenant: Tenant, emb: np.ndarray, steps: list[tuple[int, list[str], str]]) -> float:  # noqa: ANN001
    """HR@10 the zero-shot model, never updated (no prior, no policy, no re-adaptation), would have
    had on the same steps: the served model's fp32 torch twin, full ranking, history not excluded."""
    from rec.feedback.gate import GateSet, gate_ranks
    from rec.metrics.ranking import hit_rate_at_k

    row = {str(i): r for r, i in enumerate(tenant.items.ids)}
    gate = GateSet(users=np.array([u for u, _, _ in steps]), histories=[np.array([row[i] for i in h]) for _, h, _ in steps],
                   targets=np.array([row[n] for _, _, n in steps], np.int64))
    return hit_rate_at_k(gate_ranks(loaded.model, emb, gate, loaded.cfg.data.max_seq_len), 10)


def _wait_for(base: str, tenant: str, hist: list[str], check: Any, what: str, timeout_s: float = 60.0) -> dict[str, Any]:
    """Ask until an answer satisfies ``check`` (a replica picks changes up on its next poll)."""
    from rec.demo import _post

    t0 = time.perf_counter()
    while True:
        ans, _ = _post(f"{base}/v1/tenants/{tenant}/recommendations", {"history": hist, "k": 10})
        if check(ans):
            return ans
        if time.perf_counter() - t0 > timeout_s:
            raise RuntimeError(f"feedback stage: {what} was not served within {timeout_s:g} s")
        time.sleep(0.1)


def feedback_story(cfg: RecConfig, loaded, tenant: Tenant, root: Path, base: str) -> dict[str, Any]:  # noqa: ANN001
    """Run the stage (module doc); returns the report section (windows, readapt round, versions).

    Raises:
        RuntimeError: the tenant has too few interactions for the windows, or a change was not served in time.
    """
    from rec.feedback.gate import TooFewUsers
    from rec.feedback.readapt import readapt_tenant
    from rec.serving.live_feedback import FeedbackSettings, write_feedback_settings
    from rec.serving.store import ArtifactRoot
    from rec.text import encode_items
    from serve_apps.args import Limits

    d = cfg.demo
    n_win, size = d.feedback_windows, d.feedback_window_events
    steps = replay_steps(tenant, (n_win + 1) * size)
    if len(steps) < (n_win + 1) * size:
        raise RuntimeError(f"feedback stage: {tenant.name} has {len(steps)} replayable interactions, needs "
                           f"{(n_win + 1) * size}: lower demo.feedback_window_events or raise data.synthetic.users_per_tenant")
    store = ArtifactRoot(root)
    before = store.current_version(tenant.name)
    write_feedback_settings(store.tenant_dir(tenant.name), FeedbackSettings(policy=d.feedback_policy))
    _wait_for(base, tenant.name, steps[0][1], lambda a: a["policy"] == d.feedback_policy, f"policy {d.feedback_policy!r}")
    max_history = Limits().max_history
    emb = encode_items(list(tenant.items.text), loaded.cfg.text)

    def window(w: int, version: int) -> dict[str, Any]:
        t0, part = time.perf_counter(), steps[w * size:(w + 1) * size]
        hr, hits = _replay(base, tenant.name, part, max_history, d.feedback_organic)
        static = _static_hr(loaded, tenant, emb, part)
        return {"window": w + 1, "events": size, "version": f"v{version}", "hr@10": hr, "static_hr@10": static,
                "lift": hr / static if static else float("nan"), "clicks": hits, "seconds": round(time.perf_counter() - t0, 2)}

    windows = [window(w, before) for w in range(n_win)]
    clicks = sum(x["clicks"] for x in windows)
    rcfg = cfg.feedback.readapt.model_copy(update={"holdout_users": d.feedback_holdout_users, "min_train_users": 5})
    t0 = time.perf_counter()
    try:
        round_ = readapt_tenant(root, loaded, tenant, emb, rcfg, cfg.adapt, cfg.eval)
    except TooFewUsers as e:  # a smaller demo config: the story goes on without the round
        round_ = {"decision": "skipped", "method": None, "events_used": 0, "users": 0, "gate": None,
                  "reason": f"{e} (in the demo: raise demo.feedback_window_events or lower demo.feedback_holdout_users)"}
    after = store.current_version(tenant.name)
    _wait_for(base, tenant.name, steps[0][1], lambda a: a["adapter_version"] == f"v{after}", f"v{after}")
    readapt_live_s = time.perf_counter() - t0
    windows.append(window(n_win, after))
    return {
        "tenant": tenant.name, "policy": d.feedback_policy, "prior_weight": FeedbackSettings().prior_weight,
        "organic": d.feedback_organic,
        "windows": windows, "clicks_before_readapt": clicks, "version_before": f"v{before}", "version_after": f"v{after}",
        "readapt": {k: round_.get(k) for k in ("decision", "method", "events_read", "events_used", "users", "adapt_s", "seconds",
                                               "reason", "version")} | {"gate": round_.get("gate")},
        "readapt_to_live_s": readapt_live_s,
    }


def report_lines(story: dict[str, Any]) -> list[str]:
    """The report.md section."""
    w = story["windows"]
    first, last_before, after = w[0], w[-2], w[-1]
    r = story["readapt"]
    outcome = (f"published {story['version_after']}" if r["decision"] == "published"
               else f"{r['decision']}, {story['version_before']} stays ({r.get('reason')})")
    gate = "" if r["gate"] is None else f"; gate NDCG@10 new {r['gate']['new']:.4f} vs current {r['gate']['current']:.4f}"
    lines = ["", "## Learning from feedback", "",
             f"Tenant **{story['tenant']}**, served zero-shot, with policy `{story['policy']}` and the online prior "
             f"(weight {story['prior_weight']:g}); its users' interactions replayed in time order over HTTP "
             "(top 10 per step; a click posted when the true next item was shown"
             + ("; otherwise that item posted as a purchase made elsewhere" if story["organic"] else "") + ").", "",
             "HR@10 is compared, window by window, with the static zero-shot model on the same steps "
             "(never updated: no prior, no policy, no re-adaptation; its fp32 twin offline).", "",
             f"- HR@10 over static, first window -> last window before re-adaptation: **{first['lift']:.2f}x -> "
             f"{last_before['lift']:.2f}x** ({first['hr@10']:.3f} vs {first['static_hr@10']:.3f} -> {last_before['hr@10']:.3f} "
             f"vs {last_before['static_hr@10']:.3f}; {story['clicks_before_readapt']} clicks logged)",
             f"- re-adaptation round ({r['method']}, {r['events_used']} logged events, {r['users']} users): {outcome}"
             f"{gate}; {story['readapt_to_live_s']:.1f} s to live",
             f"- the next window, served by {after['version']}: HR@10 {after['hr@10']:.3f} vs static {after['static_hr@10']:.3f} "
             f"(**{after['lift']:.2f}x**)", "",
             "| window | events | version | HR@10 | static HR@10 | lift | clicks |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {x['window']} | {x['events']} | {x['version']} | {x['hr@10']:.3f} | {x['static_hr@10']:.3f} | "
              f"{x['lift']:.2f}x | {x['clicks']} |" for x in w]
    return lines

