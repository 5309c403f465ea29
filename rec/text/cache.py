"""On-disk embedding cache keyed by (model fingerprint, sha256 of each text).

Layout::

    <cache_dir>/<encoder.cache_key>/
        info.json                                  # fingerprint, max_length, dim (for humans)
        shard-<time_ns>-<pid>-<random>.safetensors # "hashes" uint8 (N, 32), "embeddings" float32 (N, D)

Shards are immutable. Each call that computes new embeddings writes *one new* shard with a unique
name, atomically (temp file + rename), so any number of processes can fill the same cache at once:
a reader sees a shard completely or not at all. Readers merge every shard; a shard that fails to
parse or disagrees with the model is skipped with a warning (its texts are simply re-encoded).
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
import warnings
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save as st_save

from rec.config import TextConfig
from rec.io.artifacts import atomic_write_bytes, atomic_write_json
from rec.text.encoder import TextEncoder

SHARD_GLOB = "shard-*.safetensors"
_ENCODERS: dict[tuple[str, bool, int, int, int], TextEncoder] = {}


def text_digest(text: str) -> bytes:
    """sha256 of a text's UTF-8 bytes (32 raw bytes): the per-text cache key."""
    return hashlib.sha256(text.encode("utf-8")).digest()


def cache_folder(encoder: TextEncoder, cache_dir: str | Path) -> Path:
    """The folder holding ``encoder``'s shards under ``cache_dir``."""
    return Path(cache_dir) / encoder.cache_key


def _read_shard_hashes(path: Path, fingerprint: str, dim: int) -> np.ndarray | None:
    """Return a valid shard's hashes (N, 32) uint8, or None (with a warning) if it is unusable."""
    try:
        with safe_open(str(path), framework="np") as f:
            meta = f.metadata() or {}
            hashes = f.get_tensor("hashes")
            shape = f.get_slice("embeddings").get_shape()
    except (SafetensorError, OSError, KeyError, ValueError) as e:
        warnings.warn(f"text cache: ignoring unreadable shard {path} ({e})", RuntimeWarning, stacklevel=3)
        return None
    problem = None
    if meta.get("model_fingerprint") != fingerprint:
        problem = f"made by {meta.get('model_fingerprint')!r}, not {fingerprint!r}"
    elif hashes.dtype != np.uint8 or hashes.ndim != 2 or hashes.shape[1] != 32:
        problem = f"bad hashes tensor {hashes.dtype} {hashes.shape}"
    elif list(shape) != [hashes.shape[0], dim]:
        problem = f"embeddings shape {list(shape)} != [{hashes.shape[0]}, {dim}]"
    if problem:
        warnings.warn(f"text cache: ignoring shard {path}: {problem}", RuntimeWarning, stacklevel=3)
        return None
    return hashes


def _lookup(folder: Path, digests: list[bytes], fingerprint: str, dim: int) -> dict[bytes, np.ndarray]:
    """Find cached embeddings for ``digests``. Returns {digest: (dim,) float32} for the hits."""
    wanted = set(digests)
    found: dict[bytes, np.ndarray] = {}
    for path in sorted(folder.glob(SHARD_GLOB)) if folder.is_dir() else []:
        if not wanted:
            break
        hashes = _read_shard_hashes(path, fingerprint, dim)
        if hashes is None:
            continue
        rows = {h.tobytes(): i for i, h in enumerate(hashes)}
        hits = [d for d in wanted if d in rows]
        if not hits:
            continue
        try:
            with safe_open(str(path), framework="np") as f:
                emb = f.get_tensor("embeddings")
        except (SafetensorError, OSError) as e:
            warnings.warn(f"text cache: ignoring unreadable shard {path} ({e})", RuntimeWarning, stacklevel=2)
            continue
        if emb.dtype != np.float32 or not np.isfinite(emb[[rows[d] for d in hits]]).all():
            warnings.warn(f"text cache: ignoring shard {path}: bad embeddings", RuntimeWarning, stacklevel=2)
            continue
        for d in hits:
            found[d] = emb[rows[d]]
        wanted.difference_update(hits)
    return found


def _write_shard(folder: Path, digests: list[bytes], emb: np.ndarray, encoder: TextEncoder) -> Path:
    """Publish one new immutable shard atomically; the name is unique per process and call."""
    folder.mkdir(parents=True, exist_ok=True)
    info = folder / "info.json"
    if not info.is_file():
        atomic_write_json(info, encoder.manifest_info())
    hashes = np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(len(digests), 32)
    data = st_save(
        {"hashes": hashes, "embeddings": np.ascontiguousarray(emb, dtype=np.float32)},
        metadata={"model_fingerprint": encoder.model_fingerprint, "max_length": str(encoder.cfg.max_length)},
    )
    path = folder / f"shard-{time.time_ns()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.safetensors"
    atomic_write_bytes(path, data)
    return path


def encode_cached(encoder: TextEncoder, texts: list[str], cache_dir: str | Path, progress: bool = False) -> np.ndarray:
    """Embed texts, running the model only on texts not already in the disk cache.

    Duplicate texts are encoded once. New embeddings are appended to the cache as one new shard.

    Args:
        encoder: The text encoder (its ``cache_key`` selects the cache folder).
        texts: N strings.
        cache_dir: Root of the cache (``TextConfig.cache_dir``); created when missing.
        progress: Show a progress bar while encoding the misses.

    Returns:
        float32 array (N, dim), identical to ``encoder.encode(texts)`` up to batch-padding noise
        (~1e-6), and bit-identical across cache hits.
    """
    digests = [text_digest(t) for t in texts]
    folder = cache_folder(encoder, cache_dir)
    found = _lookup(folder, digests, encoder.model_fingerprint, encoder.dim)
    missing: dict[bytes, str] = {}
    for d, t in zip(digests, texts):
        if d not in found and d not in missing:
            missing[d] = t
    if missing:
        new = encoder.encode(list(missing.values()), progress=progress)  # (M, D)
        _write_shard(folder, list(missing), new, encoder)
        found.update(zip(missing, new))
    out = np.empty((len(texts), encoder.dim), dtype=np.float32)
    for i, d in enumerate(digests):
        out[i] = found[d]
    return out


def get_encoder(cfg: TextConfig) -> TextEncoder:
    """Build a ``TextEncoder`` for ``cfg`` once per process and reuse it."""
    key = (cfg.model, cfg.allow_download, cfg.batch_size, cfg.max_length, cfg.num_threads, cfg.device)
    if key not in _ENCODERS:
        _ENCODERS[key] = TextEncoder(cfg)
    return _ENCODERS[key]


def encode_items(texts: list[str], cfg: TextConfig, progress: bool = False) -> np.ndarray:
    """Embed item texts with the configured model, through the disk cache at ``cfg.cache_dir``.

    Args:
        texts: N item texts (e.g. titles); empty strings are allowed. Laid out per
            ``cfg.item_format`` first (``rec.text.item_format``).
        cfg: Text encoder config.
        progress: Show a progress bar while encoding.

    Returns:
        float32 array (N, dim), unit-norm rows.

    Raises:
        ValueError: The model cannot be loaded offline (the message says how to fix it).
    """
    from rec.text.item_format import format_item_texts

    return encode_cached(get_encoder(cfg), format_item_texts(texts, cfg.item_format), cfg.cache_dir, progress=progress)


