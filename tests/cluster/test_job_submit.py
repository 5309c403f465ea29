"""`rec` commands run unchanged as Ray jobs on a token-authenticated cluster (docs/cluster.md).

A real head node (`ray start --head` with the dashboard, `RAY_AUTH_MODE=token`, the venv first on
PATH as cluster/*-cluster.yaml start it) in its own process group and temp folder; jobs go in
through the `ray job submit` CLI with `--working-dir .`, as on a cluster. Never `ray stop`: that
would stop every Ray on the machine; the head's process group is ended by its id.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from bench.ray_head import stop_process_group
from tests.conftest import REPO

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BIN = Path(sys.executable).parent
START_TIMEOUT_S = 180
JOB_TIMEOUT_S = 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def head():
    """A one-CPU head with token auth; yields (dashboard address, env with the token)."""
    tmp = tempfile.mkdtemp(prefix="rjs", dir="/tmp")  # short: Ray's unix socket paths must stay short
    token = secrets.token_hex(32)
    # Every fixed default port (dashboard agent 52365, Ray client 10001, ...) may be taken by
    # another Ray on this machine: an agent that cannot bind leaves "No available agent" forever.
    ports = {
        "port": _free_port(), "dashboard-port": _free_port(), "dashboard-agent-listen-port": _free_port(),
        "dashboard-agent-grpc-port": _free_port(), "runtime-env-agent-port": _free_port(),
        "metrics-export-port": _free_port(), "ray-client-server-port": _free_port(),
    }
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token,
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_TMPDIR": tmp,
    }
    env.pop("RAY_ADDRESS", None)
    log = open(Path(tmp) / "head.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", "--num-cpus=1", "--include-dashboard=true",
         "--dashboard-host=127.0.0.1", *[f"--{k}={v}" for k, v in ports.items()],
         f"--temp-dir={tmp}", "--disable-usage-stats"],
        env=env, cwd=tmp, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    address = f"http://127.0.0.1:{ports['dashboard-port']}"
    try:
        deadline = time.time() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"ray start exited {proc.returncode}:\n{(Path(tmp) / 'head.log').read_text()[-3000:]}")
            r = subprocess.run([str(BIN / "ray"), "job", "list", "--address", address], env=env,
                               capture_output=True, text=True)
            if r.returncode == 0:
                break
            if time.time() > deadline:
                pytest.fail(f"dashboard at {address} not up after {START_TIMEOUT_S} s: {r.stderr[-2000:]}")
            time.sleep(2)
        yield address, env
    finally:
        stop_process_group(proc.pid, tmp)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _submit(address: str, env: dict, *entrypoint: str) -> subprocess.CompletedProcess:
    deadline = time.time() + START_TIMEOUT_S
    while True:
        r = subprocess.run(
            [str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", ".", "--", *entrypoint],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=JOB_TIMEOUT_S,
        )
        # The dashboard answers before its job agent is up (seconds on a busy machine): retry that only.
        if "No available agent to submit job" not in r.stderr or time.time() > deadline:
            return r
        time.sleep(2)


def test_rec_command_runs_as_a_job_with_the_token(head):
    address, env = head
    r = _submit(address, env, "rec", "data", "stats", "data.synthetic.tenants=2",
                "data.synthetic.users_per_tenant=20", "data.synthetic.items_per_tenant=20")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert "succeeded" in out
    for tenant in ("books", "courses"):  # the two synthetic tenants, printed by the job
        assert tenant in out, out[-3000:]


def test_a_bad_rec_command_fails_the_job(head):
    address, env = head
    r = _submit(address, env, "rec", "data", "stats", "train.epochz=3")
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "epochz" in out, "the one-line config error reaches the submitter"


def test_submit_without_the_token_is_refused(head):
    address, env = head
    no_token = {k: v for k, v in env.items() if k != "RAY_AUTH_TOKEN"}
    no_token["RAY_AUTH_TOKEN_PATH"] = os.devnull  # never fall back to a token in ~/.ray
    no_token["RAY_AUTH_MODE"] = "token"
    r = _submit(address, no_token, "rec", "--help")
    assert r.returncode != 0
    assert "auth" in (r.stdout + r.stderr).lower()
    wrong = {**env, "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    r = _submit(address, wrong, "rec", "--help")
    assert r.returncode != 0
    assert "auth" in (r.stdout + r.stderr).lower()
