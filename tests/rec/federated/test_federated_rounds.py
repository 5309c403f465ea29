"""Real federated rounds: Flower's simulation on a local 2-CPU Ray, each run in a child process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.slow, pytest.mark.integration]

SCRIPT = Path(__file__).with_name("fed_scenarios.py")
ROOT = Path(__file__).resolve().parents[3]


def _scenario(name: str, backbone_dir: Path, out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "RAY_USAGE_STATS_ENABLED": "0"}
    for _ in range(2):
        r = subprocess.run([sys.executable, str(SCRIPT), name, str(backbone_dir), str(out)], capture_output=True, text=True,
                           timeout=900, env=env, cwd=ROOT)
        # A local Ray that cannot register its raylet within Ray's fixed 30 s (a saturated shared
        # machine) is an infrastructure failure, not the run's: start it once more.
        if r.returncode == 0 or "timed out during startup" not in r.stderr:
            break
    assert r.returncode == 0, r.stderr[-4000:]
    return json.loads((out / "result.json").read_text())


def test_fedavg_of_identical_clients_is_the_client(small_backbone_dir, tmp_path):
    res = _scenario("identical", small_backbone_dir, tmp_path)
    assert res["rounds"][0]["replies"] == 3 and res["rounds"][0]["failed"] == 0
    a = np.load(tmp_path / "arrays.npz")
    keys = [k.removeprefix("fed/") for k in a.files if k.startswith("fed/")]
    assert keys and {k.removeprefix("alone/") for k in a.files if k.startswith("alone/")} == set(keys)
    assert any(not np.array_equal(a[f"alone/{k}"], a[f"init/{k}"]) for k in keys), "the client did not train"
    for k in keys:
        np.testing.assert_allclose(a[f"fed/{k}"], a[f"alone/{k}"], rtol=1e-6, atol=1e-7, err_msg=k)


def test_fedprox_survives_dropped_clients_and_rejects_bad_updates(small_backbone_dir, small_backbone, tmp_path):
    from rec.adaptation.artifacts import load_adapter
    from rec.io.artifacts import read_manifest

    res = _scenario("fedprox_faults", small_backbone_dir, tmp_path)
    hist = res["history"]
    assert [h["round"] for h in hist] == [1, 2]
    assert all(h["clients"] >= 1 for h in hist), hist  # no round lost
    assert sum(h["failed"] for h in hist) >= 1 and sum(h["rejected"] for h in hist) >= 1, hist
    assert all(h["clients"] + h["failed"] + h["rejected"] == h["sampled"] for h in hist)
    assert all(h["bytes_up"] == h["clients"] * res["adapter_bytes"] for h in hist)  # upload per client = the adapter
    # The result is an ordinary adapter: it loads through the adapter loader and scores as the trained model did.
    model, manifest = load_adapter(res["adapter"], small_backbone.model, small_backbone.checksum)
    assert manifest["method"] == "lora" and manifest["federated"]["history"] == hist
    # fed.keep=best: the published adapter is the round with the best server-side validation NDCG@10
    evaluated = {h["round"]: h["val_ndcg@10"] for h in hist if h.get("val_ndcg@10") is not None}
    kept = manifest["federated"]["kept_round"]
    assert kept == 0 or evaluated[kept] == max(evaluated.values()), (kept, evaluated)
    read_manifest(res["adapter"], kind="adapter")  # checksums verify
    from rec.data.padding import PAD, left_pad
    from rec.data.synthetic import generate_tenants
    from rec.text import encode_items

    tenant = generate_tenants(small_backbone.cfg.data.synthetic.model_copy(update={"tenants": 3}))[2]
    with torch.no_grad():
        cat = model.item_representations(torch.from_numpy(encode_items(list(tenant.items.text), small_backbone.cfg.text)))
        idx = torch.tensor(left_pad([tenant.sequence(u)[:-1] for u in range(5)], 20))
        scores = model.scores(model.user_vector(cat[idx.clamp(min=0)], idx == PAD), cat).numpy()
    np.testing.assert_allclose(scores, np.load(tmp_path / "scores.npy"), rtol=1e-4, atol=1e-4)


def test_fedadam_runs(small_backbone_dir, tmp_path):
    res = _scenario("fedadam", small_backbone_dir, tmp_path)
    assert res["history"][0]["clients"] == 3 and 0.0 <= res["valid"]["ndcg@10"] <= 1.0


def test_client_level_and_local_dp_report_the_recomputed_epsilons_and_lora_moves(small_backbone_dir, tmp_path):
    from rec.federated import privacy

    res = _scenario("dp_fixed", small_backbone_dir, tmp_path)
    p = res["privacy"]
    assert p["delta"] == pytest.approx(1 / res["clients"]) and p["sample_rate"] == pytest.approx(4 / res["clients"])
    expected = privacy.client_level_epsilon(noise_multiplier=1.0, sample_rate=4 / res["clients"], rounds=2, delta=1 / res["clients"])
    assert p["epsilon"] == pytest.approx(expected, rel=1e-9) and 0 < p["epsilon"] < float("inf")
    # DP-SGD on the clients (opacus#820: LoRA must move, and only LoRA travels)
    assert res["tensors"] and all("lora_" in k for k in res["tensors"]), res["tensors"]
    assert res["moved"], "no LoRA tensor moved under local DP-SGD + client-level DP"
    lp = res["local_privacy"]
    assert lp["delta"] == pytest.approx(1 / 12) and lp["rounds"] == 2 and lp["noise_multiplier"] == 0.8
    steps = -(-lp["min_examples"] // 16)
    assert lp["epsilon"] == pytest.approx(privacy.client_level_epsilon(noise_multiplier=0.8, sample_rate=1 / steps,
                                                                       rounds=steps * lp["local_epochs"] * 2, delta=1 / 12), rel=1e-9)
