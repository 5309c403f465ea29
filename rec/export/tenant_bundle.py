"""Export of tenant bundles: what the shared serving graph needs to serve one tenant.

The bundle type and its loader are the serving runtime's (``rec.serving.bundles``). Layout (an
artifact folder, see ``rec.io.artifacts``)::

    <out>/
      catalog.safetensors          "catalog" [N,D] fp32 | fp16 | int8 (+ "scale" [N] fp32 for int8)
                                 (+ "item_bias" [N] fp32: added to catalog @ user; item-terms)
      item_ids.json                the tenant's external item ids, in catalog row order
      adapter_tensors.safetensors  "lora_a.<proj>" [r,in], "lora_b.<proj>" [out,r] (scaling folded
                                   in; AdaLoRA: singular values folded into A, pruned directions
                                   dropped, so r is each projection's allocated rank), "prompt"
                                   [P,D]; empty for zero-shot and head
      manifest.json                kind=tenant-bundle, tenant, method, adapter, backbone checksum,
                                   catalog dtype, ranks, decomposition parity, file checksums

What goes in is the adapter's method's (``rec.adaptation.registry``, its ``ExportKind``): the
catalog matrix always holds the item vectors of the adapted model (for LoRA the ``adaptor.proj``
update merged in, for ``head`` the trained adaptor, for ``item-terms`` the ID residual, with its
per-item bias beside it); per-row graph inputs come from the method's ``bundle_inputs`` (LoRA
tensors, prompt). A merged-only method (``full``, every weight changes) is not expressible as
inputs of the shared graph: it is refused here with a pointer to ``export_merged_tenant_model``.

At export the bundle is checked against the adapter applied the reference way
(``rec.adaptation.artifacts.load_adapter``: PEFT ``merge_and_unload``) on the tenant's own users:
scores through (shared graph in torch + bundle) must match the merged model's.

int8 catalogs use one symmetric scale per item row (``row = q * scale``): per-row scaling keeps
every item's relative error at most 1/254 of its largest component, whatever the norms.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from safetensors.numpy import save_file as save_np

from rec.data.schema import DataError, Tenant, validate_tenant_id
from rec.export.errors import AdapterShapeError, ExportError
from rec.io.artifacts import ArtifactError, artifact_writer
from rec.serving.bundles import CATALOG_DTYPES, KIND, TenantBundle
from rec.serving.bundles import decode_catalog as _decode_catalog

if TYPE_CHECKING:  # importing this module must stay cheap: torch/peft load inside the export functions
    from rec.adaptation.registry import AdaptationMethod
    from rec.training.checkpoint import LoadedBackbone

__all__ = ["export_tenant_bundle", "load_adapted"]

PARITY_TOL = 1e-4


# --- extraction ----------------------------------------------------------------------------------
def _catalog(model, loaded: LoadedBackbone, tenant: Tenant, text_emb: np.ndarray) -> np.ndarray:
    """Item vectors ``(N, D)``; ID rows only for a tenant the backbone trained on (same data)."""
    import torch

    known = loaded.tenants.get(tenant.name)
    use_ids = model.id_emb is not None and known is not None and known.get("data_hash") == tenant.content_hash()
    if model.adaptor is None and not use_ids:
        raise ExportError(f"tenant {tenant.name!r}: this backbone is ID-only and never saw this tenant's items; it cannot score them")
    ids = torch.arange(int(known["id_offset"]), int(known["id_offset"]) + tenant.num_items) if use_ids else None
    text = torch.from_numpy(np.ascontiguousarray(text_emb, dtype=np.float32)) if model.adaptor is not None else None
    with torch.no_grad():
        return model.eval().item_representations(text, ids).float().numpy()


def _encode_catalog(catalog: np.ndarray, dtype: str) -> dict[str, np.ndarray]:
    if dtype == "fp32":
        return {"catalog": catalog.astype(np.float32)}
    if dtype == "fp16":
        return {"catalog": catalog.astype(np.float16)}
    scale = np.abs(catalog).max(axis=1) / 127.0
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    q = np.clip(np.rint(catalog / scale[:, None]), -127, 127).astype(np.int8)
    return {"catalog": q, "scale": scale}


def _bundle_parity(
    loaded: LoadedBackbone, adapted, bundle: TenantBundle, tenant: Tenant, text_emb: np.ndarray, max_users: int = 64
) -> dict[str, Any]:
    """Scores of (shared graph in torch + bundle) vs the reference adapted model on the tenant's users."""
    import torch

    from rec.export.serving_graph import ServingGraph
    from rec.serving.feed import build_feed

    seqs = [s for s in tenant.sequences() if len(s) >= 1][:max_users]
    if not seqs:
        return {"users": 0}
    max_len = loaded.cfg.data.max_seq_len
    graph = ServingGraph(loaded.model)
    feed = build_feed([s[-max_len:] for s in seqs], [bundle] * len(seqs), graph.projections, max_len)
    with torch.no_grad():
        user = graph(*(torch.from_numpy(feed.inputs[n]) for n in graph.input_names)).numpy()
        ref_cat = torch.from_numpy(_catalog(adapted, loaded, tenant, text_emb))
        idx = torch.from_numpy(feed.rows).clamp(min=0)
        pad = torch.from_numpy(feed.inputs["pad"])
        ref_user = adapted.user_vector(ref_cat[idx], pad)
        ref = adapted.scores(ref_user, ref_cat).numpy()
    got = user @ bundle.catalog.T + (0.0 if bundle.item_bias is None else bundle.item_bias)
    top_ref = np.argsort(-ref, axis=1)[:, :10]
    top_got = np.argsort(-got, axis=1)[:, :10]
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top_ref, top_got)])
    return {"users": len(seqs), "max_abs_diff_scores": float(np.abs(got - ref).max()), "top10_overlap": float(overlap)}


