"""Artifact I/O: atomic, versioned, checksummed folders."""

from rec.io.artifacts import ArtifactError, artifact_writer, next_version_dir, read_manifest

__all__ = ["ArtifactError", "artifact_writer", "next_version_dir", "read_manifest"]
