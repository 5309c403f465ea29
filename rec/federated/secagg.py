"""Secure aggregation (``fed.secagg``): rounds through Flower's SecAgg+ protocol.

Flower 1.42 runs SecAgg+ only in its legacy workflow: a ServerApp whose main builds a
``LegacyContext`` around a legacy ``flwr.server.strategy`` (FedAvg, FedProx, FedAdam: the same
aggregations as the Message-API ones) and runs ``DefaultWorkflow(fit_workflow=SecAggPlusWorkflow)``,
and a ClientApp of a legacy ``NumPyClient`` behind ``secaggplus_mod``. The client trains with
:func:`rec.federated.client_app.local_round`, the very step the plain path runs.

Per round (four exchanges): setup (public keys) -> share keys (encrypted Shamir shares of each
client's mask seed and key, to its neighbours) -> collect masked vectors (the client trains, then
uploads ``[weight, weight * adapter]`` quantized to ``fed.secagg_quantization_range`` levels over
``[-clipping_range, clipping_range]``, plus pairwise and private masks mod 2^32) -> unmask (the
survivors' shares remove the masks; a client that dropped after sharing its keys has its pairwise
masks rebuilt from ``reconstruction_threshold`` shares). The server only ever holds the sum: the
weighted average of the adapters, within the quantization step (:meth:`SecAggPlan.tolerance`).

What the server gives up: it cannot check single updates (``ValidatingStrategy``'s NaN/shape
check), so each client runs that check on its own update before masking and refuses to send a
bad one (it then counts as a dropped client); a malicious client could still poison the sum.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from rec.config import FedConfig, RayConfig
from rec.federated.adapter_state import AdapterSpec, update_problem
from rec.federated.client_app import PARTITION_KEY, ClientPayload, cached_client_state, local_round
from rec.federated.simulation import Evaluate, SimulationOutcome, record_wire, simulate
from rec.federated.strategy import WEIGHT_KEY, RoundLog
from rec.federated.wire import CountingGrid

__all__ = ["SECAGG_MODULUS", "SecAggPlan", "run_secagg_rounds", "secagg_plan"]

log = logging.getLogger("rec.federated")

SECAGG_MODULUS = 2**32  # SecAggPlusWorkflow's default modulus_range: masks and sums live mod this


@dataclass(frozen=True)
class SecAggPlan:
    """The SecAgg+ parameters of one run (``fed.secagg_*``, with the sampled count resolved)."""

    num_shares: int | float
    reconstruction_threshold: int | float
    clipping_range: float
    quantization_range: int
    max_weight: float
    shares_per_client: int  # neighbourhood size Flower resolves for `sampled` clients
    threshold: int  # shares needed to unmask (likewise resolved)

    @property
    def step(self) -> float:
        """One quantization level: ``2 * clipping_range / quantization_range``."""
        return 2.0 * self.clipping_range / self.quantization_range

    def tolerance(self, min_weight: float) -> float:
        """Bound on ``|secure average - exact average|`` per value when every client weighs >= ``min_weight``.

        Each client quantizes ``(w_i / max_weight) * x_i`` with stochastic rounding (error < one
        step), the server divides the exact integer sum by ``sum_i w_i / max_weight``: the error is
        below ``step * max_weight / min_weight`` (weights are quantized too, but equal weights
        quantize equally and unequal ones move by < 1 / (quantization_range * w_i / max_weight)).
        """
        return self.step * self.max_weight / max(min_weight, 1e-12)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "protocol": "SecAgg+ (flwr.server.workflow.SecAggPlusWorkflow)", "modulus": SECAGG_MODULUS}


def _resolved_counts(num_shares: int | float, threshold: int | float, sampled: int) -> tuple[int, int]:
    """What ``SecAggPlusWorkflow.setup_stage`` makes of the two settings for ``sampled`` clients."""
    if isinstance(num_shares, float):
        shares = round(num_shares * sampled)
        shares = shares + 1 if shares < sampled and shares % 2 == 0 else shares
        shares = sampled if shares <= 2 else shares
    else:
        shares = num_shares + 1 if num_shares != sampled and num_shares % 2 == 0 else num_shares
    return shares, (max(round(threshold * shares), 2) if isinstance(threshold, float) else threshold)


def secagg_plan(fcfg: FedConfig, sampled: int, num_partitions: int, client_weights: list[int]) -> SecAggPlan:
    """The run's SecAgg+ parameters, refusing what the protocol cannot run.

    Args:
        sampled: Clients per round.
        num_partitions: Clients in all (``fed.drop_fraction`` drops a share of them).
        client_weights: Every client's weight (training rows); the largest is ``max_weight`` when
            ``fed.secagg_max_weight`` is null.

    Raises:
        ValueError: Fewer than 3 clients per round, more shares than clients, a quantization range
            whose sum would overflow the modulus, or ``fed.drop_fraction`` above what the threshold survives.
    """
    if sampled < 3:
        raise ValueError(f"fed.secagg needs >= 3 clients per round (with 2, each learns the other's update from the sum), got "
                         f"{sampled}: raise fed.clients_per_round or fed.fraction")
    if isinstance(fcfg.secagg_num_shares, int) and fcfg.secagg_num_shares > sampled:
        raise ValueError(f"fed.secagg_num_shares={fcfg.secagg_num_shares} > {sampled} clients per round: lower it or use a share (1.0)")
    if sampled * fcfg.secagg_quantization_range >= SECAGG_MODULUS:
        raise ValueError(f"fed.secagg: {sampled} clients x fed.secagg_quantization_range={fcfg.secagg_quantization_range} overflow "
                         f"the 2^32 mask modulus: set fed.secagg_quantization_range <= {SECAGG_MODULUS // (sampled + 1)}")
    shares, threshold = _resolved_counts(fcfg.secagg_num_shares, fcfg.secagg_reconstruction_threshold, sampled)
    dropped = min(int(round(fcfg.drop_fraction * num_partitions)), sampled)
    if shares - dropped < threshold:
        raise ValueError(f"fed.drop_fraction={fcfg.drop_fraction} can drop {dropped} of a neighbourhood of {shares}, leaving fewer than "
                         f"the {threshold} SecAgg+ needs to unmask: lower fed.drop_fraction or fed.secagg_reconstruction_threshold")
    max_weight = fcfg.secagg_max_weight if fcfg.secagg_max_weight is not None else float(max(client_weights, default=1))
    return SecAggPlan(fcfg.secagg_num_shares, fcfg.secagg_reconstruction_threshold, fcfg.secagg_clipping_range,
                      fcfg.secagg_quantization_range, max_weight, shares, threshold)


def _refusal(arrays: dict[str, np.ndarray], spec: AdapterSpec, clipping_range: float) -> str | None:
    """Why a client must not mask and send this update: malformed, or outside the quantization range (it would clip)."""
    problem = update_problem(arrays, spec)
    if problem is None:
        peak = max((float(np.abs(a).max()) for a in arrays.values() if a.size), default=0.0)
        if peak > clipping_range:
            problem = f"a value of magnitude {peak:.3g} exceeds fed.secagg_clipping_range={clipping_range}: raise it"
    return problem


def build_secagg_client_app(payload_ref, names: list[str], spec: AdapterSpec, plan: SecAggPlan):  # noqa: ANN001, ANN201
    """The ClientApp of the SecAgg+ path: a NumPyClient around :func:`local_round`, behind ``secaggplus_mod``."""
    from flwr.client import ClientApp, NumPyClient
    from flwr.client.mod import secaggplus_mod

    class SecAggClient(NumPyClient):
        def __init__(self, partition: int) -> None:
            self.partition = partition

        def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> tuple[list[np.ndarray], int, dict[str, Any]]:
            arrays = dict(zip(names, parameters, strict=True))
            out, metrics = local_round(cached_client_state(payload_ref), arrays, self.partition, int(config["server-round"]),
                                       float(config.get("proximal_mu", 0.0)))
            problem = _refusal(out, spec, plan.clipping_range)
            if problem:  # the server cannot inspect a masked update: the client refuses to send a bad one
                raise ValueError(f"client {self.partition} refused to send its round-{config['server-round']} update: {problem}")
            # No per-client metrics (a training loss says something about one client's data); the
            # weight travels in clear, as SecAgg+ needs it, capped at max_weight.
            return [np.ascontiguousarray(out[n], np.float32) for n in names], int(min(metrics[WEIGHT_KEY], plan.max_weight)), {}

    def client_fn(context) -> Any:  # noqa: ANN001 - flwr Context
        return SecAggClient(int(context.node_config[PARTITION_KEY])).to_client()

    return ClientApp(client_fn=client_fn, mods=[secaggplus_mod])


@dataclass
class _Progress:
    """What the legacy strategy reports back: round logs, server-side metrics, the latest global adapter."""

    arrays: list[np.ndarray]
    rounds: list[RoundLog]
    evaluations: dict[int, dict[str, float]] = field(default_factory=dict)


def _legacy_strategy(fcfg: FedConfig, sampled: int, names: list[str], progress: _Progress, evaluate: Evaluate | None):  # noqa: ANN202
    """Flower's legacy FedAvg/FedProx/FedAdam (what SecAgg+ drives), recording each round into ``progress``."""
    from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server.strategy import FedAdam, FedAvg, FedProx

    def evaluate_fn(server_round: int, ndarrays: list[np.ndarray], config: dict) -> tuple[float, dict] | None:
        metrics = None if evaluate is None else evaluate(server_round, dict(zip(names, ndarrays, strict=True)))
        if metrics is None:
            return None
        progress.evaluations[server_round] = dict(metrics)
        return 0.0, dict(metrics)  # a loss is required by the legacy API; the metrics are what rec uses

    kinds = {"fedavg": (FedAvg, {}), "fedprox": (FedProx, {"proximal_mu": fcfg.proximal_mu}), "fedadam": (FedAdam, {"eta": fcfg.server_lr})}
    inner, extra = kinds[fcfg.strategy]

    class Recorded(inner):  # the same legacy strategy, with its rounds logged into `progress`
        def configure_fit(self, server_round, parameters, client_manager):  # noqa: ANN001, ANN202
            instructions = super().configure_fit(server_round, parameters, client_manager)
            # failed = all until aggregate_fit runs: a round SecAgg+ abandons (too few survivors) aggregates nobody
            progress.rounds.append(RoundLog(server_round, sampled=len(instructions), failed=len(instructions), bytes_up=None))
            return instructions

        def aggregate_fit(self, server_round, results, failures):  # noqa: ANN001, ANN202
            rec = progress.rounds[-1]
            # SecAggPlusWorkflow lists a client failing in the masked-vector stage twice: count the missing clients instead
            rec.replies, rec.failed = len(results), rec.sampled - len(results)
            for reason in sorted({str(f)[:200] for f in failures}):
                log.warning("round %d: a client dropped out of secure aggregation: %s", server_round, reason)
            params, metrics = super().aggregate_fit(server_round, results, failures)
            if params is not None:  # SecAgg+ dequantizes to float64; the adapter is float32
                progress.arrays = [np.asarray(a, np.float32) for a in parameters_to_ndarrays(params)]
                params = ndarrays_to_parameters(progress.arrays)
            return params, metrics

    # Exactly `sampled` clients a round, as build_strategy does (Flower samples max(int(n * fraction), min_fit_clients)).
    return Recorded(fraction_fit=1e-9, min_fit_clients=sampled, min_available_clients=sampled, fraction_evaluate=0.0,
                    evaluate_fn=evaluate_fn, on_fit_config_fn=lambda r: {"server-round": r}, accept_failures=True,
                    initial_parameters=ndarrays_to_parameters(progress.arrays), **extra)


