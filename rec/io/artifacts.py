"""Atomic, checksummed artifact folders.

Every artifact the project writes (checkpoints, adapters, exports, embedding caches) is a folder
with a ``manifest.json`` written last. A folder without a valid manifest does not exist for
readers, so a crash mid-write never leaves something a server or a resumed job would load.

The write protocol: fill ``<dest>.tmp-<random>/``, write the manifest (with the sha256 of every
file) into it, fsync, then ``rename`` it onto ``dest`` (replacing an older folder atomically by
renaming that one aside first).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


class ArtifactError(ValueError):
    """An artifact folder is missing, incomplete or fails its checksums."""


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Return the hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def library_versions() -> dict[str, str]:
    """Versions of the packages an artifact depends on, for its manifest."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("fewshot-rec", "torch", "ray", "transformers", "onnxruntime-gpu", "numpy"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[pkg] = md.version(pkg)
    return out


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write one file atomically (temp file in the same folder, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())


@contextlib.contextmanager
def artifact_writer(
    dest: str | Path, kind: str, meta: dict[str, Any] | None = None, replace: bool = True
) -> Iterator[Path]:
    """Yield a temp folder to fill; on success publish it atomically at ``dest`` with a manifest.

    Args:
        dest: Final folder path. An existing artifact there is replaced atomically.
        kind: What the artifact is (``"checkpoint"``, ``"adapter"``, ...), stored in the manifest.
        meta: Extra manifest fields (config, metrics, data hashes). May be mutated by the caller
            inside the ``with`` block; it is read when the block exits.
        replace: If False, publishing onto an existing ``dest`` raises ``FileExistsError``
            (the rename itself is the check, so two writers can never both claim ``dest``).

    Yields:
        The temporary folder to write files into.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    meta = meta if meta is not None else {}
    try:
        yield tmp
        files = {}
        for p in sorted(tmp.rglob("*")):
            if p.is_file() and p.name != MANIFEST:
                files[p.relative_to(tmp).as_posix()] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        manifest = {
            "format_version": FORMAT_VERSION,
            "kind": kind,
            "created_unix": time.time(),
            "versions": library_versions(),
            "files": files,
            **meta,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
        for p in tmp.rglob("*"):
            if p.is_file():
                with open(p, "rb") as f:
                    os.fsync(f.fileno())
        _fsync_dir(tmp)
        if not replace:
            try:
                os.rename(tmp, dest)  # fails if dest exists and is non-empty: an atomic claim
            except OSError as e:
                raise FileExistsError(f"{dest} already exists") from e
        elif dest.exists():
            old = dest.with_name(f".{dest.name}.old-{os.getpid()}-{time.time_ns()}")
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
        _fsync_dir(dest.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_manifest(folder: str | Path, verify: bool = True, kind: str | None = None) -> dict[str, Any]:
    """Read and (by default) verify an artifact folder's manifest.

    Raises:
        ArtifactError: The folder or its manifest is missing, the kind differs, or a file's
            checksum or size does not match.
    """
    folder = Path(folder)
    mpath = folder / MANIFEST
    if not mpath.is_file():
        raise ArtifactError(
            f"{folder}: no {MANIFEST}; this is not a complete artifact (an interrupted write?). "
            "Re-create it or point at another folder."
        )
    try:
        manifest = json.loads(mpath.read_text())
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{mpath}: not valid JSON ({e}); the artifact is corrupt.") from e
    if kind is not None and manifest.get("kind") != kind:
        raise ArtifactError(f"{folder}: expected a {kind!r} artifact, found {manifest.get('kind')!r}.")
    if verify:
        for rel, info in manifest.get("files", {}).items():
            p = folder / rel
            if not p.is_file():
                raise ArtifactError(f"{folder}: file {rel} listed in the manifest is missing.")
            if p.stat().st_size != info["bytes"] or sha256_file(p) != info["sha256"]:
                raise ArtifactError(f"{folder}: checksum mismatch for {rel}; the artifact is corrupt.")
    return manifest


def complete_versions(folder: str | Path) -> list[int]:
    """Versions ``N`` of the ``v<N>`` folders under ``folder`` that hold a manifest, ascending.

    A manifest is written last (see :func:`artifact_writer`), so a folder without one is a
    crashed or in-flight write and is not a version.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(
        int(p.name[1:]) for p in folder.iterdir()
        if p.name[:1] == "v" and p.name[1:].isdigit() and (p / MANIFEST).is_file()
    )


def version_numbers(folder: str | Path) -> list[int]:
    """``N`` of every ``v<N>`` folder under ``folder``, complete or not, ascending.

    Claiming counts incomplete folders too: a number someone is writing is never reused.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(int(p.name[1:]) for p in folder.iterdir() if p.name[:1] == "v" and p.name[1:].isdigit())


def next_version_dir(root: str | Path) -> Path:
    """Return ``root/v<N+1>`` where ``v<N>`` is the highest version folder under ``root``."""
    return Path(root) / f"v{max(version_numbers(root), default=0) + 1}"


def claim_version(parent: str | Path, write: Callable[[Path, int], object], attempts: int = 100,
                  versioned: bool = True) -> Path:
    """Publish a new version ``parent/v<N>`` (N = the next free number) and return its path.

    ``write(folder, N)`` creates ``folder`` as a complete artifact (manifest written last, e.g.
    with :func:`artifact_writer`) for version ``N``. ``folder`` is private staging space; it is
    then renamed onto ``parent/v<N>``. The rename is the claim: it fails when another writer
    published ``v<N>`` first (a non-empty folder), and then ``N+1`` is tried: written again when
    the artifact names its version (``versioned``, e.g. an adapter manifest's ``version``), else
    the same folder is renamed. Adapter versions (``rec.adaptation.artifacts``) and serving
    bundle versions (``rec.serving.store``) are both claimed here.

    Raises:
        ArtifactError: ``write`` produced no manifest, or no number could be claimed in ``attempts``.
    """
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=parent))
    folder, written = staging / "artifact", None
    try:
        for _ in range(attempts):
            version = max(version_numbers(parent), default=0) + 1
            if written is None or (versioned and written != version):
                shutil.rmtree(folder, ignore_errors=True)
                write(folder, version)
                if not (folder / MANIFEST).is_file():
                    raise ArtifactError(f"{folder}: the writer produced no {MANIFEST}")
                written = version
            try:
                os.rename(folder, parent / f"v{version}")
            except OSError:
                continue  # taken by a concurrent writer
            _fsync_dir(parent)
            return parent / f"v{version}"
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    raise ArtifactError(f"could not claim a new version under {parent} in {attempts} attempts")
