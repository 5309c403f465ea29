"""Differential privacy of federated adaptation: accounting, the ledger, and DP-SGD on a LoRA backbone.

The DP-SGD tests train a tiny real Backbone wrapped by PEFT LoRA (``prepare_model``, as adaptation
builds it) with Opacus; no part of the system under test is mocked.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rec.adaptation.methods.lora import ENCODER_TARGETS
from rec.adaptation.prepare import prepare_model
from rec.config import AdaptConfig
from rec.federated.privacy import (
    RDP_ORDERS,
    PrivacyLedger,
    client_level_epsilon,
    effective_noise_multiplier,
    flower_noise_std,
    noise_multiplier_for,
    private_local_train,
)
from rec.models.backbone import Backbone

NUM_ITEMS, TEXT_DIM, MAX_LEN = 30, 16, 8
DELTA = 1 / 256


# --- an independent RDP accountant: the sampled Gaussian mechanism at integer orders ---------------
def _rdp_sampled_gaussian(q: float, sigma: float, alpha: int) -> float:
    """RDP of one Poisson-sampled Gaussian release at integer order ``alpha`` (Mironov, Talwar, Zhang
    2019, Sec. 3.3): ``log(sum_k C(a,k) (1-q)^(a-k) q^k exp((k^2-k) / (2 sigma^2))) / (a-1)``."""
    terms = [math.lgamma(alpha + 1) - math.lgamma(k + 1) - math.lgamma(alpha - k + 1) + (alpha - k) * math.log1p(-q)
             + k * math.log(q) + (k * k - k) / (2 * sigma**2) for k in range(alpha + 1)]
    top = max(terms)
    return (top + math.log(sum(math.exp(t - top) for t in terms))) / (alpha - 1)


def _independent_epsilon(rounds: list[dict], delta: float) -> float:
    """Each logged round composed on its own, converted to (eps, delta) with Balle et al. 2020's bound,
    minimised over the integer orders the ledger also tries (so the ledger's value can only be lower)."""
    best = math.inf
    for alpha in sorted({int(a) for a in RDP_ORDERS if a == int(a) and a >= 2}):
        rdp = sum(_rdp_sampled_gaussian(r["sample_rate"], r["noise_multiplier"], alpha) for r in rounds)
        best = min(best, rdp - (math.log(delta) + math.log(alpha)) / (alpha - 1) + math.log((alpha - 1) / alpha))
    return best


# --- client level --------------------------------------------------------------------------------
@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_client_epsilon_grows_with_rounds_and_sampling_and_falls_with_noise(accountant):
    eps = lambda z, q, r: client_level_epsilon(z, q, r, DELTA, accountant)  # noqa: E731
    assert eps(1.0, 0.1, 20) < eps(1.0, 0.1, 50) < eps(1.0, 0.1, 100)
    assert eps(0.7, 0.1, 50) > eps(1.0, 0.1, 50) > eps(2.0, 0.1, 50)
    assert eps(1.0, 0.05, 50) < eps(1.0, 0.1, 50) < eps(1.0, 1.0, 50)
    assert client_level_epsilon(0.0, 0.1, 10, DELTA, accountant) == math.inf


def test_ledger_epsilon_matches_an_independent_recomputation_from_its_log():
    ledger = PrivacyLedger()
    for r in range(30):  # 26 of 256 clients per round
        ledger.record(r, noise_multiplier=1.1, sample_rate=26 / 256, clients_sampled=26, clipping_norm=0.5)
    for r in range(30, 50):  # fewer clients and less noise later in the run
        ledger.record(r, noise_multiplier=0.9, sample_rate=13 / 256, clients_sampled=13, clipping_norm=0.5)
    logged = ledger.to_dicts()
    independent = _independent_epsilon(logged, DELTA)
    reported = ledger.epsilon(DELTA)
    # Same mechanism, same conversion; Opacus also tries fractional orders, which may only tighten (<= 5 % here).
    assert 0.95 * independent <= reported <= independent * (1 + 1e-9)
    assert reported == pytest.approx(PrivacyLedger.from_dicts(logged).epsilon(DELTA), rel=1e-12)
    # PRV (numerical composition) is the tighter accountant: below RDP, but the same order of magnitude.
    assert 0.6 * reported < ledger.epsilon(DELTA, "prv") < reported
    # A constant run equals the closed-form call.
    const = PrivacyLedger()
    for r in range(1, 21):
        const.record(r, 1.0, 0.1, 26, 1.0)
    assert const.history() == [(1.0, 0.1, 20)]
    assert const.epsilon(DELTA) == pytest.approx(client_level_epsilon(1.0, 0.1, 20, DELTA), rel=1e-12)
    assert PrivacyLedger().epsilon(DELTA) == 0.0


def test_ledger_rejects_rounds_out_of_order_and_bad_records():
    ledger = PrivacyLedger()
    ledger.record(3, 1.0, 0.1, 26, 1.0)
    with pytest.raises(ValueError, match="record each round once, in order"):
        ledger.record(3, 1.0, 0.1, 26, 1.0)
    with pytest.raises(ValueError, match="clipping_norm"):
        ledger.record(4, 1.0, 0.1, 26, 0.0)
    with pytest.raises(ValueError, match="noise_multiplier"):
        ledger.record(4, -1.0, 0.1, 26, 1.0)


@pytest.mark.parametrize(("accountant", "target"), [("rdp", 1.0), ("rdp", 4.0), ("rdp", 8.0), ("prv", 8.0)])
def test_noise_multiplier_for_round_trips_within_one_percent(accountant, target):
    z = noise_multiplier_for(target, DELTA, 0.1, 50, accountant)
    eps = client_level_epsilon(z, 0.1, 50, DELTA, accountant)
    assert eps <= target and eps == pytest.approx(target, rel=0.01)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: client_level_epsilon(-0.5, 0.1, 10, DELTA), "noise_multiplier=-0.5: must be a finite number >= 0"),
        (lambda: client_level_epsilon(1.0, 0.0, 10, DELTA), r"sample_rate=0.0: must be in \(0, 1\]"),
        (lambda: client_level_epsilon(1.0, 1.5, 10, DELTA), r"sample_rate=1.5: must be in \(0, 1\]"),
        (lambda: client_level_epsilon(1.0, 0.1, 10, 1.0), r"delta=1.0: must be in \(0, 1\); use about 1/N"),
        (lambda: client_level_epsilon(1.0, 0.1, 0, DELTA), "rounds=0: must be an integer >= 1"),
        (lambda: client_level_epsilon(1.0, 0.1, 10, DELTA, "gdp"), r"accountant='gdp': choose one of \['rdp', 'prv'\]"),
        (lambda: noise_multiplier_for(8.0, 1.5, 0.1, 10), r"delta=1.5: must be in \(0, 1\)"),
        (lambda: noise_multiplier_for(-1.0, DELTA, 0.1, 10), "target_epsilon=-1.0: must be a finite number > 0"),
        (lambda: flower_noise_std(1.0, 0.0, 10), "clipping_norm > 0"),
    ],
)
def test_bad_inputs_say_what_to_use(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_flower_noise_std_is_what_flowers_dp_wrappers_add():
    from flwr.supercore.differential_privacy import compute_stdv

    assert flower_noise_std(1.3, 0.7, 26) == pytest.approx(compute_stdv(1.3, 0.7, 26), rel=1e-15) == 1.3 * 0.7 / 26
    # 20 of 26 replies: the average's sensitivity is C/20 while the noise stays sized for 26.
    z_eff = effective_noise_multiplier(1.3, 26, 20)
    assert z_eff * 0.7 / 20 == pytest.approx(compute_stdv(1.3, 0.7, 26), rel=1e-12)
    assert client_level_epsilon(z_eff, 0.1, 20, DELTA) > client_level_epsilon(1.3, 0.1, 20, DELTA)


# --- example level: DP-SGD on a PEFT LoRA backbone -----------------------------------------------
def _lora_model(train_adaptor: bool = False, dropout: float = 0.0):
    torch.manual_seed(0)
    base = Backbone(text_dim=TEXT_DIM, d_model=16, n_layers=1, n_heads=2, max_len=MAX_LEN, dropout=dropout)
    targets = list(ENCODER_TARGETS) + ([] if not train_adaptor else ["adaptor.proj"])
    acfg = AdaptConfig(method="lora", lora={"train_adaptor": train_adaptor, "target_modules": targets})
    return prepare_model(base, acfg)


def _client_data(users: int, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    seqs = [rng.integers(0, NUM_ITEMS, rng.integers(2, MAX_LEN + 2)) for _ in range(users)]
    return seqs, rng.normal(size=(NUM_ITEMS, TEXT_DIM)).astype(np.float32)


def _snapshot(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _train(model, seqs, emb, **kw):
    args = dict(text_emb=emb, max_len=MAX_LEN, lr=1e-2, epochs=1, batch_size=len(seqs), max_grad_norm=1.0, delta=1e-3)
    return private_local_train(model, seqs, **{**args, **kw})


@pytest.mark.parametrize("noise", [0.0, 1.0])
def test_lora_weights_move_after_one_private_step_and_nothing_else_does(noise):
    seqs, emb = _client_data(12)
    model = _lora_model(dropout=0.1)
    before = _snapshot(model)
    # batch_size = all examples: sample rate 1, so exactly one step.
    model, eps = _train(model, seqs, emb, noise_multiplier=noise)
    after = _snapshot(model)
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert changed <= trainable, f"frozen weights changed: {sorted(changed - trainable)[:3]}"
    lora_b = {n for n in trainable if ".lora_B." in n}
    # lora_B starts at 0, so lora_A's first gradient is 0: without noise only B moves, by the gradient alone.
    assert changed == (lora_b if noise == 0.0 else trainable)
    assert not any(hasattr(p, "grad_sample") for p in model.parameters()), "Opacus hooks left on the model"
    assert (eps == math.inf) if noise == 0.0 else (0 < eps < math.inf)


def test_per_example_clipping_bounds_each_examples_contribution():
    clip, lr = 1e-3, 1.0
    seqs, emb = _client_data(12)
    # Unclipped, the mean gradient of these examples is far larger than the clip norm.
    model = _lora_model()
    before = _snapshot(model)
    model, _ = _train(model, seqs, emb, noise_multiplier=0.0, max_grad_norm=1e6, lr=lr, optimizer="sgd")
    assert _update_norm(before, model) > 100 * lr * clip
    # One example: its clipped gradient has norm exactly clip, so SGD moves the weights by lr * clip.
    model = _lora_model()
    before = _snapshot(model)
    model, _ = _train(model, seqs[:1], emb, noise_multiplier=0.0, max_grad_norm=clip, lr=lr, optimizer="sgd")
    assert _update_norm(before, model) == pytest.approx(lr * clip, rel=1e-3)
    # Twelve examples, each clipped to clip, averaged: at most lr * clip.
    model = _lora_model()
    before = _snapshot(model)
    model, _ = _train(model, seqs, emb, noise_multiplier=0.0, max_grad_norm=clip, lr=lr, optimizer="sgd")
    assert 0 < _update_norm(before, model) <= lr * clip * (1 + 1e-5)


def test_without_noise_or_clipping_a_private_step_is_the_plain_gradient_step():
    """Opacus's per-example gradients, summed, are the true gradient of the mean per-example loss."""
    import copy

    from rec.adaptation.prepare import scoring_backbone
    from rec.federated.privacy import _example_losses
    from rec.training.batches import next_item_examples

    seqs, emb = _client_data(12)
    model = _lora_model()
    plain = copy.deepcopy(model)
    model, _ = _train(model, seqs, emb, noise_multiplier=0.0, max_grad_norm=1e6, lr=0.1, optimizer="sgd")
    inputs, targets = (torch.from_numpy(a) for a in next_item_examples(seqs, MAX_LEN))
    backbone = scoring_backbone(plain)
    plain.train()
    _example_losses(backbone, backbone.item_representations(torch.from_numpy(emb)), inputs, targets).mean().backward()
    with torch.no_grad():
        for p in plain.parameters():
            if p.requires_grad:
                p -= 0.1 * p.grad
    private, expected = dict(model.named_parameters()), dict(plain.named_parameters())
    for n in private:
        torch.testing.assert_close(private[n], expected[n], rtol=1e-5, atol=1e-7, msg=n)


def _update_norm(before: dict[str, torch.Tensor], model) -> float:
    return float(torch.sqrt(sum(((p.detach() - before[n]) ** 2).sum() for n, p in model.named_parameters())))


def test_target_epsilon_is_reached_and_every_poisson_step_is_accounted():
    seqs, emb = _client_data(10)
    # batch 1 of 10 examples: sample rate 0.1, 10 steps per epoch; with seed 0 four of the 20
    # Poisson batches are empty, and each is a noise-only step that the accountant counts too.
    model, eps = _train(_lora_model(), seqs, emb, batch_size=1, epochs=2, target_epsilon=8.0, delta=0.01, seed=0)
    expected_noise = noise_multiplier_for(8.0, 0.01, 0.1, 20)
    assert eps == pytest.approx(client_level_epsilon(expected_noise, 0.1, 20, 0.01), rel=1e-9)
    assert 0.99 * 8.0 <= eps <= 8.0


def test_private_training_refuses_item_side_parameters_and_ambiguous_noise():
    seqs, emb = _client_data(4)
    with pytest.raises(ValueError, match="train_adaptor=false"):
        _train(_lora_model(train_adaptor=True), seqs, emb, noise_multiplier=1.0)
    with pytest.raises(ValueError, match="exactly one of noise_multiplier and target_epsilon"):
        _train(_lora_model(), seqs, emb, noise_multiplier=1.0, target_epsilon=8.0)
    with pytest.raises(ValueError, match="noise_multiplier=-1.0"):
        _train(_lora_model(), seqs, emb, noise_multiplier=-1.0)
    with pytest.raises(ValueError, match=f"item index {NUM_ITEMS} but text_emb has {NUM_ITEMS} rows"):
        _train(_lora_model(), [np.array([0, NUM_ITEMS])], emb, noise_multiplier=1.0)
    with pytest.raises(ValueError, match="at least one user with a next-item example"):
        _train(_lora_model(), [np.array([1])], emb, noise_multiplier=1.0)
