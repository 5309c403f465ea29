"""Tenant bundles, the merged per-tenant model, and every bad input the export path must refuse."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rec.export.errors import AdapterShapeError, ExportError, FeedError
from rec.export.onnx_export import export_merged_tenant_model
from rec.export.parity import same_topk, topk
from rec.export.tenant_bundle import export_tenant_bundle
from rec.io.artifacts import ArtifactError, artifact_writer, read_manifest
from rec.serving.bundles import TenantBundle, load_tenant_bundle
from rec.serving.runtime import SharedRanker, make_session
from tests.rec.export.conftest import histories, reference_scores

REC = str(Path(sys.executable).with_name("rec"))


# --- tenant bundles --------------------------------------------------------------------------------
def test_bundle_manifest_and_contents(bundles, adapters, new_tenant, small_backbone):
    b = bundles["lora-r8"]
    m = read_manifest(b.path)  # a loaded bundle keeps only the manifest fields serving reads
    assert {k: m[k] for k in b.manifest} == b.manifest
    assert m["kind"] == "tenant-bundle" and m["tenant"] == new_tenant.name and m["method"] == "lora"
    assert m["backbone_checksum"] == small_backbone.checksum and m["adapter"]["path"] == str(adapters["lora-r8"])
    assert m["adapter"]["version"] == "v1" and set(m["lora_ranks"].values()) == {8}
    assert m["parity"]["max_abs_diff_scores"] <= 1e-4 and m["parity"]["users"] > 0
    assert set(m["files"]) == {"catalog.safetensors", "adapter_tensors.safetensors", "item_ids.json"}
    assert b.item_ids.tolist() == [str(i) for i in new_tenant.items.ids] and b.rows_of([b.item_ids[5]])[0].tolist() == [5]
    assert b.catalog.shape == (new_tenant.num_items, small_backbone.cfg.model.d_model) and b.catalog.dtype == np.float32
    assert b.nbytes == b.catalog.nbytes + sum(a.nbytes + c.nbytes for a, c in b.lora.values()) + b.item_ids.nbytes


@pytest.mark.parametrize("dtype, atol", [("fp16", 5e-3), ("int8", 5e-2)])
def test_compressed_catalogs(dtype, atol, small_backbone, new_tenant, tenant_text, adapters, bundles, tmp_path):
    path = export_tenant_bundle(small_backbone, new_tenant, tenant_text, adapters["lora-r4"], tmp_path / dtype, catalog_dtype=dtype)
    b, ref = load_tenant_bundle(path), bundles["lora-r4"]
    assert b.manifest["catalog_dtype"] == dtype and b.catalog.dtype == {"fp16": np.float16, "int8": np.int8}[dtype]  # as stored
    cat = b.catalog_fp32()
    assert np.abs(cat - ref.catalog).max() <= atol
    assert read_manifest(path)["parity"]["catalog_max_abs_dequant_error"] <= atol
    size = (path / "catalog.safetensors").stat().st_size
    assert size < 0.6 * read_manifest(ref.path)["files"]["catalog.safetensors"]["bytes"]
    user = np.random.default_rng(0).standard_normal((20, b.catalog.shape[1])).astype(np.float32)
    overlap = np.mean([len(set(a) & set(c)) / 10 for a, c in zip(topk(user @ cat.T), topk(user @ ref.catalog.T))])
    assert overlap >= 0.9


def test_head_adapter_is_baked_into_the_catalog(bundles):
    assert not np.allclose(bundles["head"].catalog, bundles["zero-shot"].catalog, atol=1e-3)
    assert np.allclose(bundles["prompt"].catalog, bundles["zero-shot"].catalog)


def test_full_adapter_is_refused_with_a_pointer_to_the_merged_model(small_backbone, new_tenant, tenant_text, adapters, tmp_path):
    with pytest.raises(ExportError, match="merged per-tenant model"):
        export_tenant_bundle(small_backbone, new_tenant, tenant_text, adapters["full"], tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_adapter_of_another_tenant_is_refused(small_backbone, new_tenant, tenant_text, adapters, tmp_path):
    other = new_tenant.subset_users(np.arange(new_tenant.num_users), name="someone-else")
    with pytest.raises(ExportError, match="adapter of tenant"):
        export_tenant_bundle(small_backbone, other, tenant_text, adapters["lora-r4"], tmp_path / "b")


def test_corrupt_bundle_is_refused(bundles, tmp_path):
    path = tmp_path / "bundle"
    shutil.copytree(bundles["lora-r4"].path, path)
    data = bytearray((path / "catalog.safetensors").read_bytes())
    data[-5] ^= 0xFF
    (path / "catalog.safetensors").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        load_tenant_bundle(path)
    (path / "catalog.safetensors").unlink()
    with pytest.raises(ArtifactError, match="missing"):
        load_tenant_bundle(path)
    with pytest.raises(ArtifactError, match="does not exist"):
        load_tenant_bundle(tmp_path / "nope")


# --- the merged per-tenant model ---------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", ["full", "lora-r16", "item-terms"])  # item-terms: its bias a graph constant
def test_merged_tenant_model_equals_the_peft_merged_model(name, small_backbone, new_tenant, tenant_text, adapters, tmp_path):
    out = export_merged_tenant_model(small_backbone, new_tenant, tenant_text, adapters[name], tmp_path / name, quantize=(name == "full"))
    m = read_manifest(out, kind="merged-tenant-model")
    assert m["method"] == {"lora-r16": "lora"}.get(name, name) and m["parity"]["fp32"]["max_abs_diff_user"] <= 1e-4
    assert json.loads((out / "item_ids.json").read_text()) == [str(i) for i in new_tenant.items.ids]
    hists = histories(new_tenant, n=12, seed=7)
    max_len = small_backbone.cfg.data.max_seq_len
    items = np.full((len(hists), max_len), -1, np.int64)
    for i, h in enumerate(hists):
        h = h[-max_len:]
        items[i, max_len - len(h):] = h
    got = make_session(out / "model.onnx").run(["scores"], {"items": items, "pad": items < 0})[0]
    want = reference_scores(small_backbone, adapters[name], tenant_text, hists)
    assert np.abs(got - want).max() <= 1e-4 and same_topk(got, want).all()
    if name == "full":
        assert m["sizes"]["model.int8.onnx"] < m["sizes"]["model.onnx"] and "int8_vs_fp32" in m["parity"]


# --- bad inputs at serving time ------------------------------------------------------------------------
def test_corrupt_or_truncated_model_file(serving_dir, tmp_path):
    bad = tmp_path / "corrupt"
    shutil.copytree(serving_dir, bad)
    data = bytearray((bad / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bad / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="checksum mismatch for model.onnx"):
        SharedRanker(bad)
    # A truncated file that even has a matching manifest (e.g. a bad copy re-published) fails in ORT.
    m = read_manifest(serving_dir)
    meta = {k: v for k, v in m.items() if k not in ("files", "format_version", "kind", "created_unix", "versions")}
    with artifact_writer(tmp_path / "truncated", kind="serving-model", meta=meta) as tmp:
        full = (serving_dir / "model.onnx").read_bytes()
        (tmp / "model.onnx").write_bytes(full[: len(full) // 3])
    with pytest.raises(ArtifactError, match="ONNX Runtime cannot load"):
        SharedRanker(tmp_path / "truncated")
    with pytest.raises(ArtifactError, match="no int8 variant"):
        SharedRanker(tmp_path / "truncated", variant="int8")
    with pytest.raises(ArtifactError, match="does not exist"):
        SharedRanker(tmp_path / "missing")


@pytest.mark.parametrize("tenant", ["zero-shot", "lora-r8"])  # the base graph's feed and the per-row graph's
def test_wrong_input_names_are_named(tenant, ranker, bundles, new_tenant):
    feed = ranker.build_feed(histories(new_tenant, n=2), [bundles[tenant]] * 2).inputs
    feed["history"] = feed.pop("hist")
    with pytest.raises(FeedError, match=r"missing \['hist'\], unknown \['history'\]"):
        ranker.raw_run(feed)


def test_adapter_tensors_of_the_wrong_shape(ranker, bundles, new_tenant):
    good = bundles["lora-r8"]
    name, (a, b) = next(iter(good.lora.items()))
    h = histories(new_tenant, n=1)

    def with_lora(lora: dict) -> TenantBundle:
        return TenantBundle("bad", good.item_ids, good.catalog, lora, None, "lora", {})

    with pytest.raises(AdapterShapeError, match=r"expected A \(r, \d+\) and B \(\d+, r\)"):
        ranker.user_vectors(h, [with_lora({**good.lora, name: (a[:, :-1], b)})])  # wrong in-features
    with pytest.raises(AdapterShapeError, match="expected A"):
        ranker.user_vectors(h, [with_lora({**good.lora, name: (a, b[:, :4])})])  # ranks of A and B differ
    with pytest.raises(AdapterShapeError, match="no input for"):
        ranker.user_vectors(h, [with_lora({"blocks.9.attn.q_proj": (a, b)})])
    narrow = TenantBundle("bad", good.item_ids, good.catalog[:, :-1], {}, None, "zero-shot", {})
    with pytest.raises(AdapterShapeError, match="catalog"):
        ranker.user_vectors(h, [narrow])
    with pytest.raises(FeedError, match="item rows must lie in"):
        ranker.user_vectors([np.array([0, len(good.catalog)])], [good])
    with pytest.raises(FeedError, match="one bundle per row"):
        ranker.user_vectors(h * 2, [good])


# --- CLI -----------------------------------------------------------------------------------------------
def _one_line_error(r: subprocess.CompletedProcess, expected: str) -> None:
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and expected in lines[0] and "Traceback" not in r.stderr, r.stderr


@pytest.mark.slow
def test_cli_errors_are_one_line(backbone_dir, adapters, new_tenant, tmp_path, capsys):
    r = subprocess.run([REC, "export", "--backbone", str(tmp_path / "nope"), "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    _one_line_error(r, "does not exist")
    from rec.cli import main  # in-process from here on: same code path, no second interpreter start

    args = ["export-tenant", "--backbone", str(backbone_dir), "--tenant", new_tenant.name, "--adapter", str(adapters["full"]),
            "--out", str(tmp_path / "o"), "data.synthetic.tenants=3"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rec export-tenant: error:") and "merged per-tenant model" in err[0]
    assert not (tmp_path / "o").exists()
    assert main(args[:5] + ["--adapter", str(adapters["lora-r4"]), "--out", str(tmp_path / "o"), "--int8", "data.synthetic.tenants=3"]) == 2
    assert "--catalog-dtype int8" in capsys.readouterr().err


def test_cli_export_tenant_writes_a_bundle(backbone_dir, adapters, new_tenant, bundles, tmp_path):
    from rec.cli import main

    out = tmp_path / "bundle"
    args = ["export-tenant", "--backbone", str(backbone_dir), "--tenant", new_tenant.name, "--adapter", str(adapters["lora-r8"]),
            "--out", str(out), "--catalog-dtype", "int8", "data.synthetic.tenants=3"]
    assert main(args) == 0
    b = load_tenant_bundle(out)
    assert b.manifest["catalog_dtype"] == "int8" and b.rank == 8
    assert all(np.array_equal(b.lora[k][0], bundles["lora-r8"].lora[k][0]) for k in b.lora)
