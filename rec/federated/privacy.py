"""Differential privacy of federated adaptation: client-level accounting and example-level DP-SGD.

Two guarantees, both reported as (epsilon, delta) by an Opacus accountant (``rdp`` or ``prv``):

- **Client level** (DP-FedAvg; McMahan et al., "Learning Differentially Private Recurrent Language
  Models", ICLR 2018): each sampled client's adapter update is clipped to L2 norm ``C`` and the
  server adds Gaussian noise to the average. With ``m`` sampled clients and uniform weights,
  ``mean = (sum_i clip(u_i) + N(0, (z C)^2 I)) / m``: the sum has sensitivity ``C`` when one client
  is added or removed, so this is the sampled Gaussian mechanism with noise multiplier ``z`` once
  per round. Flower's ``DifferentialPrivacyServerSideFixedClipping`` (and the client-side variant)
  add exactly this noise to the average: std ``z C / m`` with ``m = num_sampled_clients``
  (:func:`flower_noise_std` mirrors ``flwr.supercore.differential_privacy.compute_stdv``). With
  adaptive clipping (Andrew et al., NeurIPS 2021) Flower's ``noise_multiplier`` is the total one,
  split between the update and the clipped-count query, so account with that same ``z``.
  Flower's own optional accountant charges every round without sampling amplification; we account
  the subsampling at ``sample_rate = m / K`` (Poisson sampling; Flower samples ``m`` of ``K``
  clients without replacement, the usual approximation, see docs/federated-privacy.md).
- **Example level** (DP-SGD; Abadi et al., CCS 2016): :func:`private_local_train` trains a client's
  LoRA tensors with Opacus's per-example clipping, Gaussian noise and Poisson-sampled batches.

References:
    - Mironov, Talwar, Zhang, "Renyi Differential Privacy of the Sampled Gaussian Mechanism", 2019.
    - Gopi, Lee, Wutschitz, "Numerical Composition of Differential Privacy" (PRV), NeurIPS 2021.
"""

from __future__ import annotations

import math
import warnings
from numbers import Real
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["ACCOUNTANTS", "RoundRecord", "PrivacyLedger", "client_level_epsilon", "noise_multiplier_for",
           "flower_noise_std", "effective_noise_multiplier", "private_local_train"]

#: Opacus accountants this module reports with (``gdp`` is an approximation and not offered).
ACCOUNTANTS = ("rdp", "prv")

#: RDP orders: Opacus's defaults (1.1..10.9, 12..63) plus larger ones, so strong-noise settings
#: (optimal order above 63) are not cut off at the top of the range.
RDP_ORDERS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)) + [80, 96, 128, 192, 256]


# --- validation ------------------------------------------------------------------------------------
def _check_accounting(noise_multiplier: float, sample_rate: float, rounds: int, delta: float, accountant: str) -> None:
    """Raise ``ValueError`` naming every bad accounting input and the allowed range."""
    bad = []
    if not (isinstance(noise_multiplier, Real) and math.isfinite(noise_multiplier) and noise_multiplier >= 0):
        bad.append(f"noise_multiplier={noise_multiplier!r}: must be a finite number >= 0 (0 = no noise, no privacy)")
    if not (isinstance(sample_rate, Real) and 0 < sample_rate <= 1):
        bad.append(f"sample_rate={sample_rate!r}: must be in (0, 1], the fraction of clients (or examples) sampled per "
                   "round, e.g. clients_per_round / num_clients")
    if isinstance(rounds, bool) or not isinstance(rounds, (int, np.integer)) or rounds < 1:
        bad.append(f"rounds={rounds!r}: must be an integer >= 1")
    if not (isinstance(delta, Real) and 0 < delta < 1):
        bad.append(f"delta={delta!r}: must be in (0, 1); use about 1/N or less for N clients (or examples)")
    if accountant not in ACCOUNTANTS:
        bad.append(f"accountant={accountant!r}: choose one of {list(ACCOUNTANTS)}")
    if bad:
        raise ValueError("; ".join(bad))


def _epsilon(history: list[tuple[float, float, int]], delta: float, accountant: str) -> float:
    """Epsilon at ``delta`` of a composition ``[(noise_multiplier, sample_rate, steps), ...]`` (Opacus's
    history format); ``inf`` when any step had no noise."""
    from opacus.accountants import create_accountant

    if any(z == 0 for z, _, _ in history):
        return math.inf
    acc = create_accountant(accountant)
    acc.history = list(history)
    if accountant == "rdp":
        return float(acc.get_epsilon(delta, alphas=RDP_ORDERS))
    return float(acc.get_epsilon(delta))


