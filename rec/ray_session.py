"""Connect to Ray the way every recipe needs: reuse, connect, or start a local one and clean up."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rec.config import RayConfig

__all__ = ["ray_session", "LOCAL_RUNTIME_ENV"]

# Train V2 blocks each ray.train.report() for its health-check interval (2 s by default; 0.2 s took a
# tiny 2-worker run from 57 s to 17 s, measured on the 2-core dev machine); per-epoch reports on small local runs spend most of their time there otherwise.
# OMP_WAIT_POLICY=PASSIVE: OpenMP threads that spin-wait between ops make 2-thread torch ~5x slower
# when the cores are shared with other Ray workers (measured on the 2-core dev machine).
LOCAL_RUNTIME_ENV = {
    "env_vars": {
        "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
        "RAY_USAGE_STATS_ENABLED": "0",
        "OMP_WAIT_POLICY": "PASSIVE",
    }
}


@contextlib.contextmanager
def ray_session(cfg: RayConfig) -> Iterator[None]:
    """Use the running Ray if there is one, else connect to ``cfg.address`` or start a local Ray.

    Only a Ray started (or connected) here is shut down on exit.
    """
    import ray

    if ray.is_initialized():
        yield
        return
    if cfg.address:
        ray.init(address=cfg.address, log_to_driver=True)
    else:
        # log_to_driver: rank 0's per-epoch progress lines reach the user's terminal.
        ray.init(num_cpus=cfg.num_cpus, include_dashboard=False, runtime_env=LOCAL_RUNTIME_ENV, log_to_driver=True)
    try:
        yield
    finally:
        ray.shutdown()
