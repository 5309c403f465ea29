"""A multi-tenant training corpus: every tenant's padded sequences plus its catalog text.

Built once on the driver (data loading and text encoding), then shipped to every Ray Train
worker through the object store (numpy arrays are zero-copy there). Each tenant keeps its own
catalog: rows are always scored against their own tenant's items.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rec.config import DataConfig, RecConfig
from rec.data.schema import DataError, Tenant
from rec.data.splits import KShotSplit, LOOSplit, leave_one_out
from rec.data.padding import left_pad
from rec.training.batches import next_item_examples

__all__ = ["TenantCorpus", "Corpus", "EvalRows", "build_corpus", "eval_rows", "load_holdout", "load_tenants"]


@dataclass
class EvalRows:
    """Leave-one-out evaluation examples: histories ``(V, T)`` left-padded, targets ``(V,)``.

    ``seen_flat[seen_bounds[i, 0]:seen_bounds[i, 1]]`` is example ``i``'s whole history before its
    target, of which ``histories`` keeps the last ``T``: ``eval.exclude_history`` removes all of it
    from the ranking, as SASRec+'s ``filter_seen`` does (on ML-1M at window 200 the window alone
    understated NDCG@10 by 2 %). Flat arrays, so the rows travel through Ray's object store without
    a per-user object and :meth:`take` copies no history. None (rows built without them): the
    window's items.
    """

    user_rows: np.ndarray
    histories: np.ndarray
    targets: np.ndarray
    seen_flat: np.ndarray | None = None  # (sum of history lengths,) item indices
    seen_bounds: np.ndarray | None = None  # (V, 2) [start, end) into seen_flat

    def take(self, idx: np.ndarray | slice) -> EvalRows:
        """The examples at ``idx`` (an index array or a slice), their whole histories included."""
        pos = np.arange(len(self.targets))[idx]
        bounds = None if self.seen_bounds is None else self.seen_bounds[pos]
        return EvalRows(self.user_rows[pos], self.histories[pos], self.targets[pos], self.seen_flat, bounds)

    def seen_items(self, sl: slice) -> list[np.ndarray]:
        """What ``exclude_history`` removes for the examples in ``sl``."""
        if self.seen_bounds is None:
            return [h[h >= 0] for h in self.histories[sl]]
        return [self.seen_flat[a:b] for a, b in self.seen_bounds[sl]]


@dataclass
class TenantCorpus:
    name: str
    num_items: int
    id_offset: int  # first global item id of this tenant (ID embeddings)
    text_emb: np.ndarray | None  # (N, text_dim) float32
    train_inputs: np.ndarray  # (R, T)
    train_targets: np.ndarray  # (R, T)
    valid: EvalRows
    test: EvalRows
    item_popularity: np.ndarray  # (N,) counts over training sequences
    data_hash: str
    # (N,) item texts laid out per text.item_format: only when train.text_lora trains the encoder on them
    item_texts: list[str] | None = None


@dataclass
class Corpus:
    tenants: list[TenantCorpus]
    max_len: int
    text_model: str | None  # fingerprint of the text encoder, recorded in manifests
    # Held-out tenants (``data.holdout``): never trained on, only ranked zero-shot (transfer validation).
    holdout: list[TenantCorpus] = field(default_factory=list)

    def holdout_corpus(self) -> Corpus:
        """The held-out tenants as a corpus of their own (for ``evaluate_corpus``)."""
        return Corpus(self.holdout, self.max_len, self.text_model)

    @property
    def num_item_ids(self) -> int:
        return sum(t.num_items for t in self.tenants)

    @property
    def num_train_rows(self) -> int:
        return sum(len(t.train_inputs) for t in self.tenants)

    def row_index(self) -> tuple[np.ndarray, np.ndarray]:
        """(tenant index, row within tenant) for every training row, concatenated over tenants."""
        t_idx = np.concatenate([np.full(len(t.train_inputs), i, np.int64) for i, t in enumerate(self.tenants)])
        r_idx = np.concatenate([np.arange(len(t.train_inputs), dtype=np.int64) for t in self.tenants])
        return t_idx, r_idx

    def data_hashes(self) -> dict[str, str]:
        return {t.name: t.data_hash for t in self.tenants}


def load_tenants(data_cfg: DataConfig) -> list[Tenant]:
    """The configured tenants: the synthetic default when ``data.sources`` is empty."""
    if not data_cfg.sources:
        from rec.data.synthetic import generate_tenants

        return generate_tenants(data_cfg.synthetic)
    from rec.data.loaders import load_source

    tenants = [load_source(src, min_seq_len=data_cfg.min_seq_len, root=data_cfg.root) for src in data_cfg.sources]
    names = [t.name for t in tenants]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DataError(f"tenant names must be unique, repeated: {dupes}; set data.sources.N.name")
    return tenants


def eval_rows(split: LOOSplit | KShotSplit, which: str, max_len: int, **sample: Any) -> EvalRows:
    """Padded evaluation rows of a leave-one-out or K-shot split.

    Args:
        split: Anything with ``eval_examples(which, **sample)``.
        which: ``"valid"`` or ``"test"``.
        max_len: History window ``T``.
        **sample: Passed to ``eval_examples`` (``max_users``, ``seed`` of a leave-one-out split).
    """
    rows, hists, targets = split.eval_examples(which, **sample)
    lens = np.fromiter((len(h) for h in hists), np.int64, len(hists))
    ends = np.cumsum(lens)
    flat = np.concatenate(hists).astype(np.int64) if len(hists) else np.zeros(0, np.int64)
    bounds = np.stack([ends - lens, ends], axis=1)  # the whole histories, for exclude_history
    return EvalRows(np.asarray(rows, np.int64), left_pad(hists, max_len), np.asarray(targets, np.int64), flat, bounds)


def tenant_corpus(
    tenant: Tenant,
    text_emb: np.ndarray | None,
    id_offset: int,
    max_len: int,
    max_eval_users: int | None,
    seed: int,
    train: bool = True,
    item_texts: list[str] | None = None,
) -> TenantCorpus:
    """Split one tenant leave-one-out and pad it. Users with < 3 interactions are not evaluable.

    ``train=False`` (held-out tenants) builds only the evaluation rows: no training rows, and no
    requirement that any user be long enough to train on.
    """
    split = leave_one_out(tenant)
    # Users too short to evaluate still carry next-item signal: train on their whole sequence.
    train_seqs = list(split.train_seqs) + [tenant.sequence(int(u)) for u in split.short_rows]
    inputs, targets = next_item_examples(train_seqs if train else [], max_len)
    if train and len(inputs) == 0:
        raise DataError(f"tenant {tenant.name!r}: no user has >= 4 interactions, nothing to train on")
    pop = np.bincount(np.concatenate(train_seqs), minlength=tenant.num_items) if train_seqs else np.zeros(tenant.num_items)
    return TenantCorpus(
        name=tenant.name,
        num_items=tenant.num_items,
        id_offset=id_offset,
        text_emb=text_emb,
        train_inputs=inputs,
        train_targets=targets,
        valid=eval_rows(split, "valid", max_len, max_users=max_eval_users, seed=seed),
        test=eval_rows(split, "test", max_len, max_users=max_eval_users, seed=seed),
        item_popularity=pop.astype(np.float32),
        data_hash=tenant.content_hash(),
        item_texts=item_texts,
    )


def load_holdout(data_cfg: DataConfig) -> list[Tenant]:
    """The configured held-out tenants (``data.holdout``)."""
    from rec.data.loaders import load_source

    return [load_source(src, min_seq_len=data_cfg.min_seq_len, root=data_cfg.root) for src in data_cfg.holdout]


def _texts_for_tower(cfg: RecConfig, tenant: Tenant) -> list[str] | None:
    """The item texts the text-encoder LoRA re-encodes (formatted as ``encode_items`` formats them), or None when it is off."""
    if not cfg.train.text_lora.layers:
        return None
    from rec.text.item_format import format_item_texts

    return format_item_texts(list(tenant.items.text), cfg.text.item_format)


def build_corpus(
    cfg: RecConfig, tenants: list[Tenant] | None = None, progress: bool = False, holdout: list[Tenant] | None = None
) -> Corpus:
    """Load (or take) tenants, encode their item text, split and pad them.

    Args:
        cfg: The run config (data, text, model, train sections are read).
        tenants: Use these instead of ``cfg.data.sources``.
        progress: Show progress bars while encoding item text.
        holdout: Use these instead of ``cfg.data.holdout`` (tenants only ranked zero-shot, never
            trained on; their text-only corpora have ``id_offset = -1``).

    Raises:
        DataError: A tenant is empty, has no text while the model needs text, or a held-out tenant
            shares a name with a training tenant.
    """
    tenants = load_tenants(cfg.data) if tenants is None else tenants
    holdout = load_holdout(cfg.data) if holdout is None else holdout
    clash = sorted({t.name for t in tenants} & {t.name for t in holdout})
    if clash:
        raise DataError(f"tenants {clash} are both trained on and held out: a held-out tenant must be new; rename or drop one")
    text_model = None
    encode = None
    if cfg.model.use_text:
        from rec.text import encode_items, get_encoder

        for t in [*tenants, *holdout]:
            if not t.items.has_text:
                raise DataError(
                    f"tenant {t.name!r} ({t.source}) has no item text but model.use_text=true: "
                    "use a dataset with titles, or set model.use_text=false model.use_id_embedding=true"
                )
        encode = encode_items
        text_model = get_encoder(cfg.text).model_fingerprint
    out, offset = [], 0
    for t in tenants:
        emb = encode(list(t.items.text), cfg.text, progress=progress) if encode else None
        out.append(tenant_corpus(t, emb, offset, cfg.data.max_seq_len, cfg.train.max_eval_users, cfg.train.seed,
                                 item_texts=_texts_for_tower(cfg, t)))
        offset += t.num_items
    held = []
    for t in holdout:
        emb = encode(list(t.items.text), cfg.text, progress=progress) if encode else None
        held.append(tenant_corpus(t, emb, -1, cfg.data.max_seq_len, cfg.train.max_eval_users, cfg.train.seed, train=False,
                                  item_texts=_texts_for_tower(cfg, t)))
    return Corpus(tenants=out, max_len=cfg.data.max_seq_len, text_model=text_model, holdout=held)
