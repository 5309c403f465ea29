"""Publish and roll back tenant versions in a serving artifact root (``rec publish``/``rec rollback``).

Publishing exports (it needs the backbone checkpoint and torch), so it lives with export, not with
the serving runtime that replicas import; the replicas only follow the pointers it moves.

The recipe: export the tenant bundle into a staging folder -> claim ``v<N>`` with an atomic rename
-> load it back (checksums, shapes, backbone) -> replace the tenant's ``CURRENT`` pointer. Replicas
notice the new pointer on their next poll; until the last step nothing they read has changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rec.data.schema import Tenant
from rec.export.onnx_export import export_serving_model
from rec.export.tenant_bundle import export_tenant_bundle
from rec.io.artifacts import ArtifactError, read_manifest
from rec.serving.bundles import load_tenant_bundle
from rec.serving.store import ArtifactRoot
from rec.training.checkpoint import LoadedBackbone

__all__ = ["PublishResult", "ensure_serving_model", "publish_tenant", "rollback_tenant"]


@dataclass(frozen=True)
class PublishResult:
    tenant: str
    version: int
    previous: int | None
    path: Path
    method: str


def ensure_serving_model(root: str | Path, loaded: LoadedBackbone, quantize: bool = False) -> Path:
    """Export the shared serving model to ``<root>/model`` unless one from this backbone is there.

    Raises:
        ArtifactError: ``<root>/model`` holds a model exported from another backbone (serving
            bundles of two backbones from one root would silently mix models).
    """
    store = ArtifactRoot(root)
    if (store.model_dir / "manifest.json").is_file():
        have = read_manifest(store.model_dir, verify=False).get("backbone_checksum")
        if have != loaded.checksum:
            raise ArtifactError(
                f"{store.model_dir} was exported from backbone {str(have)[:12]}, not {loaded.checksum[:12]}: "
                "use a new artifact root for a new backbone (and re-publish every tenant there)"
            )
        return store.model_dir
    return Path(export_serving_model(loaded, store.model_dir, quantize=quantize))


def publish_tenant(
    root: str | Path,
    loaded: LoadedBackbone,
    tenant: Tenant,
    text_emb: np.ndarray,
    adapter_dir: str | Path | None = None,
    catalog_dtype: str = "fp32",
) -> PublishResult:
    """Publish a new version of ``tenant`` (zero-shot when ``adapter_dir`` is None) and make it live.

    Raises:
        ArtifactError, ExportError, DataError: from the bundle export or its verification; the
            pointer is then unchanged.
    """
    store = ArtifactRoot(root)
    if not (store.model_dir / "manifest.json").is_file():
        raise ArtifactError(f"{store.model_dir}: no serving model; run `rec publish` with --backbone once to export it")
    previous = store.current_version(tenant.name) if store.pointer_path(tenant.name).is_file() else None
    version = store.claim_version(
        tenant.name, lambda out: export_tenant_bundle(loaded, tenant, text_emb, adapter_dir, out, catalog_dtype)
    )
    path = store.version_dir(tenant.name, version)
    bundle = load_tenant_bundle(path)  # verify before any replica can see it
    store.set_current(tenant.name, version)
    return PublishResult(tenant.name, version, previous, path, bundle.method)


def rollback_tenant(root: str | Path, tenant: str, to: int | None = None) -> PublishResult:
    """Point ``tenant`` back at version ``to`` (default: the newest complete version below the
    current one), after checking that version loads.

    Raises:
        ArtifactError: The tenant is not published, has nothing older, or ``v<to>`` does not load.
    """
    store = ArtifactRoot(root)
    current = store.current_version(tenant)
    if current is None:
        raise ArtifactError(f"tenant {tenant!r} is not published under {store.root}")
    versions = store.versions(tenant)
    if to is None:
        older = [v for v in versions if v < current]
        if not older:
            raise ArtifactError(f"tenant {tenant!r} has no version older than v{current} (versions: {versions})")
        to = older[-1]
    if to not in versions:
        raise ArtifactError(f"tenant {tenant!r} has no complete version v{to}; available: {versions}")
    bundle = load_tenant_bundle(store.version_dir(tenant, to))
    store.set_current(tenant, to)
    return PublishResult(tenant, to, current, store.version_dir(tenant, to), bundle.method)
