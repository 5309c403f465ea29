"""The readapt trigger's decisions, the CTR guardrail and the `rec readapt` CLI, on a real artifact root."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rec.cli import build_parser, main
from rec.config import GuardrailConfig, ReadaptConfig
from rec.feedback.guardrail import check_guardrail, ctr_by_version
from rec.feedback.replay import replay_interactions
from rec.feedback.rounds import append_record, read_records
from rec.feedback.trigger import decide, interaction_count, readapt_entrypoint, trigger_pass
from rec.serving.events import EventLog
from rec.serving.store import ArtifactRoot
from rec.training.checkpoint import export_backbone

NOW = 1_767_225_600.0
REPO = Path(__file__).resolve().parents[3]


def _impressions(root, tenant: str, version: str, n: int, ctr: float, seed: int, start: float) -> None:
    """``n`` answers of ``version``, a share ``ctr`` of them clicked (clicks quote the request id)."""
    rng = np.random.default_rng(seed)
    now = [start]
    log = EventLog(ArtifactRoot(root).events_dir, clock=lambda: now[0])
    clicked = set(rng.choice(n, int(round(ctr * n)), replace=False).tolist())
    for i in range(n):
        rid = f"{version}-{seed}-{i}"
        recs = [{"kind": "impression", "request_id": rid, "items": ["a", "b"], "adapter_version": version, "user_id": f"u{i}",
                 "timestamp": now[0], "received_unix": now[0]}]
        if i in clicked:
            recs.append({"kind": "event", "type": "click", "item_id": "a", "request_id": rid, "received_unix": now[0]})
        log.append_unkeyed(tenant, recs)
        now[0] += 1.0


def test_guardrail_rolls_back_a_logged_ctr_drop(world_copy):
    store = ArtifactRoot(world_copy)
    assert store.current_version("podcasts") == 2
    _impressions(world_copy, "podcasts", "v1", 400, 0.30, seed=1, start=NOW)
    _impressions(world_copy, "podcasts", "v2", 400, 0.10, seed=2, start=NOW + 1000)
    records = EventLog(store.events_dir).read("podcasts")
    stats = ctr_by_version(records)
    assert (stats[1].impressions, stats[1].clicked, stats[2].clicked) == (400, 120, 40)
    # not enough impressions: no judgement
    d = check_guardrail(world_copy, "podcasts", 2, records, GuardrailConfig(margin=0.05, min_impressions=500))
    assert not d.rolled_back and "too few impressions" in d.reason and store.current_version("podcasts") == 2
    # a drop within the margin is tolerated
    d = check_guardrail(world_copy, "podcasts", 2, records, GuardrailConfig(margin=0.25, min_impressions=300))
    assert not d.rolled_back and "within" in d.reason
    d = check_guardrail(world_copy, "podcasts", 2, records, GuardrailConfig(margin=0.05, min_impressions=300))
    assert d.rolled_back and store.current_version("podcasts") == 1
    (rec,) = read_records(world_copy, "podcasts", "guardrail")
    assert rec["decision"] == "rolled_back" and rec["from_version"] == 2 and rec["version"] == 1
    assert rec["ctr"] == {"v2": pytest.approx(0.1), "v1": pytest.approx(0.3)}
    # now v1 is live and nothing older was served before it: the guardrail never rolls further or forward
    d = check_guardrail(world_copy, "podcasts", 1, records, GuardrailConfig(margin=0.0, min_impressions=1))
    assert not d.rolled_back and store.current_version("podcasts") == 1


def test_guardrail_keeps_a_version_that_clicks_as_well(world_copy):
    _impressions(world_copy, "podcasts", "v1", 300, 0.20, seed=3, start=NOW)
    _impressions(world_copy, "podcasts", "v2", 300, 0.22, seed=4, start=NOW + 1000)
    records = EventLog(ArtifactRoot(world_copy).events_dir).read("podcasts")
    d = check_guardrail(world_copy, "podcasts", 2, records, GuardrailConfig(margin=0.0, min_impressions=100))
    assert not d.rolled_back and ArtifactRoot(world_copy).current_version("podcasts") == 2


def test_trigger_decides_on_events_time_and_running_jobs(world_copy, serving_world):
    root, tenant = world_copy, serving_world.tenants["podcasts"]
    cfg = ReadaptConfig(min_events=50, every_events=100, every_minutes=30)
    never = lambda _sid: False  # noqa: E731
    assert not decide(root, "podcasts", 49, cfg, NOW, never).due
    d = decide(root, "podcasts", 50, cfg, NOW, never)
    assert d.due and "first round" in d.reason
    append_record(root, "podcasts", {"kind": "round", "decision": "kept", "events_read": 500})
    finished = read_records(root, "podcasts")[-1]["finished_unix"]
    assert not decide(root, "podcasts", 599, cfg, finished + 60, never).due, "99 new events, 1 minute"
    assert decide(root, "podcasts", 600, cfg, finished + 60, never).due, "every_events"
    assert decide(root, "podcasts", 501, cfg, finished + 31 * 60, never).due, "every_minutes with a new event"
    assert not decide(root, "podcasts", 500, cfg, finished + 31 * 60, never).due, "nothing new: no round"
    # a pass submits once per due tenant, remembers it, and does not submit again while that job runs
    books = serving_world.tenants["books"]
    written = replay_interactions(root, books, list(range(20)), NOW, version="v1")
    submitted: list[str] = []
    running: set[str] = set()

    def submit(t: str) -> str:
        submitted.append(t)
        running.add(f"job-{len(submitted)}")
        return f"job-{len(submitted)}"

    cfg = ReadaptConfig(min_events=10, every_events=1)
    first = {d.tenant: (d, sid) for d, sid, _ in trigger_pass(root, cfg, submit, running.__contains__, now=finished + 3600)}
    assert set(first) == {"books", "courses", "podcasts"}
    assert first["books"][1] == "job-1" and first["books"][0].total_events == written
    assert first["courses"][1] is None and "min_events" in first["courses"][0].reason, "no events, no round"
    assert first["podcasts"][1] is None, "no new events since its last round"
    again = {d.tenant: (d, sid) for d, sid, _ in trigger_pass(root, cfg, submit, running.__contains__, now=finished + 3601)}
    assert again["books"][1] is None and "still running" in again["books"][0].reason
    # the job ended without a round record (killed mid-round): resubmitted once, then its events are not counted again
    running.clear()
    later = {d.tenant: (d, sid) for d, sid, _ in trigger_pass(root, cfg, submit, running.__contains__, now=finished + 3602)}
    assert later["books"][1] == "job-2" and later["books"][0].resubmit and "1/1" in later["books"][0].reason
    running.clear()
    last = {d.tenant: (d, sid) for d, sid, _ in trigger_pass(root, cfg, submit, running.__contains__, now=finished + 3603)}
    assert last["books"][1] is None and submitted == ["books", "books"], "resubmit_attempts=1: one resubmission"
    assert interaction_count(EventLog(ArtifactRoot(root).events_dir).read("books")) == written
    # a round that did record resets the attempts: the next lost job is resubmitted again
    append_record(root, "books", {"kind": "round", "decision": "kept", "events_read": written})
    replay_interactions(root, books, list(range(20, 24)), NOW + 10, version="v1")
    nxt = {d.tenant: sid for d, sid, _ in trigger_pass(root, cfg, submit, running.__contains__, now=finished + 7200)}
    running.clear()
    assert nxt["books"] == "job-3"
    again = {d.tenant: (d, sid) for d, sid, _ in trigger_pass(root, cfg, submit, running.__contains__, now=finished + 7201)}
    assert again["books"][1] == "job-4" and again["books"][0].resubmit
    off = ReadaptConfig(min_events=10, every_events=1, resubmit_attempts=0)
    assert not decide(root, "books", written + 4, off, finished + 7202, running.__contains__).due


def test_readapt_entrypoint_is_a_valid_rec_command():
    cmd = readapt_entrypoint("podcasts", "/mnt/shared/serving", "/mnt/shared/ckpt", "cfg.yaml", ["feedback.readapt.min_gain=0.01"])
    argv = shlex.split(cmd)
    assert argv[0] == "rec"
    args = build_parser().parse_args(argv[1:])
    assert (args.command, args.tenant, args.root, args.backbone, args.address) == (
        "readapt", "podcasts", "/mnt/shared/serving", "/mnt/shared/ckpt", "auto")
    assert args.config == "cfg.yaml" and args.overrides == ["feedback.readapt.min_gain=0.01"]


@pytest.fixture(scope="module")
def backbone_ckpt(small_backbone, tmp_path_factory):
    b = small_backbone
    return export_backbone(tmp_path_factory.mktemp("readapt-bb") / "checkpoint", b.model.state_dict(), b.cfg, b.tenants, {},
                           b.manifest.get("text_model"))


def _cli(root, ckpt, *extra):
    return main(["readapt", "--tenant", "podcasts", "--root", str(root), "--backbone", str(ckpt), "--json",
                 "data.synthetic.tenants=3", "feedback.readapt.holdout_users=20", "adapt.epochs=2", *extra])


def test_cli_readapt_rounds_and_one_line_errors(ray_local, world_copy, serving_world, backbone_ckpt, capsys):
    assert _cli(world_copy, backbone_ckpt) == 2
    assert "no event log" in capsys.readouterr().err
    tenant = serving_world.tenants["podcasts"]
    replay_interactions(world_copy, tenant, list(range(tenant.num_users)), NOW, version="v2")
    assert _cli(world_copy, backbone_ckpt, "feedback.readapt.min_gain=1.0") == 0
    out = capsys.readouterr().out
    assert "kept v2" in out
    rec = json.loads(out[out.index("{"):])
    assert rec["decision"] == "kept" and ArtifactRoot(world_copy).current_version("podcasts") == 2
    assert _cli(world_copy, backbone_ckpt, "feedback.readapt.holdout_users=100000") == 2
    assert "wait for more events" in capsys.readouterr().err
    assert _cli(world_copy, backbone_ckpt, "feedback.readapt.min_gain=-1.0") == 0
    assert "published v3" in capsys.readouterr().out and ArtifactRoot(world_copy).current_version("podcasts") == 3
    assert [r["decision"] for r in read_records(world_copy, "podcasts")] == ["kept", "published"]


def test_every_decision_counts_in_the_readapt_metric(ray_local, tmp_path):
    """``ray_fewshot_readapt_rounds_total{tenant,decision}``: what the Grafana dashboard charts."""
    import os
    import time
    import urllib.request

    from tests.conftest import METRICS_PORT_ENV

    append_record(tmp_path, "metric-probe", {"kind": "round", "decision": "kept"})
    append_record(tmp_path, "metric-probe", {"kind": "guardrail", "decision": "rolled_back"})
    with pytest.raises(ValueError, match="decision"):
        append_record(tmp_path, "metric-probe", {"kind": "round", "decision": "maybe"})
    url = f"http://127.0.0.1:{os.environ[METRICS_PORT_ENV]}/metrics"

    def series() -> set[str]:
        body = urllib.request.urlopen(url, timeout=5).read().decode()
        return {d for line in body.splitlines() if line.startswith("ray_fewshot_readapt_rounds_total{")
                and 'tenant="metric-probe"' in line for d in ("kept", "rolled_back") if f'decision="{d}"' in line}

    deadline, seen = time.time() + 60, set()
    while time.time() < deadline and seen != {"kept", "rolled_back"}:  # Ray's agent exports every few seconds
        seen = series()
        time.sleep(1)
    assert seen == {"kept", "rolled_back"}


def _readapt_process(cmd: str, address: str, log) -> subprocess.Popen:  # noqa: ANN001
    """What a submitted job runs (``readapt_entrypoint``'s command), as a process on this session's Ray."""
    argv = [sys.executable, "-m", "rec.cli", *shlex.split(cmd)[1:]]
    argv[argv.index("--address") + 1] = address
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0"}
    return subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


@pytest.mark.slow
@pytest.mark.integration  # it SIGKILLs a real `rec readapt` process mid-round
def test_a_killed_round_is_resubmitted_and_publishes_exactly_once(ray_local, world_copy, serving_world, backbone_ckpt, tmp_path):
    tenant = serving_world.tenants["podcasts"]
    replay_interactions(world_copy, tenant, list(range(tenant.num_users)), NOW, version="v2")
    store = ArtifactRoot(world_copy)
    versions, live = store.versions("podcasts"), store.current_version("podcasts")
    address = ray_local.get_runtime_context().gcs_address
    overrides = ["data.synthetic.tenants=3", "feedback.readapt.holdout_users=20", "adapt.epochs=2", "feedback.readapt.min_gain=-1.0"]
    procs: list[subprocess.Popen] = []
    log = open(tmp_path / "readapt.log", "w")

    def submit(t: str) -> str:
        procs.append(_readapt_process(readapt_entrypoint(t, world_copy, backbone_ckpt, None, overrides), address, log))
        return str(len(procs) - 1)

    def is_running(sid: str) -> bool:
        return procs[int(sid)].poll() is None

    cfg = ReadaptConfig(min_events=10, every_events=10**6, min_gain=-1.0, holdout_users=20)
    try:
        due = {d.tenant: sid for d, sid, _ in trigger_pass(world_copy, cfg, submit, is_running)}
        assert due["podcasts"] == "0" and len(procs) == 1, due  # podcasts only: the others have no new events
        time.sleep(4.0)  # past the start: the process is loading or training, long before its record
        assert procs[0].poll() is None, (tmp_path / "readapt.log").read_text()[-2000:]
        os.kill(procs[0].pid, signal.SIGKILL)
        procs[0].wait(30)
        assert read_records(world_copy, "podcasts", "round") == [], "a killed round leaves no record"
        assert (store.versions("podcasts"), store.current_version("podcasts")) == (versions, live)
        assert not [p for p in store.tenant_dir("podcasts").iterdir() if p.name.startswith(".staging")]

        again = {d.tenant: (d, sid) for d, sid, _ in trigger_pass(world_copy, cfg, submit, is_running)}
        decision, sid = again["podcasts"]
        assert sid == "1" and decision.resubmit, decision.reason
        assert procs[1].wait(120) == 0, (tmp_path / "readapt.log").read_text()[-3000:]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(30)
        log.close()
    (rec,) = read_records(world_copy, "podcasts", "round")
    assert rec["decision"] == "published" and store.versions("podcasts") == [*versions, rec["version"]]
    assert store.current_version("podcasts") == rec["version"]
    last = {d.tenant: (d, sid) for d, sid, _ in trigger_pass(world_copy, cfg, submit, is_running)}
    assert last["podcasts"][1] is None and len(procs) == 2, "a recorded round is not submitted again"
