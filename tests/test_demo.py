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
    out = tmp_path / "demo"
    saved = json.loads((out / "report.json").read_text())
    assert saved["onboarding"]["onboarding_s"] == pytest.approx(ob["onboarding_s"])
    assert (out / "report.md").read_text().count("|") > 20
    assert (out / "timings.png").stat().st_size > 1000 and (out / "latency.png").stat().st_size > 1000
