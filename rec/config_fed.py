"""The ``fed`` config section (``rec fed``), re-exported by :mod:`rec.config` with the rest of the typed config."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from rec._config_base import _Strict

__all__ = ["FedConfig"]


class FedConfig(_Strict):
    """``rec fed``: federated adaptation of one tenant's adapter with Flower on Ray (docs/federated.md).

    The backbone stays frozen and shared; only the ``adapt.method`` adapter's trainable tensors
    travel (LoRA's PEFT tensors, or item-terms' bias). Local training uses ``adapt.lr``,
    ``adapt.batch_size`` and ``adapt.seed``; the K-shot split (``adapt.k_users``, ...) picks the
    users that become clients and the held-out users the server evaluates on.
    """

    rounds: int = Field(10, ge=1, description="federated rounds")
    clients_per_round: int | None = Field(None, ge=1, description="clients sampled per round; null = fraction * clients")
    fraction: float = Field(0.1, gt=0.0, le=1.0, description="share of clients sampled per round when clients_per_round is null")
    local_epochs: int = Field(1, ge=1, description="epochs each sampled client trains on its own sequences per round")
    local_optimizer: Literal["adamw", "sgd"] = Field("adamw", description="clients' optimizer; use sgd under client_dp: its "
                                                     "update is the gradient, AdamW's first step is +-lr on every number")
    strategy: Literal["fedavg", "fedprox", "fedadam"] = "fedavg"
    proximal_mu: float = Field(0.01, ge=0.0, description="fedprox: weight of the proximal term mu/2 * ||w - w_global||^2")
    server_lr: float = Field(0.01, gt=0.0, description="fedadam: the server optimizer's step size (eta)")
    client_mode: Literal["user", "silo"] = Field("user", description="user: one client per training user; silo: users grouped into num_silos shops")
    num_silos: int = Field(4, ge=2, description="silo mode: shops sharing the tenant's catalog")
    client_dp: Literal["none", "fixed", "adaptive"] = Field("none", description="client-level DP at the server (Flower's DP wrappers)")
    clipping_norm: float = Field(0.5, gt=0.0, description="client_dp: L2 bound on each client's update (adaptive: the initial bound)")
    noise_multiplier: float | None = Field(None, ge=0.0, description="client_dp: Gaussian noise std / clipping norm; null = from target_epsilon")
    target_epsilon: float | None = Field(None, gt=0.0, description="client_dp: solve the noise multiplier for this epsilon over all rounds")
    delta: float | None = Field(None, gt=0.0, lt=1.0, description="DP delta; null = 1 / number of clients")
    accountant: Literal["rdp", "prv"] = Field("rdp", description="Opacus accountant for epsilon")
    local_dp: bool = Field(False, description="example-level DP-SGD on each client (Opacus)")
    local_noise_multiplier: float = Field(1.0, ge=0.0, description="local_dp: DP-SGD noise multiplier")
    local_max_grad_norm: float = Field(1.0, gt=0.0, description="local_dp: per-example gradient clipping bound")
    secagg: bool = Field(False, description="secure aggregation (Flower SecAgg+, legacy workflow): the server only learns the weighted "
                                            "sum of the sampled clients' quantized adapters, never one client's (docs/federated.md)")
    secagg_num_shares: int | float = Field(1.0, gt=0, description="secagg: neighbours each client's secrets are shared with; int = a "
                                                                  "count > 2, float = that share of the sampled clients (1.0 = all)")
    secagg_reconstruction_threshold: int | float = Field(0.6, gt=0, description="secagg: shares needed to unmask (int count < num_shares, "
                                                                                "or float share of it): survivors each neighbourhood needs; keep > half")
    secagg_clipping_range: float = Field(8.0, gt=0.0, description="secagg: adapter values must lie in [-range, range] (a client refuses "
                                                                  "to send one outside); quantization step = 2 range / quantization_range")
    secagg_quantization_range: int = Field(2**22, ge=2, lt=2**32, description="secagg: quantization levels; clients per round x this < 2^32")
    secagg_max_weight: float | None = Field(None, ge=1.0, description="secagg: cap on a client's weight (rows); null = the largest client's "
                                                                       "(the error bound scales with it: a deployment sets it)")
    drop_fraction: float = Field(0.0, ge=0.0, lt=1.0, description="tests/bench: share of sampled clients that crash each round")
    client_cpus: float = Field(0.5, gt=0.0, description="CPUs each client actor reserves (Ray)")
    eval_every: int = Field(1, ge=0, description="server-side validation NDCG@10 every N rounds (0 = only at the end)")
    keep: Literal["best", "last"] = Field("best", description="publish the global adapter of the round with the best server-side "
                                          "validation NDCG@10 (early stopping on held-out users: no privacy cost) or of the last round")
    round_timeout_s: float = Field(600.0, gt=0.0, description="a round aggregates the replies received by then")

    @model_validator(mode="after")
    def _consistent(self) -> "FedConfig":
        errors = []
        if self.client_dp != "none" and (self.noise_multiplier is None) == (self.target_epsilon is None):
            errors.append("fed.client_dp needs exactly one of fed.noise_multiplier or fed.target_epsilon")
        if self.client_dp == "none" and (self.noise_multiplier is not None or self.target_epsilon is not None):
            errors.append("fed.noise_multiplier/fed.target_epsilon are set but fed.client_dp=none: set fed.client_dp=fixed or adaptive")
        if self.client_dp != "none" and self.strategy == "fedadam":
            errors.append("fed.client_dp bounds the averaged update: use fed.strategy=fedavg or fedprox with it")
        if self.secagg and self.client_dp != "none":
            errors.append("fed.secagg hides single updates, but server-side DP clips them: use one of the two")
        if self.secagg:
            errors += self._secagg_errors()
        if errors:
            raise ValueError("; ".join(errors))
        return self

    def _secagg_errors(self) -> list[str]:
        """SecAgg+'s own parameter rules (flwr.server.workflow.SecAggPlusWorkflow), in fed.* names."""
        shares, threshold = self.secagg_num_shares, self.secagg_reconstruction_threshold
        return [msg for bad, msg in [
            (isinstance(shares, int) and shares <= 2, f"fed.secagg_num_shares={shares}: a count must be > 2 (or a share, e.g. 1.0)"),
            (isinstance(shares, float) and shares > 1.0, f"fed.secagg_num_shares={shares}: a float share is at most 1.0 (or an int count)"),
            (isinstance(threshold, float) and threshold > 1.0, f"fed.secagg_reconstruction_threshold={threshold}: a float share is at most 1.0"),
            (isinstance(threshold, int) and (threshold < 2 or isinstance(shares, int) and threshold >= shares),
             f"fed.secagg_reconstruction_threshold={threshold}: a count must be >= 2 and < fed.secagg_num_shares")] if bad]