# --- client level ----------------------------------------------------------------------------------
def client_level_epsilon(noise_multiplier: float, sample_rate: float, rounds: int, delta: float,
                         accountant: str = "rdp") -> float:
    """Epsilon spent by ``rounds`` rounds of DP-FedAvg at ``delta`` (client-level, add/remove one client).

    Args:
        noise_multiplier: ``z``: noise std on the sum of clipped updates / clipping norm (Flower's
            ``noise_multiplier``; see :func:`flower_noise_std`).
        sample_rate: Probability that a client takes part in a round (``clients_per_round / num_clients``).
        rounds: Rounds run (each one release of the sampled Gaussian mechanism).
        delta: Target delta, in (0, 1).
        accountant: ``rdp`` or ``prv``.

    Returns:
        Epsilon (``inf`` for ``noise_multiplier == 0``).

    Raises:
        ValueError: An input outside its range (the message says which and what to use).
    """
    _check_accounting(noise_multiplier, sample_rate, rounds, delta, accountant)
    return _epsilon([(float(noise_multiplier), float(sample_rate), int(rounds))], delta, accountant)


def noise_multiplier_for(target_epsilon: float, delta: float, sample_rate: float, rounds: int,
                         accountant: str = "rdp") -> float:
    """The smallest noise multiplier (to 0.5 % of ``target_epsilon``) whose epsilon after ``rounds`` is <= the target.

    Opacus's ``get_noise_multiplier`` (binary search); the same call serves DP-SGD with
    ``rounds`` = optimizer steps and ``sample_rate`` = batch size / examples.

    Raises:
        ValueError: A bad input, or a target too small to reach with any noise.
    """
    from opacus.accountants.utils import get_noise_multiplier

    if not (isinstance(target_epsilon, Real) and math.isfinite(target_epsilon) and target_epsilon > 0):
        raise ValueError(f"target_epsilon={target_epsilon!r}: must be a finite number > 0 (e.g. 8, 4 or 1)")
    _check_accounting(1.0, sample_rate, rounds, delta, accountant)
    kwargs: dict[str, Any] = {"alphas": RDP_ORDERS} if accountant == "rdp" else {}
    try:
        return float(get_noise_multiplier(target_epsilon=float(target_epsilon), target_delta=float(delta),
                                          sample_rate=float(sample_rate), steps=int(rounds), accountant=accountant,
                                          epsilon_tolerance=0.005 * float(target_epsilon), **kwargs))
    except ValueError as e:
        raise ValueError(f"target_epsilon={target_epsilon} is out of reach at delta={delta}, sample_rate={sample_rate}, "
                         f"rounds={rounds} ({e}): allow a larger epsilon, fewer rounds or a lower sample rate") from None


def flower_noise_std(noise_multiplier: float, clipping_norm: float, num_sampled_clients: int) -> float:
    """Std of the Gaussian noise Flower's DP wrappers add to the *average* update: ``z C / m``.

    Equal to noise ``z C`` on the sum of ``m`` clipped updates, which is what
    :func:`client_level_epsilon` accounts for, provided the average weights every client equally
    (``1/m``): FedAvg weighted by example counts changes the sensitivity, so DP rounds must report
    equal weights (Flower's accounted mode requires the same).
    """
    if clipping_norm <= 0 or noise_multiplier < 0 or num_sampled_clients < 1:
        raise ValueError(f"need noise_multiplier >= 0, clipping_norm > 0 and num_sampled_clients >= 1, got "
                         f"{noise_multiplier}, {clipping_norm}, {num_sampled_clients}")
    return float(noise_multiplier * clipping_norm / num_sampled_clients)


def effective_noise_multiplier(noise_multiplier: float, num_sampled_clients: int, replies: int) -> float:
    """The noise multiplier a round really had when only ``replies`` of ``num_sampled_clients`` answered.

    Flower averages the replies it got (sensitivity ``C / replies``) but sizes the noise for
    ``num_sampled_clients`` (std ``z C / num_sampled_clients``), so relative to the sensitivity the
    noise shrinks to ``z * replies / num_sampled_clients``. Record this value in the ledger.
    """
    if not 1 <= replies <= num_sampled_clients:
        raise ValueError(f"replies ({replies}) must be between 1 and num_sampled_clients ({num_sampled_clients})")
    return float(noise_multiplier) * replies / num_sampled_clients


