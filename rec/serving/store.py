"""The serving artifact root: one shared model, versioned tenant bundles, atomic version pointers.

Layout::

    <root>/model/                     ONNX serving model (``rec.export.onnx_export``) + manifest
    <root>/tenants/<tenant>/v<N>/     tenant bundle (``rec.serving.bundles``): catalog
                                      matrix, adapter tensors, manifest with checksums
    <root>/tenants/<tenant>/CURRENT   {"version": N}: the version replicas serve, replaced atomically
    <root>/tenants/<tenant>/api_keys.json   scrypt hashes of the tenant's API keys (optional)
    <root>/events/<tenant>/events.jsonl     append-only feedback log

A tenant exists for readers once its ``CURRENT`` pointer exists. Publishing writes a complete,
checksummed ``v<N>`` folder first, verifies it loads, and only then replaces the pointer, so a
replica can never see a half-written bundle; rolling back is replacing the pointer again.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from rec.data.schema import validate_tenant_id
from rec.io.artifacts import ArtifactError, atomic_write_json, claim_version, complete_versions

__all__ = ["ArtifactRoot", "POINTER"]

POINTER = "CURRENT"


class ArtifactRoot:
    """Paths and pointer operations of one serving artifact root (see module doc).

    Args:
        root: The folder. Created on the first publish; readers only need it to exist.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    # --- paths ---------------------------------------------------------------------------------
    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def tenants_dir(self) -> Path:
        return self.root / "tenants"

    def tenant_dir(self, tenant: str) -> Path:
        """``<root>/tenants/<tenant>``; the id is validated first, so no path tricks get through."""
        return self.tenants_dir / validate_tenant_id(tenant)

    def pointer_path(self, tenant: str) -> Path:
        return self.tenant_dir(tenant) / POINTER

    def version_dir(self, tenant: str, version: int) -> Path:
        return self.tenant_dir(tenant) / f"v{int(version)}"

    def keys_path(self, tenant: str) -> Path:
        return self.tenant_dir(tenant) / "api_keys.json"

    def events_dir(self, tenant: str) -> Path:
        return self.root / "events" / validate_tenant_id(tenant)

    # --- reading -------------------------------------------------------------------------------
    def tenants(self) -> list[str]:
        """Live tenants (those with a version pointer), sorted."""
        if not self.tenants_dir.is_dir():
            return []
        return sorted(p.name for p in self.tenants_dir.iterdir() if (p / POINTER).is_file())

    def versions(self, tenant: str) -> list[int]:
        """Complete versions (folders with a manifest) of a tenant, ascending."""
        return complete_versions(self.tenant_dir(tenant))

    def current_version(self, tenant: str) -> int | None:
        """The version the pointer names, or None when the tenant is not live.

        Raises:
            ArtifactError: The pointer exists but is unreadable.
        """
        path = self.pointer_path(tenant)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, json.JSONDecodeError) as e:
            raise ArtifactError(f"{path}: unreadable version pointer ({e}); re-run `rec rollback --tenant {tenant} --to N`") from e
        version = data.get("version") if isinstance(data, dict) else None
        if not isinstance(version, int) or version < 1:
            raise ArtifactError(f"{path}: no positive integer 'version' in the pointer")
        return version

    def pointer_stamp(self, tenant: str) -> tuple[int, int] | None:
        """(inode, mtime_ns) of the pointer: changes on every atomic replace; None when absent."""
        try:
            st = os.stat(self.pointer_path(tenant))
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns

    # --- writing -------------------------------------------------------------------------------
    def set_current(self, tenant: str, version: int) -> None:
        """Point the tenant at ``v<version>`` (atomic replace of the pointer file).

        Raises:
            ArtifactError: ``v<version>`` is not a complete version of this tenant.
        """
        if version not in self.versions(tenant):
            raise ArtifactError(
                f"tenant {tenant!r} has no complete version v{version}; available: {self.versions(tenant)}"
            )
        atomic_write_json(self.pointer_path(tenant), {"version": int(version), "updated_unix": time.time()})

    def claim_version(self, tenant: str, write: Callable[[Path], object]) -> int:
        """Write a new version with ``write(folder)`` and rename it to the next free ``v<N>``.

        ``write`` fills a staging folder (a complete artifact with its manifest). The rename onto
        ``v<N>`` fails when another publisher took ``N`` first; then the same folder is renamed
        onto ``N+1`` (:func:`rec.io.artifacts.claim_version`). The pointer is not touched: call
        :meth:`set_current` after verifying the new version.

        Returns:
            The claimed version number.
        """
        path = claim_version(self.tenant_dir(tenant), lambda folder, _version: write(folder), attempts=1000, versioned=False)
        return int(path.name[1:])
