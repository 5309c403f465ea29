"""Federated runs for the tests, each in a process of its own (Flower's Ray backend ends with
``ray.shutdown()``, and the test session keeps one Ray of its own).

Usage: ``python fed_scenarios.py SCENARIO BACKBONE_DIR OUT_DIR``; writes ``OUT_DIR/result.json``
(and ``arrays.npz`` where arrays are compared).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from rec.adaptation.methods.lora import ENCODER_TARGETS
from rec.config import AdaptConfig, FedConfig, RayConfig
from rec.data.synthetic import generate_tenants
from rec.training.checkpoint import load_backbone

RAY = RayConfig(num_cpus=2)
ACFG = dict(method="lora", k_users=12, lr=5e-3, batch_size=16, seed=0, torch_threads=1)


def _tenant(base):  # noqa: ANN001, ANN202
    return generate_tenants(base.cfg.data.synthetic.model_copy(update={"tenants": 3}))[2]


def identical_clients(base, out: Path) -> dict:  # noqa: ANN001
    """3 clients holding the same user's sequence, one FedAvg round, vs that client trained alone."""
    from rec.adaptation.prepare import prepare_model
    from rec.adaptation.registry import AdaptContext
    from rec.federated.adapter_state import adapter_arrays, adapter_spec
    from rec.federated.client_app import ClientPayload, client_state, local_round
    from rec.federated.federate import _local_settings
    from rec.federated.simulation import run_rounds
    from rec.federated.strategy import build_strategy
    from rec.text import encode_items

    tenant = _tenant(base)
    acfg, fcfg = AdaptConfig(**ACFG), FedConfig(rounds=1, clients_per_round=3, client_cpus=1.0, eval_every=0)
    text = encode_items(list(tenant.items.text), base.cfg.text)
    ctx = AdaptContext("test", None, tenant.num_items, np.zeros(tenant.num_items, np.float32))
    model = prepare_model(base.model, acfg, ctx=ctx)
    initial = adapter_arrays(model)
    seq = tenant.sequence(0)
    payload = ClientPayload(base.model, acfg, ctx, text, [[seq]] * 3, base.cfg.data.max_seq_len, _local_settings(acfg, fcfg))
    alone, _ = local_round(client_state(payload), initial, partition=0, server_round=1)
    outcome = run_rounds(payload, initial, build_strategy(fcfg, 3, adapter_spec(model)), fcfg, RAY)
    np.savez(out / "arrays.npz", **{f"fed/{k}": v for k, v in outcome.arrays.items()}, **{f"alone/{k}": v for k, v in alone.items()},
             **{f"init/{k}": v for k, v in initial.items()})
    return {"rounds": [r.__dict__ for r in outcome.rounds]}


def secagg_vs_plain(base, out: Path) -> dict:  # noqa: ANN001
    """rec fed's recipe, one FedAvg round of the same 4 clients (4 users), plain and under SecAgg+ (published)."""
    fcfg = FedConfig(rounds=1, clients_per_round=4, client_cpus=0.5, eval_every=0, keep="last", secagg=True)
    secure = _run(base, out / "secagg", fcfg, publish=True, k_users=4)
    plain = _run(base, out / "plain", fcfg.model_copy(update={"secagg": False}), k_users=4)
    return {"secagg": secure, "plain": plain}


def secagg_dropout(base, out: Path) -> dict:  # noqa: ANN001
    """2 SecAgg+ rounds of 4 clients (4 users), one of them crashing each round while it trains (after the key
    exchange); the global adapter of every round, and what the survivors' plain average would be from the same start."""
    from rec.adaptation.prepare import prepare_model
    from rec.adaptation.registry import AdaptContext
    from rec.federated.adapter_state import adapter_arrays
    from rec.federated.client_app import ClientFaults, ClientPayload, client_state, local_round
    from rec.federated.federate import _local_settings
    from rec.federated.secagg import run_secagg_rounds, secagg_plan
    from rec.text import encode_items

    tenant = _tenant(base)
    acfg = AdaptConfig(**ACFG)
    fcfg = FedConfig(rounds=2, clients_per_round=4, client_cpus=0.5, eval_every=1, secagg=True, drop_fraction=0.25)
    text = encode_items(list(tenant.items.text), base.cfg.text)
    ctx = AdaptContext("test", None, tenant.num_items, np.zeros(tenant.num_items, np.float32))
    faults = ClientFaults(drop_fraction=0.25, seed=5)
    payload = ClientPayload(base.model, acfg, ctx, text, [[tenant.sequence(u)] for u in range(4)], base.cfg.data.max_seq_len,
                            _local_settings(acfg, fcfg), faults)
    plan = secagg_plan(fcfg, 4, 4, [1] * 4)  # one training row (one user) per client
    seen: dict[int, dict] = {}

    def evaluate(server_round: int, arrays: dict) -> None:
        seen[server_round] = {k: v.copy() for k, v in arrays.items()}

    outcome = run_secagg_rounds(payload, adapter_arrays(prepare_model(base.model, acfg, ctx=ctx)), fcfg, plan, 4, RAY, evaluate)
    state, saved, survivors = client_state(payload), {}, {}
    for r in (1, 2):
        survivors[r] = [p for p in range(4) if not faults.drops(r, p, 4)]
        updates = [local_round(state, seen[r - 1], p, r)[0] for p in survivors[r]]
        saved.update({f"secagg{r}/{k}": v for k, v in seen[r].items()})
        saved.update({f"expected{r}/{k}": np.mean([u[k] for u in updates], axis=0) for k in updates[0]})
    saved.update({f"init/{k}": v for k, v in seen[0].items()})
    np.savez(out / "arrays.npz", **saved)
    return {"rounds": [r.__dict__ for r in outcome.rounds], "survivors": survivors, "tolerance": plan.tolerance(1.0)}