@dataclass(frozen=True)
class RoundRecord:
    """What one DP round released: enough to recompute its privacy cost."""

    round: int
    noise_multiplier: float
    sample_rate: float
    clients_sampled: int
    clipping_norm: float


@dataclass
class PrivacyLedger:
    """Per-round log of client-level DP releases; epsilon is always recomputed from it.

    ``record`` one entry per aggregated round (after the noise was added); ``epsilon(delta)``
    composes them with an Opacus accountant. ``to_dicts``/``from_dicts`` round-trip it as JSON.
    """

    rounds: list[RoundRecord] = field(default_factory=list)

    def record(self, round: int, noise_multiplier: float, sample_rate: float, clients_sampled: int,  # noqa: A002
               clipping_norm: float) -> RoundRecord:
        """Append one round; rounds must be strictly increasing.

        Raises:
            ValueError: A bad value, or a round number not after the last recorded one.
        """
        _check_accounting(noise_multiplier, sample_rate, 1, 0.5, "rdp")
        if clients_sampled < 1 or not (clipping_norm > 0 and math.isfinite(clipping_norm)):
            raise ValueError(f"round {round}: clients_sampled ({clients_sampled}) must be >= 1 and clipping_norm "
                             f"({clipping_norm}) finite and > 0")
        if self.rounds and round <= self.rounds[-1].round:
            raise ValueError(f"round {round} recorded after round {self.rounds[-1].round}: record each round once, in order")
        rec = RoundRecord(int(round), float(noise_multiplier), float(sample_rate), int(clients_sampled), float(clipping_norm))
        self.rounds.append(rec)
        return rec

    def history(self) -> list[tuple[float, float, int]]:
        """Opacus's composition format: consecutive rounds with equal (noise, rate) merged."""
        out: list[tuple[float, float, int]] = []
        for r in self.rounds:
            if out and out[-1][:2] == (r.noise_multiplier, r.sample_rate):
                out[-1] = (r.noise_multiplier, r.sample_rate, out[-1][2] + 1)
            else:
                out.append((r.noise_multiplier, r.sample_rate, 1))
        return out

    def epsilon(self, delta: float, accountant: str = "rdp") -> float:
        """Epsilon of all recorded rounds at ``delta`` (0 before any round)."""
        _check_accounting(0.0, 1.0, 1, delta, accountant)
        return _epsilon(self.history(), delta, accountant) if self.rounds else 0.0

    def to_dicts(self) -> list[dict[str, Any]]:
        return [asdict(r) for r in self.rounds]

    @classmethod
    def from_dicts(cls, rows: Sequence[dict[str, Any]]) -> PrivacyLedger:
        ledger = cls()
        for row in rows:
            ledger.record(**row)
        return ledger


# --- example level ---------------------------------------------------------------------------------
def _check_dp_trainable(model: nn.Module) -> list[nn.Parameter]:
    """The trainable parameters, if every one is an encoder LoRA tensor; else ``ValueError``.

    Opacus computes per-example gradients layer by layer from inputs whose first dimension is the
    batch. Encoder projections see ``(B, T, D)``; the item-side modules (text adaptor, ID table)
    run once on the whole catalog ``(N, ...)``, shared by every example, so their per-example
    gradients cannot be formed that way and would be silently wrong.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    bad = [n for n, _ in named if ".lora_" not in n or "blocks." not in n]
    if bad or not named:
        raise ValueError(
            f"example-level DP-SGD trains only LoRA tensors of the encoder blocks, but trainable are {bad[:4] or 'none'}: "
            "build the adapter with adapt.lora.train_adaptor=false and without 'adaptor.proj' in adapt.lora.target_modules "
            "(item-side parameters are shared by every example through the catalog)")
    return [p for _, p in named]


def _example_losses(backbone: Any, catalog: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``(B,)``: each row's mean full-softmax cross-entropy over its own target positions.

    Not :class:`rec.training.loop.CorpusLoss`: that one divides by the whole batch's target count,
    which makes one example's gradient depend on the others'; DP-SGD's sensitivity bound needs
    each example's loss to depend on that example alone.
    """
    import torch.nn.functional as F

    from rec.training.batches import PAD

    pad = inputs == PAD
    hidden = backbone.encode(F.embedding(inputs.clamp(min=0), catalog), pad)  # (B, T, D)
    keep = targets >= 0
    per_target = F.cross_entropy(backbone.scores(hidden[keep], catalog), targets[keep], reduction="none")  # (M,)
    sums = per_target.new_zeros(len(inputs)).index_add(0, keep.nonzero()[:, 0], per_target)
    return sums / keep.sum(dim=1).clamp(min=1)


