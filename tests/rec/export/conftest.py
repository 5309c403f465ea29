"""Fixtures for the export tests: the small pretrained backbone, real adapters, one exported model.

The serving model is exported once per session through the CLI (``rec export --int8``), i.e. the
way users produce it; every test then reads that artifact.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from rec.adaptation.adapt import adapt_tenant, publish_adapter
from rec.adaptation.artifacts import load_adapter
from rec.config import AdaptConfig, LoraConfig
from rec.text import encode_items
from rec.training.checkpoint import export_backbone

#: name -> adaptation config; LoRA at ranks 4/8/16 (16 on a subset of projections, incl. adaptor.proj)
ADAPTERS = {
    "head": AdaptConfig(method="head"),
    "prompt": AdaptConfig(method="prompt", prompt_length=3),
    "lora-r4": AdaptConfig(method="lora", lora=LoraConfig(rank=4, alpha=8)),
    "lora-r8": AdaptConfig(method="lora", lora=LoraConfig(rank=8, alpha=16)),
    "lora-r16": AdaptConfig(method="lora", lora=LoraConfig(rank=16, alpha=8, target_modules=["q_proj", "v_proj", "fc2", "adaptor.proj"],
                                                          train_adaptor=False)),  # LoRA on the adaptor, merged into the catalog
    "lora-adaptor": AdaptConfig(method="lora", lora=LoraConfig(rank=4, alpha=8, train_adaptor=True)),
    "adalora": AdaptConfig(method="lora", lora=LoraConfig(kind="adalora", rank=4, adalora_init_rank=8, adalora_warmup=0.0,
                                                          adalora_final=0.0)),  # ranks pruned from 8 over the 3 epochs
    "full": AdaptConfig(method="full"),
    # bias + ID residual + adaptor, all catalog-side; no floor, so the trained terms are what ships
    "item-terms": AdaptConfig(method="item-terms", item_terms={"id_residual": True, "train_adaptor": True,
                                                               "popularity_floor": False}),
}


@pytest.fixture(scope="session")
def backbone_dir(small_backbone, tmp_path_factory):  # noqa: F811
    b = small_backbone
    path = export_backbone(tmp_path_factory.mktemp("export-bb") / "checkpoint", b.model.state_dict(), b.cfg, b.tenants, {}, b.manifest.get("text_model"))
    return path


@pytest.fixture(scope="session")
def tenant_text(small_backbone, new_tenant):  # noqa: F811
    return encode_items(list(new_tenant.items.text), small_backbone.cfg.text)


@pytest.fixture(scope="session")
def adapters(small_backbone, new_tenant, tenant_text, tmp_path_factory):  # noqa: F811
    """Adapter folders trained for a few epochs by ``adapt_tenant`` (real PEFT artifacts)."""
    root = tmp_path_factory.mktemp("adapters")
    out = {}
    for name, base_cfg in ADAPTERS.items():
        acfg = base_cfg.model_copy(update=dict(k_users=32, epochs=3, patience=3, lr=1e-2, torch_threads=1))
        res = adapt_tenant(small_backbone, new_tenant, acfg, text_emb=tenant_text)
        out[name] = publish_adapter(res, small_backbone, acfg, root=root / name)
    return out


@pytest.fixture(scope="session")
def serving_dir(backbone_dir, tmp_path_factory):
    """``rec export --int8`` of the small backbone (real-data parity on its last configured tenant)."""
    from rec.cli import main

    out = tmp_path_factory.mktemp("serving") / "model"
    assert main(["export", "--backbone", str(backbone_dir), "--out", str(out), "--int8"]) == 0
    return out


@pytest.fixture(scope="session")
def ranker(serving_dir):
    from rec.serving.runtime import SharedRanker

    return SharedRanker(serving_dir)


@pytest.fixture(scope="session")
def bundles(small_backbone, new_tenant, tenant_text, adapters, tmp_path_factory):  # noqa: F811
    """fp32 tenant bundles, loaded: zero-shot plus every adapter the shared graph can serve."""
    from rec.export.tenant_bundle import export_tenant_bundle
    from rec.serving.bundles import load_tenant_bundle

    root = tmp_path_factory.mktemp("bundles")
    out = {"zero-shot": load_tenant_bundle(export_tenant_bundle(small_backbone, new_tenant, tenant_text, None, root / "zero-shot"))}
    for name, path in adapters.items():
        if name != "full":
            out[name] = load_tenant_bundle(export_tenant_bundle(small_backbone, new_tenant, tenant_text, path, root / name))
    return out


def reference_scores(loaded, adapter_dir, text_emb: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:
    """Scores the reference way: PEFT-merged adapted backbone in torch, one row at a time."""
    model = copy.deepcopy(loaded.model).eval() if adapter_dir is None else load_adapter(adapter_dir, loaded.model, loaded.checksum)[0]
    max_len = loaded.cfg.data.max_seq_len
    with torch.no_grad():
        cat = model.item_representations(torch.from_numpy(text_emb))
        rows = []
        for h in histories:
            idx = torch.from_numpy(np.asarray(h[-max_len:], np.int64))[None]
            rows.append(model.scores(model.user_vector(cat[idx], torch.zeros_like(idx, dtype=torch.bool)), cat))
        return torch.cat(rows).numpy()


def histories(tenant, n: int = 40, seed: int = 0) -> list[np.ndarray]:
    """``n`` users' histories (all but the last item), seeded."""
    rng = np.random.default_rng(seed)
    users = rng.choice(tenant.num_users, min(n, tenant.num_users), replace=False)
    return [tenant.sequence(int(u))[:-1] for u in users if len(tenant.sequence(int(u))) >= 2]
