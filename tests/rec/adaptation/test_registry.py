"""The adaptation-method registry: one object per method, read by config, CLI, Tune and export."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rec.adaptation.registry import (
    AdaptationMethod,
    ExportKind,
    UnknownMethod,
    all_methods,
    config_owner,
    get_method,
    method_names,
    register,
)
from rec.config import AdaptConfig, ConfigError, load_config


def test_every_builtin_method_is_registered_with_its_export_kind():
    kinds = {m.name: m.export for m in all_methods()}
    assert kinds == {"zero-shot": ExportKind.BASE, "item-terms": ExportKind.CATALOG, "head": ExportKind.CATALOG,
                     "prompt": ExportKind.GRAPH_INPUTS, "lora": ExportKind.GRAPH_INPUTS, "full": ExportKind.MERGED_ONLY,
                     "text-lora": ExportKind.CATALOG}
    assert method_names() == sorted(kinds)


def test_config_sections_come_from_the_methods():
    cfg = AdaptConfig()
    assert cfg.lora.rank == 8 and cfg.prompt_length == 4 and cfg.item_terms.popularity_floor
    assert config_owner("adapt.lora.rank") == "lora" and config_owner("prompt_length") == "prompt"
    assert config_owner("adapt.item_terms.id_residual") == "item-terms" and config_owner("adapt.lr") is None


def test_unknown_method_is_one_clear_error():
    with pytest.raises(ConfigError, match=r"'nope' is not a registered adaptation method: choose one of \['full', "):
        load_config(None, ["adapt.method=nope"])
    with pytest.raises(UnknownMethod, match="docs/adaptation.md"):
        get_method("nope")


def test_a_method_cannot_take_another_methods_name_or_config_section():
    class Clash(AdaptationMethod):
        name = "clash"
        summary = "test"
        export = ExportKind.BASE
        config_fields = {"lora": (int, 1)}

    with pytest.raises(ValueError, match="adapt.lora already belongs to method 'lora'"):
        register(Clash())

    class Twin(AdaptationMethod):
        name = "lora"
        summary = "test"
        export = ExportKind.BASE

    with pytest.raises(ValueError, match="registered twice"):
        register(Twin())
    assert "clash" not in method_names() and type(get_method("lora")).__name__ == "Lora"


def test_reading_a_config_does_not_import_torch():
    code = "import sys, rec.config; rec.config.load_config(None, ['adapt.method=item-terms']); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_an_adapter_of_an_unregistered_method_is_an_artifact_error(small_backbone, tmp_path):
    from rec.adaptation.artifacts import load_adapter
    from rec.io.artifacts import ArtifactError, artifact_writer

    with artifact_writer(tmp_path / "v1", kind="adapter", meta={"method": "from-the-future"}) as d:
        (d / "adapter_config.json").write_text('{"peft_type": null, "rec_method": "from-the-future"}')
    with pytest.raises(ArtifactError, match="unknown adaptation method 'from-the-future'"):
        load_adapter(tmp_path / "v1", small_backbone.model)