def _server_app(fcfg: FedConfig, plan: SecAggPlan, strategy, grid_out: dict):  # noqa: ANN001, ANN202 - flwr ServerApp
    from flwr.server import LegacyContext, ServerApp, ServerConfig
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

    app = ServerApp()

    @app.main()
    def main(grid, context) -> None:  # noqa: ANN001 - flwr Grid, Context
        counting = grid_out["grid"] = CountingGrid(grid)
        legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=fcfg.rounds), strategy=strategy)
        secure = SecAggPlusWorkflow(num_shares=plan.num_shares, reconstruction_threshold=plan.reconstruction_threshold,
                                    max_weight=plan.max_weight, clipping_range=plan.clipping_range,
                                    quantization_range=plan.quantization_range, modulus_range=SECAGG_MODULUS,
                                    timeout=fcfg.round_timeout_s)
        DefaultWorkflow(fit_workflow=secure)(counting, legacy)

    return app


def run_secagg_rounds(payload: ClientPayload, initial: dict[str, np.ndarray], fcfg: FedConfig, plan: SecAggPlan, sampled: int,
                      ray_cfg: RayConfig, evaluate: Evaluate | None = None, rounds: list[RoundLog] | None = None,
                      verbose: bool = False) -> SimulationOutcome:
    """:func:`rec.federated.simulation.run_rounds` under SecAgg+: same clients, same outcome, masked uploads.

    Args:
        rounds: Filled with one :class:`RoundLog` per round as the rounds go (``failed`` = clients
            that dropped after the setup; ``rejected`` is always 0: the server cannot see single updates).
    """
    names = list(initial)
    progress = _Progress([np.asarray(initial[n], np.float32) for n in names], rounds if rounds is not None else [])
    strategy = _legacy_strategy(fcfg, sampled, names, progress, evaluate)
    grid_out: dict = {}

    def apps(payload_ref):  # noqa: ANN001, ANN202
        spec = {n: tuple(np.shape(initial[n])) for n in names}
        return _server_app(fcfg, plan, strategy, grid_out), build_secagg_client_app(payload_ref, names, spec, plan)

    simulate(payload, apps, fcfg, ray_cfg, verbose)
    if "grid" not in grid_out or len(progress.rounds) < fcfg.rounds:
        raise RuntimeError(f"secure aggregation ran {len(progress.rounds)} of {fcfg.rounds} rounds (see the Flower log above)")
    record_wire(grid_out["grid"], progress.rounds)
    return SimulationOutcome(dict(zip(names, progress.arrays, strict=True)), progress.rounds, progress.evaluations, {})