def load_adapted(loaded: LoadedBackbone, tenant: Tenant, adapter_dir: str | Path | None) -> tuple[AdaptationMethod, Any, dict[str, Any]]:
    """(method, adapted scoring backbone, adapter manifest) of ``adapter_dir`` (None: zero-shot).

    The adapter is applied the reference way (``rec.adaptation.artifacts.load_adapter``: LoRA
    ``merge_and_unload``, the method's own ``load`` otherwise).

    Raises:
        ArtifactError: No such folder, corrupt, or trained on another backbone.
        ExportError: An adapter of another tenant.
    """
    from rec.adaptation.artifacts import adapter_method, load_adapter
    from rec.adaptation.registry import get_method

    if adapter_dir is None:
        return get_method("zero-shot"), loaded.model, {}
    adapter_dir = Path(adapter_dir)
    if not adapter_dir.is_dir():
        raise ArtifactError(f"adapter folder {adapter_dir} does not exist: pass the folder `rec adapt` printed")
    method = get_method(adapter_method(adapter_dir))
    adapted, manifest = load_adapter(adapter_dir, loaded.model, loaded.checksum)
    if manifest.get("tenant") not in (None, tenant.name):
        raise ExportError(f"{adapter_dir} is an adapter of tenant {manifest['tenant']!r}, not {tenant.name!r}")
    return method, adapted, manifest


def _item_bias(adapted: Any) -> np.ndarray | None:
    """The adapted model's per-item score bias ``(N,)`` (item-terms methods), else None."""
    bias = getattr(adapted, "item_bias", None)
    return None if bias is None else bias.detach().float().numpy().copy()


def _build_bundle(loaded: LoadedBackbone, tenant: Tenant, text_emb: np.ndarray, adapter_dir: Path | None,
                  method: AdaptationMethod, adapted: Any) -> TenantBundle:
    """Catalog matrix (+ item bias) and the method's per-row graph inputs, in memory."""
    from rec.adaptation.registry import ExportKind
    from rec.export.serving_graph import adapted_projections

    if getattr(loaded.model, "score_kind", "dot") != "dot":
        raise ExportError(
            f"backbone scores by {loaded.model.score_kind} (model.score): the serving graph and catalog serve dot-product "
            "scores only; it was measured as an option (bench/README.md, few-shot) and is not served: use model.score=dot"
        )
    if method.export is ExportKind.MERGED_ONLY:
        raise ExportError(
            f"{adapter_dir}: a {method.name!r} adapter changes every weight and cannot be served by the shared graph; "
            "export a merged per-tenant model instead (rec export-tenant --merged)"
        )
    projections = {name: (i, o) for name, i, o in adapted_projections(loaded.model)}
    try:
        inputs = method.bundle_inputs(adapter_dir, adapted, loaded, projections)
    except ArtifactError:
        raise
    except ValueError as e:
        raise AdapterShapeError(str(e)) from None
    catalog = _catalog(adapted, loaded, tenant, text_emb)
    return TenantBundle(tenant.name, [str(i) for i in tenant.items.ids], catalog, inputs.lora, inputs.prompt, method.name, {},
                        item_bias=_item_bias(adapted))


