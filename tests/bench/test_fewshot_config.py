"""The few-shot benchmark configs: the reduced protocol extends the full one and changes three values."""

from __future__ import annotations

from pathlib import Path

from bench.fewshot_config import load_bench_config, with_data_root
from rec.data.paths import DEFAULT_DATA_ROOT

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_2core_differs_from_the_full_protocol_in_three_values_only():
    full, reduced = load_bench_config(BENCH / "fewshot.yaml"), load_bench_config(BENCH / "fewshot-2core.yaml")
    a, b = full.model_dump(mode="json"), reduced.model_dump(mode="json")
    assert {k for k in a if a[k] != b[k]} == {"runs_dir", "meta"}
    assert {k for k in a["meta"] if a["meta"][k] != b["meta"][k]} == {"meta.outer_epochs", "meta.meta_iterations"}
    assert (b["meta"]["meta.outer_epochs"], b["meta"]["meta.meta_iterations"]) == (2, 30)


def test_dataset_paths_are_relative_and_resolve_under_the_data_root(tmp_path):
    bc = load_bench_config(BENCH / "fewshot.yaml")
    srcs = [*bc.sources, *bc.holdout, *bc.targets]
    assert not any(Path(s.path).is_absolute() for s in srcs)
    resolved = with_data_root(bc.model_copy(update={"data_root": str(tmp_path)}), "/ignored/when/data_root/is/set")
    assert all(Path(s.path).parent.is_relative_to(tmp_path.resolve()) for s in [*resolved.sources, *resolved.targets])
    if DEFAULT_DATA_ROOT.is_dir():
        assert with_data_root(bc, None).targets[0].path == str(DEFAULT_DATA_ROOT / "ml-100k")
