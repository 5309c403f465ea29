"""Client-level (epsilon, delta) of a federated run: the noise it needs and the privacy it spent.

Flower's DP wrappers add noise but do not account; the accounting is Opacus's (RDP or PRV),
through ``rec.federated.privacy`` (imported here only when DP is on). Each round is one
subsampled Gaussian release at sample rate ``q = sampled / clients``. When clients drop, the
average has fewer members than the noise was scaled for (Flower's std is ``z * C / sampled``),
so the round's effective noise multiplier is ``z * replies / sampled``: the epsilon reported
uses the smallest one seen over the rounds (conservative for every round).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from rec.config import FedConfig

__all__ = ["PrivacyReport", "PrivacyModuleMissing", "default_delta", "local_dp_report", "resolve_noise", "privacy_report"]


class PrivacyModuleMissing(ValueError):
    """``rec.federated.privacy`` (the Opacus accounting) is not installed in this checkout."""


def _privacy():  # noqa: ANN202 - the module
    try:
        from rec.federated import privacy
    except ImportError as e:
        raise PrivacyModuleMissing(f"fed.client_dp needs rec/federated/privacy.py (Opacus accounting), which is missing ({e}): "
                                   "set fed.client_dp=none or install the privacy module") from None
    return privacy


@dataclass(frozen=True)
class PrivacyReport:
    epsilon: float
    delta: float
    noise_multiplier: float  # configured z
    effective_noise_multiplier: float  # min over rounds of z * replies / sampled (what epsilon uses)
    sample_rate: float
    rounds: int
    accountant: str
    clipping: str  # fixed | adaptive

    def as_dict(self) -> dict:
        return asdict(self)


def default_delta(fcfg: FedConfig, num_clients: int) -> float:
    """``fed.delta``, else ``1 / N`` clients."""
    return fcfg.delta if fcfg.delta is not None else 1.0 / max(num_clients, 2)


def resolve_noise(fcfg: FedConfig, num_clients: int, sampled: int) -> float | None:
    """The client-level noise multiplier: ``fed.noise_multiplier``, or solved for ``fed.target_epsilon``; None without DP."""
    if fcfg.client_dp == "none":
        return None
    if fcfg.noise_multiplier is not None:
        return fcfg.noise_multiplier
    return float(_privacy().noise_multiplier_for(target_epsilon=fcfg.target_epsilon, delta=default_delta(fcfg, num_clients),
                                                 sample_rate=sampled / num_clients, rounds=fcfg.rounds,
                                                 accountant=fcfg.accountant))


def privacy_report(fcfg: FedConfig, noise_multiplier: float, num_clients: int, sampled: int,
                   replies_per_round: list[int]) -> PrivacyReport:
    """(epsilon, delta) spent by the rounds that ran (``replies_per_round``: aggregated updates per round)."""
    live = [r for r in replies_per_round if r > 0]  # a round without an aggregate releases nothing
    rounds = len(live)
    z_eff = noise_multiplier * min(live) / sampled if live else noise_multiplier
    delta = default_delta(fcfg, num_clients)
    if not rounds:
        eps = 0.0
    elif z_eff <= 0:
        eps = float("inf")
    else:
        eps = float(_privacy().client_level_epsilon(noise_multiplier=z_eff, sample_rate=sampled / num_clients, rounds=rounds,
                                                    delta=delta, accountant=fcfg.accountant))
    return PrivacyReport(eps, delta, noise_multiplier, z_eff, sampled / num_clients, rounds, fcfg.accountant, fcfg.client_dp)


def local_dp_report(fcfg: FedConfig, examples_per_client: list[int], batch_size: int, epochs: int, delta: float) -> dict:
    """Example-level (epsilon, delta) of local DP-SGD (``fed.local_dp``) after ``fed.rounds`` rounds.

    A client with ``n`` examples runs ``epochs * ceil(n / batch_size)`` Poisson steps per round at
    sample rate ``1 / ceil(n / batch_size)`` (``rec.federated.privacy.private_local_train``); one
    taking part in every round composes ``rounds`` times as many. The worst client over the
    partition is reported (the one with the fewest examples: the fewest steps per epoch but the
    largest sample rate), assuming each client takes part in every round (it is sampled in fewer
    only by chance, which the server does not promise it).
    """
    sizes = [n for n in examples_per_client if n > 0]
    if not sizes:
        return {"epsilon": 0.0, "delta": delta, "noise_multiplier": fcfg.local_noise_multiplier, "rounds": fcfg.rounds}
    privacy = _privacy()
    eps = 0.0
    for n in sorted(set(sizes)):
        steps = -(-n // batch_size)
        eps = max(eps, float(privacy.client_level_epsilon(noise_multiplier=fcfg.local_noise_multiplier, sample_rate=1.0 / steps,
                                                          rounds=steps * epochs * fcfg.rounds, delta=delta,
                                                          accountant=fcfg.accountant)))
    return {"epsilon": eps, "delta": delta, "noise_multiplier": fcfg.local_noise_multiplier, "max_grad_norm": fcfg.local_max_grad_norm,
            "rounds": fcfg.rounds, "local_epochs": epochs, "accountant": fcfg.accountant, "min_examples": min(sizes)}
