"""Sweep files: parsing, validation errors that name the key, Tune round trip, shipped YAMLs."""

from __future__ import annotations

from pathlib import Path

import pytest
from ray import tune

from rec.cli import main
from rec.config import RecConfig
from tuning.search_spaces import Param, SweepError, SweepSpec, load_sweep, space_from_tune, trial_config

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted((REPO / "tuning" / "configs").glob("*.yaml"))

SPACE = {
    "adapt.method": {"choice": ["lora", "prompt", "head"]},
    "adapt.lr": {"loguniform": [1.0e-4, 1.0e-2]},
    "adapt.lora.rank": {"choice": [4, 8, 16]},
    "adapt.lora.alpha": {"uniform": [4, 32]},
    "adapt.lora.target_modules": {"choice": [["q_proj", "v_proj"], ["q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2", "adaptor.proj"]]},
    "adapt.epochs": {"qrandint": [2, 10, 2]},
    "adapt.batch_size": {"randint": [16, 65]},
    "adapt.patience": 3,
}


def _spec(**kw) -> dict:
    return {"name": "t", "tenants": ["a"], "k_users": [16, None], "search_space": dict(SPACE), **kw}


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_every_shipped_sweep_validates(path):
    spec = load_sweep(path)
    assert spec.check_against(RecConfig().model_dump(mode="json")) == []
    assert spec.swept() and spec.tune_space()


def test_shipped_sweeps_include_quick_and_200_trials():
    names = {p.name for p in SHIPPED}
    assert {"quick.yaml", "sweep-200.yaml"} <= names
    big = load_sweep(REPO / "tuning/configs/sweep-200.yaml")
    assert big.num_samples * len(big.k_users) >= 200


def test_valid_spec_defaults_and_max_epochs():
    spec = load_sweep(_spec())
    assert spec.search == "optuna" and spec.scheduler.type == "asha" and spec.num_samples == 8
    assert spec.max_epochs(base_epochs=20) == 10
    assert load_sweep({"name": "x"}).max_epochs(base_epochs=7) == 7
    assert [p.key for p in spec.swept()] == [k for k in SPACE if k != "adapt.patience"]


def test_typo_in_top_level_and_scheduler_keys_is_named():
    with pytest.raises(SweepError) as e:
        load_sweep(_spec(serach="optuna", scheduler={"type": "asha", "grace": 2}))
    assert "unknown key 'serach'" in str(e.value) and "unknown key 'scheduler.grace'" in str(e.value)


def test_unknown_dotted_config_key_is_named():
    with pytest.raises(SweepError, match=r"unknown key 'adapt.lora.rnk'"):
        load_sweep(_spec(search_space={"adapt.lora.rnk": {"choice": [4, 8]}}))


def test_every_problem_is_reported_at_once():
    bad = {
        "adapt.lora.rnk": {"choice": [4]},  # unknown key
        "model.d_model": 32,  # not tunable
        "adapt.k_users": {"choice": [8, 16]},  # reserved
        "adapt.lr": {"loguniform": [0, 1]},  # bad range
        "adapt.lora.target_modules": {"choice": [["q_proj"], ["qq_proj"]]},  # a value the config rejects
        "adapt.epochs": {"randint": [0, 5]},  # low end rejected (epochs >= 1)
        "adapt.method": {"choise": ["lora"]},  # unknown distribution
    }
    with pytest.raises(SweepError) as e:
        load_sweep(_spec(search_space=bad))
    msg = str(e.value)
    for key in bad:
        assert repr(key) in msg, key
    assert "qq_proj" in msg and "top-level `k_users:`" in msg and "only adapt.* keys" in msg


@pytest.mark.parametrize(
    "field, value, needle",
    [
        ("search", "grid", "search"),
        ("num_samples", 0, "num_samples"),
        ("cpus_per_trial", 0, "cpus_per_trial"),
        ("k_users", [0], "k_users"),
        ("tenants", ["a", "a"], "duplicates"),
        ("name", "../escape", "name"),
    ],
)
def test_bad_values_name_the_field(field, value, needle):
    with pytest.raises(SweepError, match=needle):
        load_sweep(_spec(**{field: value}))


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(SweepError, match="not found"):
        load_sweep(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    with pytest.raises(SweepError, match="not valid YAML"):
        load_sweep(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- a\n")
    with pytest.raises(SweepError, match="mapping"):
        load_sweep(tmp_path / "list.yaml")


def test_check_against_the_base_config():
    spec = SweepSpec.model_construct(**_spec(search_space={"adapt.lora.rank": {"choice": [4, 512]}}))  # unvalidated
    errs = spec.check_against(RecConfig().model_dump(mode="json"))
    assert len(errs) == 1 and "adapt.lora.rank" in errs[0] and "512" in errs[0]


def test_tune_space_round_trip():
    spec = load_sweep(_spec())
    space = spec.tune_space()
    assert isinstance(space["adapt.lr"], tune.search.sample.Float)
    assert space["adapt.patience"] == 3
    assert space_from_tune(space) == SPACE
    assert space_from_tune({"adapt.lr": tune.qloguniform(1e-4, 1e-1, 1e-4), "adapt.rank": tune.lograndint(1, 64)}) == {
        "adapt.lr": {"qloguniform": [1e-4, 1e-1, 1e-4]},
        "adapt.rank": {"lograndint": [1, 64]},
    }


def test_trial_config_decodes_list_choices_and_tags_tenant_and_k():
    spec = load_sweep(_spec())
    sampled = {k: (v.sample() if hasattr(v, "sample") else v) for k, v in spec.tune_space().items()}
    assert isinstance(sampled["adapt.lora.target_modules"], str)  # lists travel as JSON strings
    cfg = trial_config(RecConfig().model_dump(mode="json"), spec, {"tenant": "a", "k_users": None, **sampled})
    assert cfg.adapt.tenant == "a" and cfg.adapt.k_users is None and cfg.adapt.torch_threads == 1
    assert cfg.adapt.lora.target_modules in (["q_proj", "v_proj"], ["q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2", "adaptor.proj"])
    assert cfg.adapt.patience == 3 and 2 <= cfg.adapt.epochs <= 10 and cfg.adapt.epochs % 2 == 0
    assert Param("adapt.lr", "loguniform", (1e-4, 1e-2)).samples() == [1e-4, 1e-2]


def test_cli_rejects_a_bad_sweep_before_loading_anything(tmp_path, capsys):
    (tmp_path / "s.yaml").write_text("name: s\nsearch_space:\n  adapt.lora.rnk: {choice: [4]}\n")
    rc = main(["tune", "--backbone", str(tmp_path / "none"), "--sweep", str(tmp_path / "s.yaml")])
    assert rc == 2
    assert "adapt.lora.rnk" in capsys.readouterr().err


def test_spec_model_forbids_extra_keys():
    assert SweepSpec.model_config["extra"] == "forbid"
