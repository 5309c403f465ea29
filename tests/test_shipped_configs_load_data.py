"""Every shipped config that points at real data loads it (first 50 users per source)."""

from pathlib import Path

import pytest

from rec.config import load_config
from rec.training.corpus import load_tenants

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.realdata
@pytest.mark.parametrize("name", ["beauty.yaml", "multi-tenant.yaml"])
def test_real_data_configs_load(name, datasets_dir, monkeypatch):
    monkeypatch.chdir(REPO)
    cfg = load_config(REPO / "configs" / name)
    for src in cfg.data.sources:
        src.max_users = 50
    tenants = load_tenants(cfg.data)
    assert len(tenants) == len(cfg.data.sources)
    assert all(t.num_users == 50 and t.items.has_text for t in tenants)
