"""Head-node failure with GCS fault tolerance on an external Redis (docs/serving.md, "Head-node failure").

A real ``redis-server`` (free port, password, no snapshots) and a private two-node Ray cluster
started the way cluster/*-cluster.yaml start theirs (``RAY_REDIS_ADDRESS`` + ``--redis-password``
on the head, 0 CPUs there; the replicas on a worker node whose reconnect timeout outlasts the head's
restart). bench/gcs_kill.py SIGKILLs the GCS under a steady HTTP load, the head fails as a whole
(``ray start --block``), and a supervisor thread starts it again with the same command, as kubelet
or systemd would (again, if a restarted head fails to come up). It runs as a subprocess: it connects to that cluster with ``ray.init``, which this test
session's own local Ray (tests/conftest.py) would forbid in-process.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import shutil
import socket
import subprocess
import sys

import pytest

from serve_apps.direct_ingress import DIRECT_INGRESS_ENV
from tests.conftest import REPO

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("redis-server") is None,
                       reason="needs redis-server on PATH (Debian/Ubuntu: apt-get install redis-server)"),
]


def _end_what_it_started(processes_file) -> None:  # noqa: ANN001
    """Its nodes and Redis, if Ray ended the scenario's process before its own clean-up ran."""
    from bench.ray_head import end_processes_naming

    if not processes_file.exists():
        return
    started = json.loads(processes_file.read_text())
    for folder in started["node_folders"]:
        end_processes_naming(folder, grace_s=0)
    with contextlib.suppress(ProcessLookupError):
        os.kill(started["redis_pid"], signal.SIGKILL)


def test_redis_server_requires_its_password_and_is_gone_after():
    from bench.gcs_ft import _redis_answers, redis_server

    with redis_server() as redis:
        assert _redis_answers(redis.port, redis.password)
        assert not _redis_answers(redis.port, "wrong-" + redis.password)
        pid, port = redis.pid, redis.port
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


def test_serving_continues_through_a_gcs_kill_and_the_cluster_recovers(world_copy, tmp_path):
    out, started = tmp_path / "gcs_kill.json", tmp_path / "processes.json"
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1"}
    # Serve's default path (proxy -> replica), as the launcher configs run it: tests/conftest.py turns
    # the throughput-optimized mode on for this session, and with it the driver's handle call to the
    # replica of this two-node cluster never answered (3 runs of 3, ~3 min each; fine in 4 of 4 without).
    for key in ("RAY_ADDRESS", *DIRECT_INGRESS_ENV, "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"):
        env.pop(key, None)
    try:
        proc = subprocess.run([sys.executable, "-m", "bench.gcs_kill", "--root", str(world_copy), "--out", str(out),
                               "--down-s", "3", "--threads", "2", "--processes-file", str(started)],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    finally:
        _end_what_it_started(started)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    r = json.loads(out.read_text())
    print(json.dumps(r, indent=1))  # the measurements, with -s

    # The head failed as a whole when its GCS died, and was down until restarted.
    assert r["head_exit_code"] == 1, "ray start --block ends the head when the GCS dies"
    assert r["head_down_s"] < r["gcs_back_s"] <= r["serve_status_running_s"] <= r["new_deployment_s"]
    # (a) The data plane (worker proxy -> replica) needs no GCS: every request of the outage answered 200.
    outage = r["during_outage"]
    assert outage["requests"] >= 20, f"too little traffic during the outage to show anything: {outage}"
    assert outage["errors"] == 0 and outage["5xx"] == 0, outage
    # (b) The control plane came back with the cluster's state from Redis: the same replica process
    # (not redeployed), the detached actor with its state, the worker node under its id; and it can
    # create actors again (a new deployment answered through the worker's proxy).
    assert r["replica_pid_unchanged"]
    assert r["counter_after"] == 2
    assert r["worker_node_alive"]
    assert r["serve_status_running_s"] < 120, r
