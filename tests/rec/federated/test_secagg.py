"""Secure aggregation (fed.secagg): Flower's SecAgg+ on the Ray simulation gives the plain average, survives a
client that drops mid-round, and refuses what it cannot run. Each federated run is a child process
(test_federated_rounds._scenario)."""

from __future__ import annotations

import numpy as np
import pytest

from rec.config import ConfigError, FedConfig, load_config
from rec.federated.secagg import SECAGG_MODULUS, secagg_plan


STEP = 2 * 8.0 / 2**22  # one quantization level at the defaults (clipping_range 8, quantization_range 2**22)


def _keys(a) -> list[str]:  # noqa: ANN001 - an NpzFile
    return sorted(k.split("/", 1)[1] for k in a.files if k.startswith("init/"))


@pytest.mark.slow
@pytest.mark.integration
def test_secure_average_equals_the_plain_average_within_the_quantization_step(small_backbone_dir, small_backbone, tmp_path):
    """rec fed's recipe, one FedAvg round of the same 4 clients, fed.secagg=false vs true.

    Tolerance ``STEP = 2 * 8 / 2**22 = 3.8e-6`` (SecAggPlan.tolerance at the defaults): the masks
    cancel exactly (integers mod 2^32); the only error is each client's stochastic rounding of
    ``(w_i / max_weight) * x_i`` to one quantization step over [-8, 8], and the server divides the
    sum by ``sum_i w_i / max_weight``; every client weighs 1 row and max_weight = 1, so the average
    is off by less than one step. Local training is seeded per (seed, round, partition), so both
    runs average the same four updates. The secure run publishes an ordinary adapter recording its
    SecAgg+ settings.
    """
    from rec.adaptation.artifacts import load_adapter
    from rec.io.artifacts import read_manifest
    from tests.rec.federated.test_federated_rounds import _scenario

    res = _scenario("secagg_vs_plain", small_backbone_dir, tmp_path)
    secure, plain = res["secagg"], res["plain"]
    assert [h["clients"] for h in secure["history"]] == [h["clients"] for h in plain["history"]] == [4]
    s, p = np.load(tmp_path / "secagg" / "final.npz"), np.load(tmp_path / "plain" / "final.npz")
    assert secure["moved"] and sorted(s.files) == sorted(p.files) == secure["tensors"]
    for k in s.files:
        assert s[k].dtype == np.float32
        np.testing.assert_allclose(s[k], p[k], rtol=0, atol=STEP + 1e-7, err_msg=k)
    # it costs more: 4 exchanges instead of 1, masked int64 vectors instead of float32
    hs, hp = secure["history"][0], plain["history"][0]
    assert hp["wire_up"] > hp["bytes_up"] == 4 * plain["adapter_bytes"] and hs["bytes_up"] is None and hs["train_loss"] is None
    assert hs["wire_up"] > 1.5 * hp["wire_up"] and hs["wire_down"] > hp["wire_down"]
    model, manifest = load_adapter(secure["adapter"], small_backbone.model, small_backbone.checksum)
    read_manifest(secure["adapter"], kind="adapter")  # checksums verify
    block = manifest["federated"]["secagg"]
    assert (block["shares_per_client"], block["threshold"], block["max_weight"]) == (4, 2, 1.0)
    assert block["clipping_range"] == 8.0 and block["quantization_range"] == 2**22 and manifest["federated"]["config"]["secagg"]