def private_local_train(
    model: nn.Module,
    sequences: Sequence[np.ndarray],
    *,
    text_emb: torch.Tensor | np.ndarray,
    max_len: int,
    lr: float,
    epochs: int,
    batch_size: int,
    max_grad_norm: float,
    delta: float,
    noise_multiplier: float | None = None,
    target_epsilon: float | None = None,
    accountant: str = "rdp",
    optimizer: Literal["adamw", "sgd"] = "adamw",
    seed: int = 0,
) -> tuple[nn.Module, float]:
    """DP-SGD on one client's users: Opacus per-example clipping, Gaussian noise, Poisson batches.

    One example = one user's sequence (its next-item positions, ``next_item_examples``). Batches
    are Poisson-sampled at ``sample_rate = 1 / ceil(examples / batch_size)``; each step clips every
    example's gradient to ``max_grad_norm``, sums, adds ``N(0, (noise_multiplier * max_grad_norm)^2)``
    and divides by the expected batch size. The model trains in place (Opacus hooks are removed
    afterwards) and keeps its train/eval mode.

    Args:
        model: A ``peft.PeftModel`` around our :class:`~rec.models.backbone.Backbone` whose only
            trainable tensors are encoder LoRA ones (``prepare_model`` with ``adapt.method=lora``,
            ``adapt.lora.train_adaptor=false``), already on its device: move the backbone to the
            device *before* wrapping it with PEFT (opacus#820: otherwise LoRA weights can silently
            stay put). A step that changes no weight raises instead of reporting an epsilon.
        sequences: The client's users' item sequences, dense item indices ``< N``; users with
            fewer than 2 items carry no next-item example and are skipped.
        text_emb: The tenant's item text embeddings ``(N, text_dim)``.
        max_len: History window (``data.max_seq_len`` of the backbone's config).
        lr, epochs, batch_size: Optimizer step size, passes, expected batch size.
        max_grad_norm: Per-example clipping norm.
        delta: Target delta (about 1/examples or less).
        noise_multiplier, target_epsilon: Exactly one: the noise, or the epsilon to reach after
            ``epochs`` (noise from :func:`noise_multiplier_for`).
        accountant: ``rdp`` or ``prv``.
        optimizer: ``adamw`` (the project's ``make_optimizer``) or ``sgd`` (plain, no momentum).
        seed: Seeds the Poisson sampler and the noise.

    Returns:
        ``(model, epsilon)``: the same model, trained, and the example-level epsilon at ``delta``.

    Raises:
        ValueError: Bad hyper-parameters, no usable sequence, or trainable parameters other than
            encoder LoRA tensors.
        RuntimeError: The first private step left every trainable weight unchanged (opacus#820).
    """
    import torch

    params = _check_dp_trainable(model)
    if (noise_multiplier is None) == (target_epsilon is None):
        raise ValueError("pass exactly one of noise_multiplier and target_epsilon")
    if optimizer not in ("adamw", "sgd"):
        raise ValueError(f"optimizer={optimizer!r}: choose 'adamw' or 'sgd'")
    inputs, targets = _dp_examples(sequences, len(text_emb), max_len, lr, max_grad_norm, epochs, batch_size)
    steps_per_epoch = -(-len(inputs) // batch_size)
    if target_epsilon is not None:
        noise_multiplier = noise_multiplier_for(target_epsilon, delta, 1 / steps_per_epoch, steps_per_epoch * epochs, accountant)
    _check_accounting(noise_multiplier, 1 / steps_per_epoch, epochs, delta, accountant)
    engine, hooks, dp_opt, loader = _make_private(model, params, inputs, targets, batch_size, lr, optimizer, noise_multiplier,
                                                  max_grad_norm, accountant, seed)
    device = params[0].device
    # np.require copies read-only arrays (memory-mapped caches): torch.from_numpy would warn on them.
    emb = torch.as_tensor(np.require(text_emb, np.float32, ["C", "W"]) if isinstance(text_emb, np.ndarray) else text_emb,
                          dtype=torch.float32)
    was_training = model.training
    try:
        _dp_epochs(model, params, emb.to(device), loader, dp_opt, epochs)
    finally:
        hooks.cleanup()
        model.train(was_training)
    return model, _epsilon(engine.accountant.history, delta, accountant)


def _dp_examples(sequences: Sequence[np.ndarray], num_items: int, max_len: int, lr: float, max_grad_norm: float,
                 epochs: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The client's next-item examples (one per user), after checking the step settings and item indices."""
    from rec.training.batches import next_item_examples

    if not (lr > 0 and max_grad_norm > 0 and epochs >= 1 and batch_size >= 1 and max_len >= 2):
        raise ValueError(f"need lr > 0, max_grad_norm > 0, epochs >= 1, batch_size >= 1, max_len >= 2; got lr={lr}, "
                         f"max_grad_norm={max_grad_norm}, epochs={epochs}, batch_size={batch_size}, max_len={max_len}")
    inputs, targets = next_item_examples(list(sequences), max_len)
    if not len(inputs):
        raise ValueError("no sequence has 2 or more items: a client needs at least one user with a next-item example")
    if inputs.max() >= num_items or targets.max() >= num_items:
        raise ValueError(f"sequences name item index {max(inputs.max(), targets.max())} but text_emb has {num_items} "
                         "rows: pass dense item indices of this tenant's catalog and its full text_emb")
    return inputs, targets


def _make_private(model: nn.Module, params: list[nn.Parameter], inputs: np.ndarray, targets: np.ndarray, batch_size: int,
                  lr: float, optimizer: str, noise_multiplier: float, max_grad_norm: float, accountant: str,
                  seed: int) -> tuple[Any, Any, Any, Any]:
    """Opacus's engine, hooks, private optimizer and seeded Poisson loader over the examples."""
    import torch
    from opacus import PrivacyEngine
    from opacus.data_loader import DPDataLoader
    from torch.utils.data import DataLoader, TensorDataset

    from rec.training.loop import make_optimizer

    gen = torch.Generator().manual_seed(seed)
    loader = DPDataLoader.from_data_loader(
        DataLoader(TensorDataset(torch.from_numpy(inputs), torch.from_numpy(targets)), batch_size=batch_size), generator=gen)
    opt = make_optimizer(params, lr, kind=optimizer)
    with warnings.catch_warnings():
        # Opacus warns that its secure RNG is off: the noise is seeded (reproducible runs); a
        # production deployment passes secure_mode (torchcsprng), see docs/federated-privacy.md.
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        engine = PrivacyEngine(accountant=accountant)
    # wrap_model=False: hooks on the PeftModel itself (no wrapper in the state dict); the loader is
    # already Poisson-sampled and seeded, so Opacus keeps it (poisson_sampling=False).
    hooks, dp_opt, loader = engine.make_private(
        module=model, optimizer=opt, data_loader=loader, noise_multiplier=float(noise_multiplier),
        max_grad_norm=float(max_grad_norm), poisson_sampling=False, wrap_model=False,
        noise_generator=torch.Generator(device=params[0].device).manual_seed(seed + 1))
    return engine, hooks, dp_opt, loader


def _dp_epochs(model: nn.Module, params: list[nn.Parameter], text_emb: torch.Tensor, loader: Any, dp_opt: Any,
               epochs: int) -> None:
    """The private steps: per-example losses of each Poisson batch, Opacus's clip + noise + step.

    Raises:
        RuntimeError: The first step left every trainable weight unchanged (opacus#820).
    """
    import torch

    from rec.adaptation.prepare import scoring_backbone
    from rec.training.loop import trim_padding

    backbone = scoring_backbone(model)
    device = params[0].device
    model.train()
    first: list[torch.Tensor] | None = [p.detach().clone() for p in params]
    with warnings.catch_warnings():
        # The first layer's inputs never require grad (frozen item vectors), which torch notes on every backward.
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        for _ in range(epochs):
            for batch_inputs, batch_targets in loader:
                dp_opt.zero_grad(set_to_none=True)
                if len(batch_inputs):
                    x, y = (torch.from_numpy(a).to(device) for a in trim_padding(batch_inputs.numpy(), batch_targets.numpy()))
                    catalog = backbone.item_representations(text_emb)  # the item side is frozen (_check_dp_trainable)
                    _example_losses(backbone, catalog, x, y).mean().backward()
                else:  # an empty Poisson batch is still a step: noise only, and the accountant counts it
                    for p in params:
                        p.grad_sample = p.new_zeros((0, *p.shape))
                dp_opt.step()
                if first is not None:
                    if all(torch.equal(a, p.detach()) for a, p in zip(first, params)):
                        raise RuntimeError("the first private step changed no LoRA weight (opacus#820): move the backbone "
                                           "to its device before get_peft_model, then call private_local_train")
                    first = None
