"""The Flower ``ClientApp``: one client = one partition of the K training users, run in a Ray actor.

Every client shares one :class:`ClientPayload` (frozen backbone, adapter settings, item text,
each client's sequences), put once into Ray's object store; an actor builds the adapter model
from it on its first message and keeps it (one per actor process). Per ``train`` message: load
the global adapter, train locally (:func:`rec.federated.local_train.train_locally`), reply with
the adapter tensors and the weights the strategy averages by.

:class:`ClientFaults` injects the failures the robustness tests and the benchmark need: a seeded
share of the sampled clients raise (or kill their actor process), and chosen partitions send a
malformed update. It is off unless a caller passes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["ClientFaults", "ClientPayload", "ClientState", "build_client_app", "cached_client_state", "client_state", "local_round",
           "PARTITION_KEY"]

PARTITION_KEY = "partition-id"  # what Flower's simulation puts in every node's node_config


@dataclass(frozen=True)
class ClientFaults:
    """Failures to inject (tests, benchmark). Decisions are seeded by (seed, round, partition).

    Attributes:
        drop_fraction: Share of all clients that fail each round (those of them sampled fail).
        corrupt: ``{partition: kind}``: kind ``nan``, ``shape`` or ``keys`` malforms that client's update.
    """

    drop_fraction: float = 0.0
    corrupt: dict[int, str] = field(default_factory=dict)
    seed: int = 0

    def drops(self, server_round: int, partition: int, num_partitions: int) -> bool:
        """Exactly ``round(drop_fraction * num_partitions)`` partitions fail per round (a seeded
        choice per round), so a round where every client is sampled loses that share for certain."""
        n_drop = int(round(self.drop_fraction * num_partitions))
        if n_drop <= 0:
            return False
        return partition in np.random.default_rng([self.seed, server_round]).permutation(num_partitions)[:n_drop]


@dataclass
class ClientPayload:
    """Everything a client needs, shipped once through the object store."""

    backbone: Any  # rec.models.backbone.Backbone (frozen)
    acfg: Any  # rec.config.AdaptConfig
    ctx: Any  # rec.adaptation.registry.AdaptContext
    text_emb: np.ndarray  # (N, text_dim)
    client_seqs: list[list[np.ndarray]]  # per partition: its users' training sequences
    max_len: int
    local: Any  # rec.federated.local_train.LocalSettings
    faults: ClientFaults | None = None


@dataclass
class ClientState:
    """A client process's model built from the payload (kept across the rounds it serves)."""

    payload: ClientPayload
    model: Any  # the prepared adapter model (PeftModel for LoRA)
    scorer: Any  # its scoring backbone
    text: Any  # torch (N, text_dim)


def client_state(payload: ClientPayload) -> ClientState:
    """Build the adapter model a client trains (``prepare_model``: the frozen backbone + a fresh adapter)."""
    import torch

    from rec.adaptation.prepare import prepare_model, scoring_backbone

    torch.set_num_threads(payload.acfg.torch_threads)
    model = prepare_model(payload.backbone, payload.acfg, ctx=payload.ctx)
    text = torch.from_numpy(np.require(payload.text_emb, np.float32, ["C", "W"]))
    return ClientState(payload, model, scoring_backbone(model), text)


_CACHE: dict[str, ClientState] = {}  # payload ref -> state: one per actor process


def cached_client_state(ref) -> ClientState:  # noqa: ANN001 - a ray.ObjectRef
    """This actor process's client state for the payload behind ``ref`` (built on first use)."""
    import ray

    key = ref.hex()
    if key not in _CACHE:
        _CACHE.clear()  # one run per actor: a new payload replaces the old one
        _CACHE[key] = client_state(ray.get(ref))
    return _CACHE[key]


def _corrupt(arrays: dict[str, np.ndarray], kind: str) -> dict[str, np.ndarray]:
    name = sorted(arrays)[0]
    out = dict(arrays)
    if kind == "nan":
        out[name] = np.full_like(arrays[name], np.nan)
    elif kind == "shape":
        out[name] = np.zeros((*arrays[name].shape[:-1], arrays[name].shape[-1] + 1), np.float32)
    else:  # keys
        out[name + ".extra"] = out.pop(name)
    return out


def local_round(state: ClientState, arrays: dict[str, np.ndarray], partition: int, server_round: int,
                mu: float = 0.0) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """One client's round, Flower-free: (its updated adapter arrays, metrics).

    Dropout and row order are seeded by ``(adapt.seed, round)`` and the partition's data only, so
    clients holding the same sequences return the same update (FedAvg of identical clients is
    that client, exactly).
    """
    from dataclasses import replace

    import torch

    from rec.federated.adapter_state import adapter_arrays, load_adapter_arrays
    from rec.federated.local_train import client_corpus, train_locally
    from rec.federated.strategy import UNIT_WEIGHT_KEY, WEIGHT_KEY

    payload = state.payload
    faults = payload.faults
    if faults is not None and faults.drops(server_round, partition, len(payload.client_seqs)):
        raise RuntimeError(f"client {partition} dropped out of round {server_round} (injected fault)")
    load_adapter_arrays(state.model, arrays)
    torch.manual_seed(payload.local.seed * 1_000_003 + server_round)
    corpus = client_corpus(payload.client_seqs[partition], payload.ctx.num_items, payload.max_len, f"client-{partition}")
    update = train_locally(state.model, state.scorer, corpus, state.text, replace(payload.local, proximal_mu=mu), round_seed=server_round,
                           sequences=payload.client_seqs[partition])
    out = adapter_arrays(state.model)
    if faults is not None and partition in faults.corrupt:
        out = _corrupt(out, faults.corrupt[partition])
    metrics = {WEIGHT_KEY: max(update.num_examples, 1), UNIT_WEIGHT_KEY: 1, "train-loss": float(np.nan_to_num(update.train_loss))}
    return out, metrics


def build_client_app(payload_ref):  # noqa: ANN001, ANN201 - ray.ObjectRef -> flwr ClientApp
    """The ClientApp every simulated SuperNode runs; its ``train`` handler calls :func:`local_round`."""
    from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        config = msg.content["config"]
        arrays = {k: a.numpy() for k, a in msg.content["arrays"].items()}
        out, metrics = local_round(cached_client_state(payload_ref), arrays, int(context.node_config[PARTITION_KEY]),
                                    int(config["server-round"]), float(config.get("proximal-mu", 0.0)))
        content = RecordDict({"arrays": ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in out.items()}),
                              "metrics": MetricRecord(metrics)})
        return Message(content=content, reply_to=msg)

    return app