@pytest.mark.slow
@pytest.mark.integration
def test_secure_rounds_survive_a_client_dropping_mid_round(small_backbone_dir, tmp_path):
    """2 SecAgg+ rounds of 4 clients (num_shares 1.0 = all 4, threshold 0.6 -> 2 shares), one client a round
    crashing while it trains, i.e. after the key exchange and before its masked vector: Flower's
    simulation delivers each SecAgg+ stage as its own message, and ClientFaults raises inside the
    training call of the collect-masked-vectors stage (a crash during setup or key sharing would
    just leave the client out of the masks). The server rebuilds the dropped client's pairwise masks
    from its neighbours' shares; every round's global adapter is the survivors' plain average from
    that round's start within one quantization step (an unremoved mask would be off by ~clipping_range).
    """
    from tests.rec.federated.test_federated_rounds import _scenario

    res = _scenario("secagg_dropout", small_backbone_dir, tmp_path)
    assert [(r["sampled"], r["replies"], r["failed"]) for r in res["rounds"]] == [(4, 3, 1), (4, 3, 1)]
    assert all(len(v) == 3 for v in res["survivors"].values())
    a = np.load(tmp_path / "arrays.npz")
    keys = _keys(a)
    for r in (1, 2):
        assert max(float(np.abs(a[f"expected{r}/{k}"] - a[f"init/{k}"]).max()) for k in keys) > 1000 * STEP
        for k in keys:
            np.testing.assert_allclose(a[f"secagg{r}/{k}"], a[f"expected{r}/{k}"], rtol=0, atol=STEP + 1e-7, err_msg=f"round {r} {k}")


def test_secagg_settings_are_checked_with_a_message_that_says_what_to_set():
    with pytest.raises(ConfigError, match="use one of the two"):
        load_config(None, ["fed.secagg=true", "fed.client_dp=fixed", "fed.noise_multiplier=1"])
    with pytest.raises(ConfigError, match="fed.secagg_num_shares=2: a count must be > 2"):
        load_config(None, ["fed.secagg=true", "fed.secagg_num_shares=2"])
    with pytest.raises(ConfigError, match="at most 1.0"):
        load_config(None, ["fed.secagg=true", "fed.secagg_reconstruction_threshold=1.5"])
    with pytest.raises(ConfigError, match="must be >= 2 and < fed.secagg_num_shares"):
        load_config(None, ["fed.secagg=true", "fed.secagg_num_shares=5", "fed.secagg_reconstruction_threshold=5"])
    with pytest.raises(ConfigError, match="fed.secagg_quantization_range"):
        load_config(None, ["fed.secagg=true", f"fed.secagg_quantization_range={SECAGG_MODULUS}"])
    ok = load_config(None, ["fed.secagg=true", "fed.local_dp=true", "fed.keep=best", "fed.strategy=fedadam"]).fed
    assert ok.secagg and ok.local_dp  # local DP-SGD noise happens before masking: the two combine
    with pytest.raises(ValueError, match=">= 3 clients per round"):
        secagg_plan(FedConfig(secagg=True), 2, 10, [1] * 10)
    with pytest.raises(ValueError, match="fed.secagg_num_shares=7 > 5"):
        secagg_plan(FedConfig(secagg=True, secagg_num_shares=7, secagg_reconstruction_threshold=4), 5, 10, [1] * 10)
    with pytest.raises(ValueError, match=r"set fed.secagg_quantization_range <= \d+"):
        secagg_plan(FedConfig(secagg=True), 1024, 2000, [1] * 2000)
    with pytest.raises(ValueError, match="fed.drop_fraction=0.75 can drop 3"):
        secagg_plan(FedConfig(secagg=True, drop_fraction=0.75), 4, 4, [1] * 4)
    plan = secagg_plan(FedConfig(secagg=True), 5, 10, [3, 1, 7])
    assert (plan.shares_per_client, plan.threshold, plan.max_weight) == (5, 3, 7.0)
    assert plan.tolerance(1.0) == pytest.approx(7 * 2 * 8.0 / 2**22)


def test_cli_refuses_secagg_with_server_side_dp_in_one_line(small_backbone_dir):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "rec.cli", "fed", "--backbone", str(small_backbone_dir), "fed.secagg=true",
                        "fed.client_dp=fixed", "fed.noise_multiplier=1"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rec fed: error:") and "fed.secagg" in lines[0]
