"""bench/transfer_scale.py's data path: the compact export reads back as the same tenant, and its
user sample is the few-shot benchmark's (``load_source``'s ``max_users``), on a real dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.fewshot import compact_catalog
from bench.transfer_scale import read_tenant, sample_users, save_tenant
from rec.config import TenantSource
from rec.data.loaders import load_source


def _sequences_by_id(t) -> list[list[str]]:  # noqa: ANN001
    return [[str(t.items.ids[i]) for i in t.sequence(u)] for u in range(t.num_users)]


def test_export_round_trip_and_the_benchmarks_user_sample(datasets_dir: Path, tmp_path: Path) -> None:
    src = TenantSource(format="movielens-100k", path=str(datasets_dir / "ml-100k"), name="ml-100k", seed=3)
    full = load_source(src, min_seq_len=3)
    save_tenant(full, tmp_path)
    back = read_tenant(tmp_path, "ml-100k")
    assert back.num_users == full.num_users and list(back.items.ids) == list(full.items.ids)
    assert back.items.text == list(full.items.text)
    np.testing.assert_array_equal(back.offsets, full.offsets)
    np.testing.assert_array_equal(back.item_index, full.item_index)
    # the probe's 300-user sample is the one load_source(max_users=300) gives the benchmark
    sampled = sample_users(back, 300, src.seed)
    bench = compact_catalog(load_source(src.model_copy(update={"max_users": 300}), min_seq_len=3))
    assert sampled.num_users == 300 and sampled.num_items == bench.num_items
    assert _sequences_by_id(sampled) == _sequences_by_id(bench)
    assert sample_users(back, 0, src.seed).num_users == full.num_users  # 0 = every user
