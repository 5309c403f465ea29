"""Shared fixtures: one local Ray per test session, the shared datasets, tiny configs."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from serve_apps.direct_ingress import DIRECT_INGRESS_ENV

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Serve runs the way the shipped cluster configs run it: throughput-optimized, each ingress replica
# also serving HTTP on its own port (serve_apps/direct_ingress.py); the proxy keeps working too. Replicas
# drain 1 s, not 30 s, when a test deletes an app (no load balancer needs the time here).
for _k, _v in {**DIRECT_INGRESS_ENV, "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1"}.items():
    os.environ.setdefault(_k, _v)

# Session fixtures used by several packages are defined once, as plugins (see tests/fixtures).
pytest_plugins = ["tests.fixtures.backbone", "tests.fixtures.serving"]

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO.parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def datasets_dir() -> Path:
    """``../shared/datasets`` beside the repository (CI has it); skip with the reason when absent."""
    if not SHARED_DATASETS.is_dir():
        pytest.skip(f"real datasets not found at {SHARED_DATASETS} (clone the repo beside ../shared)")
    return SHARED_DATASETS


@pytest.fixture(scope="session")
def text_cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One text-embedding cache for the session, so each title is encoded once."""
    return str(tmp_path_factory.mktemp("text-cache"))


METRICS_PORT_ENV = "FEWSHOT_TEST_METRICS_PORT"


@pytest.fixture(scope="session")
def ray_local():
    """A local 2-CPU Ray for the whole session (Ray on 2 cores: start once, always shut down)."""
    import ray

    from rec.ray_session import LOCAL_RUNTIME_ENV

    if ray.is_initialized():
        yield ray
        return
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    os.environ[METRICS_PORT_ENV] = str(sock.getsockname()[1])  # where tests scrape Ray's Prometheus metrics
    sock.close()
    ray.init(num_cpus=2, include_dashboard=False, runtime_env=LOCAL_RUNTIME_ENV, log_to_driver=False,
             _metrics_export_port=int(os.environ[METRICS_PORT_ENV]))
    try:
        yield ray
    finally:
        ray.shutdown()


def tiny_overrides(out: Path, text_cache: str, **extra: object) -> list[str]:
    """Overrides for a small, fast synthetic run (seconds per epoch)."""
    ov = {
        "data.synthetic.tenants": 2,
        "data.synthetic.users_per_tenant": 120,
        "data.synthetic.items_per_tenant": 80,
        "data.max_seq_len": 20,
        "model.max_len": 20,
        "model.d_model": 32,
        "model.dropout": 0.1,
        "train.epochs": 3,
        "train.batch_size": 64,
        "train.lr": 0.003,
        "train.output_dir": str(out),
        "text.cache_dir": text_cache,
        **extra,
    }
    return [f"{k}={v}" for k, v in ov.items()]
