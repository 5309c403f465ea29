"""A serving artifact root built once per session from the tiny backbone of the adaptation tests.

Tenants: ``podcasts`` (unseen by the backbone) v1 zero-shot + v2 LoRA, ``books`` v1 prompt,
``courses`` v1 zero-shot only. Together they put LoRA, prompt and zero-shot rows in one batch.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from rec.adaptation.adapt import adapt_tenant, publish_adapter
from rec.config import AdaptConfig
from rec.data.schema import Tenant
from rec.data.synthetic import generate_tenants
from rec.serving.publish import ensure_serving_model, publish_tenant
from rec.text import encode_items
from rec.training.checkpoint import LoadedBackbone
from tests.rec.adaptation.conftest import new_tenant, small_backbone  # noqa: F401 - fixtures reused


@dataclass
class ServingWorld:
    """What the serving tests share (read-only: copy ``root`` before publishing into it)."""

    root: Path
    loaded: LoadedBackbone
    tenants: dict[str, Tenant]
    text_emb: dict[str, np.ndarray]
    adapters: dict[str, Path]


@pytest.fixture(scope="session")
def serving_world(tmp_path_factory, small_backbone, new_tenant) -> ServingWorld:  # noqa: F811
    tmp = tmp_path_factory.mktemp("serving")
    syn = small_backbone.cfg.data.synthetic.model_copy(update={"tenants": 3})
    tenants = {t.name: t for t in generate_tenants(syn)}
    assert new_tenant.name == "podcasts"
    text_emb = {n: encode_items(list(t.items.text), small_backbone.cfg.text) for n, t in tenants.items()}
    adapters = {}
    for name, method in (("podcasts", "lora"), ("books", "prompt")):
        acfg = AdaptConfig(method=method, k_users=48, epochs=4, lr=5e-3, patience=4, torch_threads=1,
                           output_root=str(tmp / "adapters"))
        res = adapt_tenant(small_backbone, tenants[name], acfg, text_emb=text_emb[name])
        # A LoRA adapter that never beat its zero init would be a no-op and hide routing bugs.
        assert method != "lora" or res.best_epoch >= 0, res.history
        adapters[name] = publish_adapter(res, small_backbone, acfg)
    root = tmp / "root"
    ensure_serving_model(root, small_backbone)
    publish_tenant(root, small_backbone, tenants["podcasts"], text_emb["podcasts"])
    publish_tenant(root, small_backbone, tenants["podcasts"], text_emb["podcasts"], adapters["podcasts"])
    publish_tenant(root, small_backbone, tenants["books"], text_emb["books"], adapters["books"])
    publish_tenant(root, small_backbone, tenants["courses"], text_emb["courses"])
    return ServingWorld(root, small_backbone, tenants, text_emb, adapters)


@pytest.fixture
def world_copy(serving_world, tmp_path) -> Path:
    """A private copy of the artifact root, for tests that publish or corrupt."""
    dest = tmp_path / "root"
    shutil.copytree(serving_world.root, dest)
    return dest
