"""Tests that drive the in-process ingress harness (``serve_apps.api.serve_in_process``), each in a
fresh interpreter.

Known issue: a second in-process app in one Python process hangs in ``@serve.batch`` (the harness
borrows Serve's internal replica context; the first app's batch queue outlives it). Until that is
fixed, every test below that builds its own app runs in its own ``pytest`` process; the contract
fuzz (tests/serve_apps/test_contract.py) is the only in-process app of the main session.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

NODES = [
    "inproc_disk_and_quota.py::test_a_full_events_disk_is_503_acknowledges_nothing_lost_and_recovers",
    "inproc_disk_and_quota.py::test_token_bucket_refills_at_its_rate",
    "inproc_disk_and_quota.py::test_a_flooding_tenant_gets_429_and_the_others_are_served",
    "inproc_disk_and_quota.py::test_the_proxy_quota_answers_the_flood_before_the_app_sees_it",
    "inproc_isolation.py",  # one module-scoped app shared by its tests
]


@pytest.mark.slow
@pytest.mark.parametrize("node", NODES)
def test_in_process_suite(node):
    done = subprocess.run([sys.executable, "-m", "pytest", str(HERE / node), "-q", "-p", "no:cacheprovider", "-W", "ignore",
                           "--timeout", "300"], cwd=REPO, capture_output=True, text=True, timeout=900)
    tail = (done.stdout + done.stderr)[-4000:]
    assert done.returncode == 0, tail
    assert " passed" in done.stdout and " failed" not in done.stdout, tail