def _bundle_meta(loaded: LoadedBackbone, tenant: Tenant, bundle: TenantBundle, adapter_dir: Path | None,
                 adapter_manifest: dict[str, Any], catalog_dtype: str, parity: dict[str, Any]) -> dict[str, Any]:
    return {
        "tenant": tenant.name,
        "method": bundle.method,
        "adapter": {
            "path": None if adapter_dir is None else str(adapter_dir),
            "version": adapter_manifest.get("version"),
            "files": adapter_manifest.get("files"),
        },
        "backbone_checksum": loaded.checksum,
        "text_model": loaded.manifest.get("text_model"),
        "data_hash": tenant.content_hash(),
        "catalog_dtype": catalog_dtype,
        "num_items": int(bundle.catalog.shape[0]),
        "d_model": int(bundle.catalog.shape[1]),
        "item_bias": bundle.item_bias is not None,
        "lora_ranks": {k: int(a.shape[0]) for k, (a, _) in bundle.lora.items()},
        "prompt_len": 0 if bundle.prompt is None else int(bundle.prompt.shape[0]),
        "parity": parity,
    }


# --- public API ----------------------------------------------------------------------------------
def export_tenant_bundle(
    loaded: LoadedBackbone,
    tenant: Tenant,
    text_emb: np.ndarray,
    adapter_dir: str | Path | None,
    out_dir: str | Path,
    catalog_dtype: str = "fp32",
) -> Path:
    """Write ``out_dir`` (see module doc) for ``tenant`` with the adapter at ``adapter_dir``.

    Args:
        loaded: The base backbone (the one the shared serving model was exported from).
        tenant: The tenant's data (its catalog order defines the matrix rows).
        text_emb: Item text embeddings ``(N, text_dim)`` in catalog order.
        adapter_dir: An adapter version folder (``rec adapt`` output) or None for zero-shot.
        catalog_dtype: ``fp32``, ``fp16`` or ``int8`` (per-row scale) storage of the catalog.

    Raises:
        ExportError: A merged-only method (``full``), unknown dtype, or the bundle does not
            reproduce the reference adapted model. AdapterShapeError: LoRA on projections the graph lacks.
        ArtifactError: Corrupt adapter, or an adapter trained on another backbone.
    """
    if catalog_dtype not in CATALOG_DTYPES:
        raise ExportError(f"catalog dtype {catalog_dtype!r} is not one of {list(CATALOG_DTYPES)}")
    validate_tenant_id(tenant.name)
    text_emb = np.asarray(text_emb, dtype=np.float32)
    if text_emb.ndim != 2 or len(text_emb) != tenant.num_items:
        raise DataError(f"text_emb has shape {text_emb.shape}, expected ({tenant.num_items}, text_dim) for tenant {tenant.name!r}")
    method, adapted, adapter_manifest = load_adapted(loaded, tenant, adapter_dir)
    adapter_dir = None if adapter_dir is None else Path(adapter_dir)
    bundle = _build_bundle(loaded, tenant, text_emb, adapter_dir, method, adapted)
    parity = _bundle_parity(loaded, adapted, bundle, tenant, text_emb)
    if parity.get("users") and parity["max_abs_diff_scores"] > PARITY_TOL:
        raise ExportError(
            f"tenant bundle for {tenant.name!r} does not reproduce the adapted model "
            f"(max |score diff| {parity['max_abs_diff_scores']:.2e} > {PARITY_TOL}); not published"
        )
    stored = _encode_catalog(bundle.catalog, catalog_dtype)
    parity["catalog_max_abs_dequant_error"] = float(np.abs(_decode_catalog(stored, catalog_dtype) - bundle.catalog).max())
    if bundle.item_bias is not None:
        stored["item_bias"] = bundle.item_bias.astype(np.float32)  # fp32 whatever the catalog dtype: N floats
    tensors: dict[str, np.ndarray] = {}
    for name, (a, b) in bundle.lora.items():
        tensors[f"lora_a.{name}"], tensors[f"lora_b.{name}"] = a, b
    if bundle.prompt is not None:
        tensors["prompt"] = bundle.prompt
    meta = _bundle_meta(loaded, tenant, bundle, adapter_dir, adapter_manifest, catalog_dtype, parity)
    with artifact_writer(out_dir, kind=KIND, meta=meta) as tmp:
        save_np(stored, str(tmp / "catalog.safetensors"))
        save_np(tensors, str(tmp / "adapter_tensors.safetensors"))
        (tmp / "item_ids.json").write_text(json.dumps(bundle.item_ids.tolist()))
    return Path(out_dir)
