"""Evaluate a published backbone on any configured tenants (zero-shot on tenants it never saw)."""

from __future__ import annotations

from rec.config import RecConfig
from rec.data.schema import DataError
from rec.training.checkpoint import LoadedBackbone
from rec.training.corpus import build_corpus
from rec.training.scaffold import evaluate_on_driver

__all__ = ["evaluate_checkpoint"]


def evaluate_checkpoint(
    loaded: LoadedBackbone, cfg: RecConfig, split: str = "test", progress: bool = False
) -> dict[str, dict[str, float]]:
    """Full-ranking metrics per tenant of ``cfg.data`` with the checkpoint's model.

    Tenants the checkpoint was trained on keep their ID rows (if the model has ID embeddings);
    other tenants are scored from item text alone.

    Raises:
        DataError: A tenant is unknown to an ID-only model (it cannot score unseen items).
    """
    model_cfg = loaded.cfg.model
    run_cfg = cfg.model_copy(update={"model": model_cfg, "text": loaded.cfg.text})
    corpus = build_corpus(run_cfg, progress=progress)
    for t in corpus.tenants:
        known = loaded.tenants.get(t.name)
        if known is not None and known["data_hash"] == t.data_hash:
            t.id_offset = int(known["id_offset"])
        elif not model_cfg.use_text:
            raise DataError(
                f"tenant {t.name!r} was not in this ID-only checkpoint's training data; "
                "ID-only models cannot score unseen items: use a text backbone"
            )
        else:
            t.id_offset = -1
    return evaluate_on_driver(loaded.model, corpus, cfg, split)
