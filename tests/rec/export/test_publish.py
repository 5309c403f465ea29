"""Artifact root, publish and rollback: atomic pointer, versions, verification, the CLI."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from rec.cli import main
from rec.export.publish import ensure_serving_model, publish_tenant, rollback_tenant
from rec.io.artifacts import ArtifactError
from rec.serving.bundles import load_tenant_bundle
from rec.serving.store import ArtifactRoot
from rec.training.checkpoint import export_backbone


def test_layout_of_the_shared_root(serving_world):
    store = ArtifactRoot(serving_world.root)
    assert store.tenants() == ["books", "courses", "podcasts"]
    assert store.versions("podcasts") == [1, 2] and store.current_version("podcasts") == 2
    assert load_tenant_bundle(store.version_dir("podcasts", 1)).method == "zero-shot"
    assert load_tenant_bundle(store.version_dir("podcasts", 2)).method == "lora"
    with pytest.raises(ValueError, match="invalid tenant id"):
        store.tenant_dir("../etc")


def test_rollback_and_errors(serving_world, world_copy):
    w = serving_world
    res = rollback_tenant(world_copy, "podcasts")
    assert (res.previous, res.version, res.method) == (2, 1, "zero-shot")
    assert ArtifactRoot(world_copy).current_version("podcasts") == 1
    with pytest.raises(ArtifactError, match="no version older"):
        rollback_tenant(world_copy, "podcasts")
    assert rollback_tenant(world_copy, "podcasts", to=2).version == 2
    with pytest.raises(ArtifactError, match="no complete version v7"):
        rollback_tenant(world_copy, "podcasts", to=7)
    with pytest.raises(ArtifactError, match="not published"):
        rollback_tenant(world_copy, "nobody")
    # A bundle exported from another backbone's root is refused before the pointer moves.
    other = w.loaded.model.state_dict()
    other = {k: v + 1 if v.is_floating_point() else v for k, v in other.items()}
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        from rec.training.checkpoint import load_backbone

        bb = load_backbone(export_backbone(Path(tmp) / "bb", other, w.loaded.cfg, w.loaded.tenants, {}, w.loaded.manifest["text_model"]))
        with pytest.raises(ArtifactError, match="exported from backbone"):
            ensure_serving_model(world_copy, bb)


def test_concurrent_publishers_claim_distinct_versions(serving_world, world_copy):
    w = serving_world
    results, errors = [], []

    def publish() -> None:
        try:
            results.append(publish_tenant(world_copy, w.loaded, w.tenants["courses"], w.text_emb["courses"]).version)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=publish) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and sorted(results) == [2, 3, 4]
    store = ArtifactRoot(world_copy)
    assert store.versions("courses") == [1, 2, 3, 4]
    assert store.current_version("courses") in (2, 3, 4)
    assert not [p for p in store.tenant_dir("courses").iterdir() if p.name.startswith(".")]  # no staging left


def test_a_failed_export_leaves_the_pointer_alone(serving_world, world_copy):
    w = serving_world
    with pytest.raises(ValueError, match="text_emb has shape"):
        publish_tenant(world_copy, w.loaded, w.tenants["courses"], w.text_emb["courses"][:-1])
    store = ArtifactRoot(world_copy)
    assert store.versions("courses") == [1] and store.current_version("courses") == 1


def test_cli_publish_and_rollback(serving_world, world_copy, tmp_path, capsys):
    w = serving_world
    # The CLI reads the backbone from a folder: re-export the session's backbone (same checksum).
    bb = export_backbone(tmp_path / "bb", w.loaded.model.state_dict(), w.loaded.cfg, w.loaded.tenants, {}, w.loaded.manifest["text_model"])
    assert json.loads((bb / "manifest.json").read_text())["files"]["model.safetensors"]["sha256"] == w.loaded.checksum
    root = str(world_copy)
    args = ["publish", "--root", root, "--backbone", str(bb), "--tenant", "podcasts", str(w.adapters["podcasts"]), "data.synthetic.tenants=3"]
    assert main(args) == 0
    assert "published podcasts v3 (lora, was v2)" in capsys.readouterr().out
    assert main(["rollback", "--root", root, "--tenant", "podcasts", "--to", "1"]) == 0
    assert ArtifactRoot(root).current_version("podcasts") == 1
    assert main(["publish", "--root", root, "--backbone", str(bb), "--tenant", "podcasts", "a", "b"]) == 2
    assert "at most one ADAPTER_DIR" in capsys.readouterr().err
    assert main(["apikey", "--root", root, "--tenant", "nobody"]) == 2
    assert main(["apikey", "--root", root, "--tenant", "books"]) == 0
    assert capsys.readouterr().out.startswith("rk_")
