from pathlib import Path

import pytest

from rec.config import ConfigError, RecConfig, apply_overrides, load_config

REPO = Path(__file__).resolve().parents[1]


def test_defaults_and_overrides():
    cfg = load_config(None, ["train.epochs=3", "model.d_model=128", "eval.ks=[1, 10]", "ray.address=null"])
    assert isinstance(cfg, RecConfig)
    assert cfg.train.epochs == 3 and cfg.model.d_model == 128 and cfg.eval.ks == [1, 10]
    assert cfg.ray.address is None


def test_list_item_override(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("data:\n  sources:\n    - {format: seqrec, path: a}\n")
    cfg = load_config(p, ["data.sources.0.path=b", "data.sources.0.max_users=10"])
    assert cfg.data.sources[0].path == "b" and cfg.data.sources[0].max_users == 10


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match="unknown key 'train.epocs'"):
        load_config(None, ["train.epocs=3"])


def test_all_errors_reported_at_once():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["train.epochs=0", "model.dropout=2", "nope.x=1"])
    msg = str(e.value)
    assert "train.epochs" in msg and "model.dropout" in msg and "unknown key 'nope'" in msg


def test_cross_field_validation():
    with pytest.raises(ConfigError, match="divisible"):
        load_config(None, ["model.d_model=30", "model.n_heads=4"])
    with pytest.raises(ConfigError, match="model.max_len"):
        load_config(None, ["model.max_len=10", "data.max_seq_len=50"])
    with pytest.raises(ConfigError, match="adalora_init_rank"):
        load_config(None, ["adapt.lora.kind=adalora", "adapt.lora.rank=16"])
    assert load_config(None, ["adapt.lora.kind=adalora"]).adapt.lora.adalora_init_rank == 12


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(scalar)


def test_override_syntax():
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["train.epochs"])


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_validate(path):
    load_config(path)


def test_extends_applies_a_file_on_top_of_another(tmp_path):
    (tmp_path / "base.yaml").write_text("train: {epochs: 3, lr: 0.01}\ndata: {max_seq_len: 20}\nmodel: {max_len: 20}\n")
    (tmp_path / "child.yaml").write_text("extends: base.yaml\ntrain: {epochs: 5}\n")
    cfg = load_config(tmp_path / "child.yaml")
    assert (cfg.train.epochs, cfg.train.lr, cfg.data.max_seq_len) == (5, 0.01, 20)
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "lost.yaml").write_text("extends: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="nowhere.yaml"):
        load_config(tmp_path / "lost.yaml")


def test_data_formats_are_the_loaders_formats():
    from rec.config import data_formats
    from rec.data.loaders import FORMATS

    assert set(data_formats()) == {"synthetic", *FORMATS}
    with pytest.raises(ConfigError, match="unknown data format 'csvv'.*generic"):
        load_config(None, ["data.sources=[{format: csvv, path: x}]"])


def test_export_settings_are_config_keys_with_the_allowed_values_named():
    cfg = load_config(None, ["export.int8=true", "export.catalog_dtype=int8", "export.opset=18"])
    assert (cfg.export.int8, cfg.export.catalog_dtype, cfg.export.opset, cfg.export.real_data_parity) == (True, "int8", 18, True)
    with pytest.raises(ValueError, match="fp32.*fp16.*int8"):
        load_config(None, ["export.catalog_dtype=int4"])
    with pytest.raises(ValueError, match="export.opsett"):
        load_config(None, ["export.opsett=18"])