def _run(base, out: Path, fcfg: FedConfig, faults=None, publish: bool = False, **adapt) -> dict:  # noqa: ANN001
    import torch

    from rec.adaptation.prepare import scoring_backbone
    from rec.data.padding import PAD, left_pad
    from rec.federated import federated_adapt, publish_federated

    tenant = _tenant(base)
    acfg = AdaptConfig(**{**ACFG, **adapt}, output_root=str(out / "adapters"))
    from rec.adaptation.prepare import prepare_model
    from rec.adaptation.registry import AdaptContext
    from rec.federated.adapter_state import adapter_arrays

    initial = adapter_arrays(prepare_model(base.model, acfg, ctx=AdaptContext("test", None, tenant.num_items,
                                                                             np.zeros(tenant.num_items, np.float32))))
    res = federated_adapt(base, tenant, acfg, fcfg, ray_cfg=RAY, faults=faults)
    final = adapter_arrays(res.adapt.model)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "final.npz", **final)
    moved = sorted(k for k in final if not np.array_equal(final[k], initial[k]))
    rec = {"history": res.history, "valid": res.adapt.valid, "adapter_bytes": res.adapter_bytes,
           "privacy": None if res.privacy is None else res.privacy.as_dict(), "clients": res.num_clients,
           "clients_per_round": res.clients_per_round, "local_privacy": res.local_privacy, "moved": moved,
           "tensors": sorted(final)}
    if publish:
        rec["adapter"] = str(publish_federated(res, base, acfg, fcfg))
        from rec.text import encode_items

        scorer = scoring_backbone(res.adapt.model).eval()
        with torch.no_grad():
            cat = scorer.item_representations(torch.from_numpy(encode_items(list(tenant.items.text), base.cfg.text)))
            idx = torch.tensor(left_pad([tenant.sequence(u)[:-1] for u in range(5)], 20))
            scores = scorer.scores(scorer.user_vector(cat[idx.clamp(min=0)], idx == PAD), cat)
        np.save(out / "scores.npy", scores.numpy())
    return rec


SCENARIOS = {
    "identical": identical_clients,
    "secagg_vs_plain": secagg_vs_plain,
    "secagg_dropout": secagg_dropout,
    "fedprox_faults": lambda base, out: _run(base, out, FedConfig(rounds=2, clients_per_round=12, strategy="fedprox", proximal_mu=0.1,
                                                                  client_cpus=1.0, eval_every=0),
                                             faults=_faults(), publish=True),
    "fedadam": lambda base, out: _run(base, out, FedConfig(rounds=1, clients_per_round=3, strategy="fedadam", client_cpus=1.0, eval_every=0)),
    # both kinds of DP in one run: client-level at the server, DP-SGD (Opacus) on every client's encoder LoRA
    "dp_fixed": lambda base, out: _run(base, out, FedConfig(rounds=2, clients_per_round=4, client_dp="fixed", noise_multiplier=1.0,
                                                            clipping_norm=0.5, client_cpus=1.0, eval_every=0, local_dp=True, keep="last",
                                                            local_noise_multiplier=0.8, local_max_grad_norm=1.0),
                                       lora={"train_adaptor": False, "target_modules": list(ENCODER_TARGETS)}),
}


def _faults():  # noqa: ANN202
    from rec.federated.client_app import ClientFaults

    # every client is sampled; 20 % of them (2 of 12, a seeded choice per round) raise; partitions 0-2 (unless dropped)
    # send a NaN, a wrong-shape and a wrong-keys update
    return ClientFaults(drop_fraction=0.2, corrupt={0: "nan", 1: "shape", 2: "keys"}, seed=3)


if __name__ == "__main__":
    name, backbone, out_dir = sys.argv[1:4]
    out = Path(out_dir)
    result = SCENARIOS[name](load_backbone(backbone), out)
    (out / "result.json").write_text(json.dumps(result, default=float))
