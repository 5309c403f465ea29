"""`rec readapt-trigger --once` submits a real `rec readapt` Ray job (Jobs SDK) that publishes a version.

The head is the token-authenticated one of tests/cluster/test_job_submit.py (its own process group
and temp folder); the artifact root is a private copy of the session's serving world with a
replayed event log.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from rec.feedback.replay import replay_interactions
from rec.feedback.rounds import read_records
from rec.serving.store import ArtifactRoot
from rec.training.checkpoint import export_backbone
from tests.cluster.test_job_submit import BIN, JOB_TIMEOUT_S, head  # noqa: F401 - the module-scoped head fixture

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_trigger_submits_a_readapt_job_that_publishes(head, world_copy, serving_world, small_backbone, tmp_path):  # noqa: F811
    address, env = head
    b = small_backbone
    ckpt = export_backbone(tmp_path / "checkpoint", b.model.state_dict(), b.cfg, b.tenants, {}, b.manifest.get("text_model"))
    tenant = serving_world.tenants["podcasts"]
    replay_interactions(world_copy, tenant, list(range(tenant.num_users)), 1_767_225_600.0, version="v2")
    overrides = ["data.synthetic.tenants=3", "adapt.epochs=2", "feedback.readapt.holdout_users=20",
                 "feedback.readapt.min_gain=-1.0", "feedback.readapt.min_events=10", "feedback.readapt.job_num_cpus=0.5"]
    r = subprocess.run([sys.executable, "-m", "rec.cli", "readapt-trigger", "--once", "--root", str(world_copy),
                        "--backbone", str(ckpt), "--address", address, *overrides],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = {line.split(":", 1)[0]: line for line in r.stdout.splitlines()}
    assert "submitted readapt-podcasts-" in lines["podcasts"], r.stdout
    assert "not due" in lines["courses"] and "not due" in lines["books"], "no events, no job"
    job = lines["podcasts"].split("submitted ", 1)[1].split()[0]
    deadline = time.time() + JOB_TIMEOUT_S
    while not read_records(world_copy, "podcasts") and time.time() < deadline:
        status = subprocess.run([str(BIN / "ray"), "job", "status", "--address", address, job], env=env,
                                capture_output=True, text=True).stdout
        if "FAILED" in status or "STOPPED" in status:
            break
        time.sleep(3)
    logs = subprocess.run([str(BIN / "ray"), "job", "logs", "--address", address, job], env=env, capture_output=True, text=True)
    records = read_records(world_copy, "podcasts")
    assert records, f"the job recorded no round:\n{logs.stdout[-4000:]}{logs.stderr[-2000:]}"
    assert records[-1]["decision"] == "published" and ArtifactRoot(world_copy).current_version("podcasts") == 3
    assert "published v3" in logs.stdout
