"""The federated adaptation recipe (``rec fed``): one tenant's adapter trained by its users' devices or shops.

setup (K-shot split: the training users become clients, the held-out users are the server's
validation/test; the frozen backbone with the method's fresh adapter) -> rounds on Flower's Ray
simulation (:mod:`rec.federated.simulation`, or under SecAgg+ with ``fed.secagg``:
:mod:`rec.federated.secagg`) -> the final global adapter evaluated and written
by ``rec.adaptation.adapt.publish_adapter``: an ordinary versioned adapter folder (same files,
manifest and checksums as ``rec adapt``), with the round history and the privacy spent under the
manifest's ``federated`` key.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rec.adaptation.adapt import AdaptResult, fewshot_corpus, publish_adapter, tenant_split_and_text
from rec.adaptation.prepare import prepare_model, scoring_backbone
from rec.adaptation.methods.lora import ENCODER_TARGETS
from rec.adaptation.registry import AdaptContext
from rec.config import PRIMARY_METRIC, AdaptConfig, EvalConfig, FedConfig, RayConfig
from rec.data.schema import Tenant
from rec.data.splits import KShotSplit
from rec.federated.accounting import PrivacyReport, default_delta, local_dp_report, privacy_report, resolve_noise
from rec.federated.adapter_state import adapter_arrays, adapter_spec, load_adapter_arrays
from rec.federated.client_app import ClientFaults, ClientPayload
from rec.federated.clients import client_partitions, clients_per_round
from rec.federated.local_train import LocalSettings
from rec.federated.secagg import SecAggPlan, run_secagg_rounds, secagg_plan
from rec.federated.simulation import SimulationOutcome, run_rounds
from rec.federated.strategy import RoundLog, build_strategy
from rec.training.checkpoint import LoadedBackbone
from rec.training.loop import evaluate_tenant

__all__ = ["FED_METHODS", "FedResult", "check_fed_config", "federated_adapt", "publish_federated"]

#: methods whose trainable tensors can be averaged across clients (docs/federated.md)
FED_METHODS = ("lora", "item-terms")
#: ``(round, server metrics or None, that round's RoundLog or None at round 0)``: progress bars report here
RoundCallback = Callable[[int, "dict[str, float] | None", "RoundLog | None"], None]


@dataclass
class FedResult:
    adapt: AdaptResult  # the final global adapter as an adaptation result (what publish_adapter writes)
    history: list[dict[str, Any]]  # one row per round (round, sampled, replies, failed, rejected, bytes_up, val metrics)
    num_clients: int
    clients_per_round: int
    adapter_bytes: int  # one full adapter upload
    privacy: PrivacyReport | None = None
    evaluations: dict[int, dict[str, float]] = field(default_factory=dict)
    local_privacy: dict[str, Any] | None = None  # example-level (epsilon, delta) of local DP-SGD, worst client
    kept_round: int | None = None  # the round whose global adapter this is (fed.keep)
    secagg: SecAggPlan | None = None  # the SecAgg+ parameters the rounds ran with (fed.secagg)

    def manifest_block(self, fcfg: FedConfig) -> dict[str, Any]:
        return {"federated": {"config": fcfg.model_dump(mode="json"), "clients": self.num_clients,
                              "clients_per_round": self.clients_per_round, "adapter_bytes": self.adapter_bytes,
                              "history": self.history, "privacy": None if self.privacy is None else self.privacy.as_dict(),
                              "local_privacy": self.local_privacy, "kept_round": self.kept_round,
                              "secagg": None if self.secagg is None else self.secagg.as_dict()}}


def check_fed_config(acfg: AdaptConfig, fcfg: FedConfig) -> None:
    """Refuse what federated adaptation cannot do, saying what to set instead.

    Raises:
        ValueError: Another method, AdaLoRA, item-terms with ID residuals, local DP-SGD on what it
            cannot train. (``fed.secagg`` with server-side DP is refused by ``FedConfig`` itself;
            what depends on the clients per round, by :func:`rec.federated.secagg.secagg_plan`.)
    """
    if acfg.method not in FED_METHODS:
        raise ValueError(f"adapt.method={acfg.method!r} cannot be federated: choose one of {list(FED_METHODS)}")
    if acfg.method == "lora" and acfg.lora.kind != "lora":
        raise ValueError("adapt.lora.kind=adalora prunes ranks per client, so updates would not average: set adapt.lora.kind=lora")
    if acfg.method == "item-terms" and acfg.item_terms.id_residual:
        raise ValueError("adapt.item_terms.id_residual needs the items seen in the pooled data, which a federated server never "
                         "sees: set adapt.item_terms.id_residual=false")
    if fcfg.local_dp and (acfg.method != "lora" or acfg.lora.train_adaptor
                          or not set(acfg.lora.target_modules) <= set(ENCODER_TARGETS)):
        raise ValueError("fed.local_dp (DP-SGD) trains encoder LoRA only: the catalog-side adaptor has no per-example gradient. Set "
                         f"adapt.method=lora adapt.lora.train_adaptor=false adapt.lora.target_modules=[{','.join(ENCODER_TARGETS)}]")


def _local_settings(acfg: AdaptConfig, fcfg: FedConfig) -> LocalSettings:
    return LocalSettings(epochs=fcfg.local_epochs, lr=acfg.lr, batch_size=acfg.batch_size, seed=acfg.seed,
                         weight_decay=acfg.weight_decay, optimizer=fcfg.local_optimizer, local_dp=fcfg.local_dp,
                         local_noise_multiplier=fcfg.local_noise_multiplier, local_max_grad_norm=fcfg.local_max_grad_norm)


def _history(rounds: list[RoundLog], evaluations: dict[int, dict[str, float]], losses: dict[int, float]) -> list[dict[str, Any]]:
    rows = []
    for r in rounds:
        row = {"round": r.round, "sampled": r.sampled, "clients": r.replies, "failed": r.failed, "rejected": r.rejected,
               "bytes_up": r.bytes_up, "wire_up": r.wire_up, "wire_down": r.wire_down, "round_s": r.round_s,
               "train_loss": losses.get(r.round)}
        row.update({f"val_{k}": v for k, v in evaluations.get(r.round, {}).items() if k in ("ndcg@10", "hr@10")})
        rows.append(row)
    return rows


def _rounds(payload: ClientPayload, initial: dict[str, np.ndarray], spec: dict, fcfg: FedConfig, sampled: int,
            noise: float | None, plan: SecAggPlan | None, ray_cfg: RayConfig, evaluate, rounds: list[RoundLog],  # noqa: ANN001
            verbose: bool) -> SimulationOutcome:
    """The rounds themselves: SecAgg+ (legacy workflow) when ``plan`` is set, else the validated Message-API strategy."""
    if plan is not None:
        return run_secagg_rounds(payload, initial, fcfg, plan, sampled, ray_cfg, evaluate, rounds, verbose)
    strategy = build_strategy(fcfg, sampled, spec, noise)
    strategy.rounds = rounds  # the caller's progress callback reads the rounds as they go
    return run_rounds(payload, initial, strategy, fcfg, ray_cfg, evaluate, verbose)


def federated_adapt(base: LoadedBackbone, tenant: Tenant, acfg: AdaptConfig, fcfg: FedConfig, eval_cfg: EvalConfig | None = None,
                    ray_cfg: RayConfig | None = None, text_emb: np.ndarray | None = None, split: KShotSplit | None = None,
                    faults: ClientFaults | None = None, on_round: RoundCallback | None = None, verbose: bool = False) -> FedResult:
    """Adapt ``base`` to ``tenant`` by federated rounds over its K training users (see module doc).

    Args:
        faults: Failures to inject into clients (tests, benchmark); ``fed.drop_fraction`` adds
            seeded crashes of that share of the sampled clients.
        on_round: Called after the initial evaluation (round 0) and after every round.

    Raises:
        ValueError: What :func:`check_fed_config` or (``fed.secagg``) :func:`rec.federated.secagg.secagg_plan`
            refuses; a text-less tenant; too few users.
    """
    check_fed_config(acfg, fcfg)
    eval_cfg, ray_cfg = eval_cfg or EvalConfig(), ray_cfg or RayConfig()
    t0 = time.perf_counter()
    split, text_emb = tenant_split_and_text(base, tenant, acfg, split, text_emb)
    max_len = base.cfg.data.max_seq_len
    server = fewshot_corpus(split, text_emb, max_len)  # only its held-out users' rows are used here
    # The server never sees the clients' data: item-terms starts from a zero bias, not the pooled popularity.
    ctx = AdaptContext(f"fewshot-rec-backbone:{base.checksum}", None, server.num_items, np.zeros(server.num_items, np.float32))
    model = prepare_model(base.model, acfg, ctx=ctx)
    model.eval()
    spec, initial = adapter_spec(model), adapter_arrays(model)
    seqs = split.train.sequences()
    parts = client_partitions(len(seqs), fcfg.client_mode, fcfg.num_silos)
    sampled = clients_per_round(len(parts), fcfg.clients_per_round, fcfg.fraction)
    rows = [sum(len(seqs[i]) >= 2 for i in p) for p in parts]  # each client's training rows (its weight)
    plan = secagg_plan(fcfg, sampled, len(parts), [max(r, 1) for r in rows]) if fcfg.secagg else None
    noise = resolve_noise(fcfg, len(parts), sampled)
    local = replace(_local_settings(acfg, fcfg), local_delta=default_delta(fcfg, len(seqs)))
    if fcfg.drop_fraction > 0:
        faults = ClientFaults(drop_fraction=fcfg.drop_fraction, seed=acfg.seed, corrupt=dict(faults.corrupt) if faults else {})
    payload = ClientPayload(base.model, acfg, ctx, np.asarray(text_emb, np.float32), [[seqs[i] for i in p] for p in parts],
                            max_len, local, faults)
    emb = torch.from_numpy(np.require(text_emb, np.float32, ["C", "W"]))
    ks = list(eval_cfg.ks_with_primary)
    rounds: list[RoundLog] = []

    def measure(which: str) -> dict[str, float]:
        return evaluate_tenant(scoring_backbone(model), server, emb, which, ks, eval_cfg.batch_size, eval_cfg.exclude_history)

    best: dict[str, Any] = {"round": None, "ndcg": -1.0, "arrays": initial}

    def evaluate(server_round: int, arrays: dict[str, np.ndarray]) -> dict[str, float] | None:
        due = server_round in (0, fcfg.rounds) or (fcfg.eval_every and server_round % fcfg.eval_every == 0)
        metrics = None
        if due:
            load_adapter_arrays(model, arrays)
            metrics = measure("valid")
            if metrics[PRIMARY_METRIC] > best["ndcg"]:
                best.update(round=server_round, ndcg=metrics[PRIMARY_METRIC], arrays={k: v.copy() for k, v in arrays.items()})
        if on_round is not None:
            on_round(server_round, metrics, rounds[-1] if server_round and rounds else None)
        return metrics

    outcome = _rounds(payload, initial, spec, fcfg, sampled, noise, plan, ray_cfg, evaluate, rounds, verbose)
    kept_round = best["round"] if fcfg.keep == "best" and best["round"] is not None else fcfg.rounds
    load_adapter_arrays(model, best["arrays"] if kept_round != fcfg.rounds else outcome.arrays)
    valid, test = measure("valid"), measure("test")
    privacy = None if noise is None else privacy_report(fcfg, noise, len(parts), sampled, [r.replies for r in outcome.rounds])
    local_privacy = local_dp_report(fcfg, rows, acfg.batch_size, fcfg.local_epochs, local.local_delta) if fcfg.local_dp else None
    result = AdaptResult(model=model, tenant=tenant.name, method=acfg.method, split=split, valid=valid, test=test,
                         adapt_s=time.perf_counter() - t0, epochs=fcfg.rounds, trainable_params=sum(int(np.prod(s)) for s in spec.values()),
                         data_hash=server.data_hash, history=[], best_epoch=kept_round - 1,
                         method_report={"popularity_floor": None} if acfg.method == "item-terms" else {})
    return FedResult(result, _history(outcome.rounds, outcome.evaluations, outcome.train_loss), len(parts), sampled,
                     sum(int(np.prod(s)) * 4 for s in spec.values()), privacy, outcome.evaluations, local_privacy,
                     kept_round, plan)


def publish_federated(res: FedResult, base: LoadedBackbone, acfg: AdaptConfig, fcfg: FedConfig, root: str | Path | None = None) -> Path:
    """Write the global adapter as the tenant's next version (``rec adapt``'s writer), with the federated record."""
    return publish_adapter(res.adapt, base, acfg, root, extra=res.manifest_block(fcfg))
