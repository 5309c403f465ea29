"""The data root rule: relative source paths live under data.root / $REC_DATA_ROOT / ../shared/datasets."""

from __future__ import annotations

from pathlib import Path

import pytest

from rec.config import DATA_ROOT_ENV, TenantSource, load_config
from rec.data.loaders import load_source
from rec.data.paths import DEFAULT_DATA_ROOT, data_root, resolve_source
from rec.data.schema import DataError

REPO = Path(__file__).resolve().parents[3]


def test_default_root_is_shared_datasets_beside_the_repo():
    assert DEFAULT_DATA_ROOT == (REPO.parent / "shared" / "datasets").resolve()


def test_config_key_wins_over_environment_and_default(tmp_path):
    key, env = tmp_path / "key", tmp_path / "env"
    key.mkdir(), env.mkdir()
    assert data_root(str(key), str(env)) == key.resolve()
    assert data_root(None, str(env)) == env.resolve()


def test_missing_root_names_the_key_and_the_variable(tmp_path):
    with pytest.raises(DataError, match=rf"data\.root.*{DATA_ROOT_ENV}") as e:
        data_root(None, str(tmp_path / "absent"))
    assert f"${DATA_ROOT_ENV}" in str(e.value) and str(tmp_path / "absent") in str(e.value)


def test_relative_paths_join_the_root_absolute_ones_stay(tmp_path):
    rel = TenantSource(format="generic", path="a/interactions.csv", items_path="a/items.csv")
    out = resolve_source(rel, tmp_path)
    assert out.path == str(tmp_path.resolve() / "a/interactions.csv") and out.items_path == str(tmp_path.resolve() / "a/items.csv")
    absolute = TenantSource(format="generic", path=str(tmp_path / "x.csv"))
    assert resolve_source(absolute, tmp_path / "absent") is absolute  # no root needed, none checked


def test_loader_reads_a_relative_path_from_the_root(tmp_path):
    (tmp_path / "t").mkdir()
    rows = ["user_id,item_id,timestamp"] + [f"u{u},i{(u + j) % 5},{j}" for u in range(4) for j in range(4)]
    (tmp_path / "t" / "events.csv").write_text("\n".join(rows) + "\n")
    tenant = load_source(TenantSource(format="generic", path="t/events.csv", name="t"), root=tmp_path)
    assert tenant.num_users == 4
    with pytest.raises(DataError, match="data.root"):
        load_source(TenantSource(format="generic", path="t/events.csv", name="t"), root=tmp_path / "absent")


def test_load_config_takes_the_environment_value_only_when_the_config_has_no_root(tmp_path):
    assert load_config(None, [], data_root="/from/env").data.root == "/from/env"
    assert load_config(None, ["data.root=/from/override"], data_root="/from/env").data.root == "/from/override"
    f = tmp_path / "c.yaml"
    f.write_text("data: {root: /from/file}\n")
    assert load_config(f, [], data_root="/from/env").data.root == "/from/file"
    assert load_config(None, []).data.root is None
