"""The server's aggregation: Flower's FedAvg/FedProx/FedAdam, optionally under client-level DP,
behind :class:`ValidatingStrategy`, which drops failed and malformed replies before averaging.

Order (outermost first): validate -> DP clip + noise (``fed.client_dp``) -> FedAvg/FedProx/FedAdam.
Flower's DP wrappers skip a whole round when any reply carries an error, and FedAvg refuses a
round whose replies disagree on tensor names; dropping those replies first keeps the round
going on the clients that did answer (a crashed client costs its update, not the round).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import (
    DifferentialPrivacyServerSideAdaptiveClipping,
    DifferentialPrivacyServerSideFixedClipping,
    FedAdam,
    FedAvg,
    FedProx,
    Strategy,
)

from rec.config import FedConfig
from rec.federated.adapter_state import AdapterSpec, payload_bytes, update_problem

__all__ = ["RoundLog", "ValidatingStrategy", "build_strategy", "WEIGHT_KEY", "UNIT_WEIGHT_KEY"]

log = logging.getLogger("rec.federated")

#: metric keys every client reply carries: its training rows, and 1 (equal weights, what client-level DP assumes)
WEIGHT_KEY, UNIT_WEIGHT_KEY = "num-examples", "unit-weight"


@dataclass
class RoundLog:
    """What the server saw in one round (``history`` of the run and the adapter manifest)."""

    round: int
    sampled: int = 0
    replies: int = 0  # aggregated
    failed: int = 0  # error replies (crashed or raising clients)
    rejected: int = 0  # malformed updates dropped by validation
    bytes_up: int | None = 0  # tensor bytes of the aggregated replies (None with SecAgg+: the server never receives them)
    wire_up: int = 0  # serialized bytes of every reply of the round (rec.federated.wire.CountingGrid)
    wire_down: int = 0  # serialized bytes of every message sent to clients in the round
    round_s: float | None = None  # seconds from the round's first message to its last reply
    rejections: list[str] = field(default_factory=list)


class ValidatingStrategy(Strategy):
    """Wraps a Flower strategy: only well-formed updates of the clients that answered are aggregated.

    A reply is dropped when it carries an error (the client raised or its actor died) or its
    arrays fail :func:`rec.federated.adapter_state.update_problem` (other names, shapes, dtype,
    NaN/inf); each rejection is logged at ERROR with the node and the reason. A round in which no
    reply survives keeps the global adapter unchanged.
    """

    def __init__(self, inner: Strategy, spec: AdapterSpec, arrays_key: str = "arrays") -> None:
        self.inner, self.spec, self.arrays_key = inner, spec, arrays_key
        self.rounds: list[RoundLog] = []

    def summary(self) -> None:
        self.inner.summary()

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        messages = list(self.inner.configure_train(server_round, arrays, config, grid))
        for msg in messages:  # tag the round, as Flower's legacy workflows do (rec.federated.wire counts bytes per round)
            msg.metadata.group_id = str(server_round)
        self.rounds.append(RoundLog(server_round, sampled=len(messages)))
        return messages

    def _problem(self, msg: Message) -> str | None:
        records = msg.content.array_records
        if list(records) != [self.arrays_key]:
            return f"expected one ArrayRecord {self.arrays_key!r}, got {list(records)}"
        if len(msg.content.metric_records) != 1:
            return "expected one MetricRecord with the client's weight"
        return update_problem({k: a.numpy() for k, a in records[self.arrays_key].items()}, self.spec)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        rec = self.rounds[-1] if self.rounds and self.rounds[-1].round == server_round else RoundLog(server_round)
        good = []
        for msg in replies:
            if msg.has_error():
                rec.failed += 1
                log.warning("round %d: client node %d failed: %s", server_round, msg.metadata.src_node_id, msg.error.reason[:200])
                continue
            problem = self._problem(msg)
            if problem:
                rec.rejected += 1
                rec.rejections.append(problem)
                log.error("round %d: rejected the update of client node %d, not averaged in: %s",
                          server_round, msg.metadata.src_node_id, problem)
                continue
            rec.bytes_up += payload_bytes({k: a.numpy() for k, a in msg.content[self.arrays_key].items()})
            good.append(msg)
        rec.replies = len(good)
        if not good:
            log.error("round %d: no usable update (%d failed, %d rejected): the global adapter stays as it was",
                      server_round, rec.failed, rec.rejected)
            return None, None
        return self.inner.aggregate_train(server_round, good)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        return self.inner.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return self.inner.aggregate_evaluate(server_round, replies)


def build_strategy(fcfg: FedConfig, sampled: int, spec: AdapterSpec, noise_multiplier: float | None = None) -> ValidatingStrategy:
    """The validated (and, with ``fed.client_dp``, private) strategy sampling ``sampled`` clients a round.

    ``noise_multiplier``: the resolved client-level noise (``fed.noise_multiplier`` or solved from
    ``fed.target_epsilon``); required when ``fed.client_dp`` is on.
    """
    # A tiny non-zero fraction + min_train_nodes = exactly `sampled` clients per round (Flower
    # samples max(int(n * fraction), min_train_nodes) without replacement).
    common = dict(fraction_train=1e-9, min_train_nodes=sampled, min_available_nodes=sampled, fraction_evaluate=0.0,
                  weighted_by_key=UNIT_WEIGHT_KEY if fcfg.client_dp != "none" else WEIGHT_KEY)
    if fcfg.strategy == "fedprox":
        inner: Strategy = FedProx(proximal_mu=fcfg.proximal_mu, **common)
    elif fcfg.strategy == "fedadam":
        inner = FedAdam(eta=fcfg.server_lr, **common)
    else:
        inner = FedAvg(**common)
    if fcfg.client_dp == "fixed":
        inner = DifferentialPrivacyServerSideFixedClipping(inner, noise_multiplier, fcfg.clipping_norm, sampled)
    elif fcfg.client_dp == "adaptive":
        inner = DifferentialPrivacyServerSideAdaptiveClipping(inner, noise_multiplier, sampled,
                                                              initial_clipping_norm=fcfg.clipping_norm)
    return ValidatingStrategy(inner, spec)
