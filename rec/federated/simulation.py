"""Federated rounds on Flower's simulation engine with the Ray backend (clients = Ray actors).

The ``ServerApp`` runs in this process (a thread of ``run_simulation``): it starts the strategy
from the initial adapter, evaluates the global adapter with ``evaluate`` after the rounds it is
asked to, and leaves the final arrays in a :class:`SimulationOutcome`; the Grid it is handed is
wrapped in a :class:`rec.federated.wire.CountingGrid` (bytes and seconds per round).
:func:`simulate` (Ray session, payload, ``run_simulation``) is shared with the SecAgg+ path
(:mod:`rec.federated.secagg`). Flower's Ray backend ends
with ``ray.shutdown()``, so run this in a process of its own: the ``rec fed`` CLI (a Ray job
entrypoint), a benchmark row, or a test's child process.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from rec.config import FedConfig, RayConfig
from rec.federated.client_app import ClientPayload, build_client_app
from rec.federated.strategy import RoundLog, ValidatingStrategy
from rec.federated.wire import CountingGrid

__all__ = ["SimulationOutcome", "record_wire", "run_rounds", "simulate"]

#: ``(round, arrays) -> metrics or None``: the server-side evaluation of the global adapter
Evaluate = Callable[[int, dict[str, np.ndarray]], "dict[str, float] | None"]


@dataclass
class SimulationOutcome:
    arrays: dict[str, np.ndarray]  # the final global adapter
    rounds: list[RoundLog]
    evaluations: dict[int, dict[str, float]] = field(default_factory=dict)  # round -> server-side metrics (0 = start)
    train_loss: dict[int, float] = field(default_factory=dict)  # round -> mean client training loss


def _server_app(strategy: ValidatingStrategy, initial: dict[str, np.ndarray], fcfg: FedConfig, evaluate: Evaluate | None,
                out: dict):  # noqa: ANN202 - flwr ServerApp
    from flwr.app import Array, ArrayRecord, ConfigRecord, Context, MetricRecord
    from flwr.serverapp import Grid, ServerApp

    app = ServerApp()

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if evaluate is None:
            return None
        metrics = evaluate(server_round, {k: a.numpy() for k, a in arrays.items()})
        return None if metrics is None else MetricRecord(metrics)

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        grid = out["grid"] = CountingGrid(grid)
        result = strategy.start(grid=grid, initial_arrays=ArrayRecord({k: Array(v) for k, v in initial.items()}),
                                num_rounds=fcfg.rounds, timeout=fcfg.round_timeout_s, train_config=ConfigRecord(),
                                evaluate_fn=evaluate_fn)
        out["result"] = result

    return app


def record_wire(grid: CountingGrid, rounds: list[RoundLog]) -> None:
    """Copy the bytes and seconds ``grid`` counted for each round into its :class:`RoundLog`."""
    for r in rounds:
        r.wire_down, r.wire_up, r.round_s = grid.down.get(r.round, 0), grid.up.get(r.round, 0), grid.seconds(r.round)


def simulate(payload: ClientPayload, apps: Callable, fcfg: FedConfig, ray_cfg: RayConfig, verbose: bool = False) -> None:
    """Run ``apps(payload_ref) -> (ServerApp, ClientApp)`` over ``len(payload.client_seqs)`` simulated SuperNodes on Ray.

    Uses the running Ray, else connects to ``ray_cfg.address`` or starts a local one
    (``ray_cfg.num_cpus``); the payload goes once into the object store; Flower shuts Ray down at the end.
    """
    import ray
    from flwr.simulation import run_simulation

    from rec.ray_session import LOCAL_RUNTIME_ENV

    if not ray.is_initialized():
        if ray_cfg.address:
            ray.init(address=ray_cfg.address, log_to_driver=verbose)
        else:
            ray.init(num_cpus=ray_cfg.num_cpus, include_dashboard=False, runtime_env=LOCAL_RUNTIME_ENV, log_to_driver=verbose)
    if not verbose:
        logging.getLogger("flwr").setLevel(logging.WARNING)
    server_app, client_app = apps(ray.put(payload))
    # max_restarts: an actor whose process died is restarted for the next client instead of
    # failing every later message it is handed (Flower returns it to the pool either way).
    backend = {"client_resources": {"num_cpus": fcfg.client_cpus, "num_gpus": 0.0, "max_restarts": -1}, "init_args": {}}
    try:
        run_simulation(server_app=server_app, client_app=client_app, num_supernodes=len(payload.client_seqs), backend_name="ray",
                       backend_config=backend, verbose_logging=verbose)
    finally:
        if ray.is_initialized():
            ray.shutdown()


def run_rounds(payload: ClientPayload, initial: dict[str, np.ndarray], strategy: ValidatingStrategy, fcfg: FedConfig,
               ray_cfg: RayConfig, evaluate: Evaluate | None = None, verbose: bool = False) -> SimulationOutcome:
    """Run ``fcfg.rounds`` rounds of ``strategy`` on Flower's Ray simulation (:func:`simulate`).

    Raises:
        RuntimeError: The ServerApp failed (the cause is chained).
    """
    out: dict = {}
    simulate(payload, lambda ref: (_server_app(strategy, initial, fcfg, evaluate, out), build_client_app(ref)), fcfg, ray_cfg, verbose)
    result = out.get("result")
    if result is None:
        raise RuntimeError("the federated server finished without a result (see the Flower log above)")
    record_wire(out["grid"], strategy.rounds)
    arrays = {k: a.numpy() for k, a in result.arrays.items()} if len(result.arrays) else dict(initial)
    evaluations = {r: dict(m) for r, m in result.evaluate_metrics_serverapp.items()}
    losses = {r: float(m["train-loss"]) for r, m in result.train_metrics_clientapp.items() if "train-loss" in m}
    return SimulationOutcome(arrays, strategy.rounds, evaluations, losses)
