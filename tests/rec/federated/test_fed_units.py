"""Federated building blocks without Flower's runtime: clients, what travels, the update check, config, CLI."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from rec.config import AdaptConfig, ConfigError, FedConfig, load_config
from rec.federated.adapter_state import adapter_arrays, adapter_spec, load_adapter_arrays, payload_bytes, update_problem
from rec.federated.clients import client_partitions, clients_per_round
from rec.federated.federate import check_fed_config


def test_user_and_silo_partitions_cover_every_user_once():
    users = client_partitions(10, "user")
    assert len(users) == 10 and [p.tolist() for p in users] == [[i] for i in range(10)]
    silos = client_partitions(10, "silo", 3)
    assert len(silos) == 3 and sorted(np.concatenate(silos).tolist()) == list(range(10))
    with pytest.raises(ValueError, match="num_silos"):
        client_partitions(2, "silo", 3)


def test_clients_per_round():
    assert clients_per_round(256, None, 0.1) == 26 and clients_per_round(5, None, 0.01) == 1
    assert clients_per_round(10, 4, 0.1) == 4
    with pytest.raises(ValueError, match="clients_per_round=11"):
        clients_per_round(10, 11, 0.1)


def test_update_check_names_what_is_wrong():
    spec = {"a": (2, 3), "b": (4,)}
    good = {"a": np.zeros((2, 3), np.float32), "b": np.ones(4, np.float32)}
    assert update_problem(good, spec) is None
    assert "missing ['b']" in update_problem({"a": good["a"]}, spec)
    assert "unexpected ['c']" in update_problem({**good, "c": good["b"]}, spec)
    assert "shape (2, 4)" in update_problem({**good, "a": np.zeros((2, 4), np.float32)}, spec)
    assert "non-finite" in update_problem({**good, "b": np.array([0, np.nan, np.inf, 1], np.float32)}, spec)
    assert "dtype int64" in update_problem({**good, "b": np.ones(4, np.int64)}, spec)
    assert payload_bytes(good) == (6 + 4) * 4


def test_only_the_lora_tensors_travel_and_load_back(small_backbone, new_tenant):
    from rec.adaptation.prepare import prepare_model
    from rec.adaptation.registry import AdaptContext

    ctx = AdaptContext("t", None, new_tenant.num_items, np.zeros(new_tenant.num_items, np.float32))
    model = prepare_model(small_backbone.model, AdaptConfig(method="lora"), ctx=ctx)
    arrays = adapter_arrays(model)
    assert arrays and all(("lora_" in k) or ("adaptor" in k) for k in arrays)
    changed = {k: v + 1.0 for k, v in arrays.items()}
    load_adapter_arrays(model, changed)
    assert all(np.array_equal(v, changed[k]) for k, v in adapter_arrays(model).items())
    with pytest.raises(ValueError, match="do not fit"):
        load_adapter_arrays(model, {k: v[..., :1] for k, v in arrays.items()})
    item = prepare_model(small_backbone.model, AdaptConfig(method="item-terms"), ctx=ctx)
    assert adapter_spec(item) == {"item_bias": (new_tenant.num_items,)}


def test_fed_config_errors_say_what_to_set():
    with pytest.raises(ConfigError, match="exactly one of fed.noise_multiplier or fed.target_epsilon"):
        load_config(None, ["fed.client_dp=fixed"])
    with pytest.raises(ConfigError, match="fed.client_dp=none"):
        load_config(None, ["fed.noise_multiplier=1.0"])
    with pytest.raises(ConfigError, match="fedavg or fedprox"):
        load_config(None, ["fed.client_dp=fixed", "fed.noise_multiplier=1", "fed.strategy=fedadam"])
    with pytest.raises(ValueError, match="cannot be federated"):
        check_fed_config(AdaptConfig(method="head"), FedConfig())
    with pytest.raises(ValueError, match="adalora"):
        check_fed_config(AdaptConfig(method="lora", lora={"kind": "adalora"}), FedConfig())
    with pytest.raises(ConfigError, match="fed.secagg hides single updates"):
        load_config(None, ["fed.secagg=true", "fed.client_dp=fixed", "fed.noise_multiplier=1"])
    check_fed_config(AdaptConfig(), FedConfig(secagg=True))  # SecAgg+ runs (test_secagg.py); its own checks are there


@pytest.mark.parametrize("bad, says", [(["fed.strategy=fedsgd"], "fed.strategy"), (["--method", "head"], "cannot be federated"),
                                       (["fed.rounds=0"], "fed.rounds")])
def test_cli_bad_input_exits_2_with_one_line(small_backbone_dir, bad, says):
    r = subprocess.run([sys.executable, "-m", "rec.cli", "fed", "--backbone", str(small_backbone_dir), *bad],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rec fed: error:") and says in lines[0]


def test_fed_sweep_validates_and_fed_keys_need_job_fed():
    from tuning.search_spaces import SweepError, load_sweep

    spec = load_sweep("tuning/configs/fed.yaml")
    assert spec.job == "fed" and spec.check_against(load_config(None).model_dump(mode="json")) == []
    swept = {p.key for p in spec.swept()}
    assert {"fed.rounds", "fed.clients_per_round", "fed.local_epochs", "fed.clipping_norm", "fed.noise_multiplier"} <= swept
    with pytest.raises(SweepError, match="set `job: fed`"):
        load_sweep({"name": "x", "search_space": {"fed.rounds": {"choice": [1, 2]}}})
    with pytest.raises(SweepError, match="scheduler: {type: fifo}"):
        load_sweep({"name": "x", "job": "fed", "search_space": {"fed.rounds": {"choice": [1, 2]}}})


def test_flower_deployment_configs_parse():
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[3] / "cluster" / "flower"
    link = tomllib.loads((root / "superlink.toml").read_text())
    nodes = tomllib.loads((root / "supernodes.toml").read_text())["supernode"]
    conn = link["superlink"][link["superlink"]["default"]]
    assert conn["address"].endswith(":9093")  # flwr CLI -> Control API
    assert [n["node-config"]["partition-id"] for n in nodes] == list(range(len(nodes)))
    assert all(n["superlink"].endswith(":9092") and n["node-config"]["num-partitions"] == len(nodes) for n in nodes)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_client_item_bias_update_is_the_gradient_step_only_with_sgd(small_backbone, new_tenant, optimizer):
    """fed.local_optimizer=sgd: one local step moves item-terms' bias by exactly -lr * gradient, so the
    average over clients is a popularity signal; AdamW's fresh state moves every coordinate by about lr."""
    import torch

    from rec.adaptation.prepare import prepare_model, scoring_backbone
    from rec.adaptation.registry import AdaptContext
    from rec.federated.local_train import LocalSettings, client_corpus, train_locally
    from rec.models.layers import CausalSelfAttention, Dropout
    from rec.text import encode_items
    from rec.training.loop import CorpusLoss

    n = new_tenant.num_items
    model = prepare_model(small_backbone.model, AdaptConfig(method="item-terms"), ctx=AdaptContext("t", None, n, np.zeros(n, np.float32)))
    for m in model.modules():  # deterministic forward, so the reference gradient is the step's
        if isinstance(m, (Dropout, torch.nn.Dropout)):
            m.p = 0.0
        if isinstance(m, CausalSelfAttention):
            m.dropout = 0.0
    emb = torch.from_numpy(encode_items(list(new_tenant.items.text), small_backbone.cfg.text))
    corpus = client_corpus(new_tenant.sequences()[:2], n, small_backbone.cfg.data.max_seq_len)
    rows, lr = len(corpus.train_inputs), 0.5
    inputs, targets = (torch.from_numpy(a) for a in (corpus.train_inputs, corpus.train_targets))
    loss = CorpusLoss(scoring_backbone(model))(torch.zeros(rows, dtype=torch.long), inputs, targets, [corpus], [emb])
    grad = torch.autograd.grad(loss, model.item_bias)[0]
    before = model.item_bias.detach().clone()
    s = LocalSettings(epochs=1, lr=lr, batch_size=rows, seed=0, grad_clip=1e9, optimizer=optimizer)  # one step
    train_locally(model, scoring_backbone(model), corpus, emb, s, round_seed=0)
    step = model.item_bias.detach() - before
    assert grad.abs().max() > 0
    if optimizer == "sgd":
        torch.testing.assert_close(step, -lr * grad, rtol=1e-4, atol=1e-7)
    else:
        assert step.abs().median() > 0.5 * lr  # sign-like: the gradient's magnitudes are gone
