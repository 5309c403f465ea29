"""The README's main command, end to end on a small setting: rec.demo.run_demo on the session Ray."""

from __future__ import annotations

import json
import socket

import pytest

from rec.config import load_config
from tests.conftest import tiny_overrides


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.integration
def test_demo_runs_every_stage_and_serves_every_tenant(ray_local, tmp_path, text_cache):
    from rec.demo import STAGES, run_demo

    cfg = load_config(None, tiny_overrides(tmp_path / "unused", text_cache, **{
        "train.epochs": 2, "train.num_workers": 1,
        "demo.output_dir": str(tmp_path / "demo"), "demo.source_tenants": 2, "demo.tuned_tenants": 1,
        "demo.http_port": _free_port(), "demo.requests_per_tenant": 10, "demo.onboard_k_users": 32,
        "demo.feedback_windows": 2, "demo.feedback_window_events": 60, "demo.feedback_holdout_users": 5,
    }))
    report = run_demo(cfg)

    assert list(report.stage_s) == list(STAGES)
    rows = {r["tenant"]: r for r in report.tenants}
    tuned, zero_shot, onboarded = report.tenants[0], report.tenants[1], report.tenants[2]
    assert len(rows) == 3
    # the tuned tenant answers from its published adapter, the zero-shot one from the base model
    assert not tuned["zero_shot"] and tuned["version"] == "v1" and tuned["served_as"] in ("lora", "prompt", "head")
    assert zero_shot["zero_shot"] and zero_shot["served_as"] == "zero-shot"
    # served recommendations are better than a uniformly random top-10 (10/80 items = 0.125)
    assert tuned["served_hr@10"] > 0.125 and zero_shot["served_hr@10"] > 0.125
    # onboarding: raw CSV -> LoRA -> published -> the first live answer came from that version
    assert onboarded["served_as"] == "lora" and not onboarded["zero_shot"] and onboarded["version"] == "v1"
    ob = report.onboarding
    assert ob["onboarding_s"] >= ob["adapt_s"] + ob["publish_s"] > 0
    # feedback: the zero-shot tenant replayed over HTTP with the policy on, then one readapt round from its log
    fb = report.feedback
    assert fb["tenant"] == zero_shot["tenant"] and fb["policy"] == cfg.demo.feedback_policy
    windows = fb["windows"]
    assert [w["window"] for w in windows] == [1, 2, 3] and all(w["events"] == 60 for w in windows)
    for w in windows:
        assert 0 <= w["hr@10"] <= 1 and 0 < w["static_hr@10"] <= 1 and w["clicks"] == round(w["hr@10"] * 60)
        assert w["lift"] == pytest.approx(w["hr@10"] / w["static_hr@10"])
    assert fb["clicks_before_readapt"] == windows[0]["clicks"] + windows[1]["clicks"]
    rnd = fb["readapt"]
    assert rnd["events_read"] == 120 and fb["version_before"] == "v1" == windows[0]["version"] == windows[1]["version"]
    published = rnd["decision"] == "published"
    assert fb["version_after"] == windows[2]["version"] == ("v2" if published else "v1")
    assert published == (rnd["gate"]["new"] > rnd["gate"]["current"] + rnd["gate"]["min_gain"])
    out = tmp_path / "demo"
    saved = json.loads((out / "report.json").read_text())
    assert saved["onboarding"]["onboarding_s"] == pytest.approx(ob["onboarding_s"])
    assert saved["feedback"]["windows"][2]["hr@10"] == pytest.approx(windows[2]["hr@10"])
    md = (out / "report.md").read_text()
    assert md.count("|") > 20 and "## Learning from feedback" in md
    for w in windows:
        assert f"| {w['window']} | 60 | {w['version']} | {w['hr@10']:.3f} | {w['static_hr@10']:.3f} | {w['lift']:.2f}x |" in md
    assert (out / "timings.png").stat().st_size > 1000 and (out / "latency.png").stat().st_size > 1000
