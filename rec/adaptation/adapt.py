"""The adaptation recipe: one tenant, K users, one method -> adapted model + metrics (+ adapter).

setup (K-shot split, item text, the method's trainable copy of the backbone) -> train with early
stopping on the held-out users' validation item -> the method's ``after_training`` step (e.g. the
item-terms popularity floor) -> test on the same users' last item -> optionally publish.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rec.adaptation.artifacts import save_adapter
from rec.adaptation.prepare import prepare_model, scoring_backbone, trainable_parameters
from rec.adaptation.registry import AdaptationMethod, AdaptContext, TrainingHooks, get_method
from rec.config import AdaptConfig, EvalConfig
from rec.data.schema import DataError, Tenant
from rec.data.splits import KShotSplit, k_shot_split
from rec.training.batches import next_item_examples
from rec.training.checkpoint import LoadedBackbone
from rec.training.corpus import TenantCorpus, eval_rows
from rec.training.loop import evaluate_tenant
from rec.training.tenant_fit import FitSettings, TenantFit, fit_tenant

__all__ = ["AdaptResult", "adapt_tenant", "check_tenant_text", "fewshot_corpus", "publish_adapter", "tenant_split_and_text"]

EpochCallback = Callable[[int, dict[str, float]], None]


@dataclass
class AdaptResult:
    model: nn.Module  # PeftModel for LoRA, else Backbone; best epoch's weights
    tenant: str
    method: str
    split: KShotSplit
    valid: dict[str, float]
    test: dict[str, float]
    adapt_s: float
    epochs: int  # epochs run (early stopping may end before acfg.epochs)
    trainable_params: int
    data_hash: str
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1  # the epoch whose weights were kept; -1 = none beat the starting weights
    method_report: dict[str, Any] = field(default_factory=dict)  # what the method decided after training (manifest)


def fewshot_corpus(split: KShotSplit, text_emb: np.ndarray, max_len: int) -> TenantCorpus:
    """Training rows from the K users' sequences; valid/test rows from the held-out users."""
    seqs = split.train.sequences()
    inputs, targets = next_item_examples(seqs, max_len)
    pop = np.bincount(np.concatenate(seqs), minlength=split.train.num_items) if seqs else np.zeros(split.train.num_items)
    return TenantCorpus(
        name=split.train.name,
        num_items=split.train.num_items,
        id_offset=-1,  # a new tenant has no ID rows in the backbone: text only
        text_emb=text_emb,
        train_inputs=inputs,
        train_targets=targets,
        valid=eval_rows(split, "valid", max_len),
        test=eval_rows(split, "test", max_len),
        item_popularity=pop.astype(np.float32),
        data_hash=split.train.content_hash(),
    )


def check_tenant_text(base: LoadedBackbone, tenant: Tenant, text_emb: np.ndarray | None) -> None:
    if not base.cfg.model.use_text:
        raise ValueError("this backbone is ID-only: it cannot score a new tenant's items; pretrain with model.use_text=true")
    if not tenant.items.has_text:
        raise DataError(f"tenant {tenant.name!r} has no item text, but adaptation scores items from their text: add titles")
    want = (tenant.num_items, base.cfg.model.text_dim)
    if text_emb is not None and tuple(text_emb.shape) != want:
        raise ValueError(
            f"text_emb has shape {tuple(text_emb.shape)}, expected {want} (one row per item of {tenant.name!r}, "
            f"encoded by the backbone's text model {base.cfg.text.model!r}): pass text_emb=None to encode here"
        )


@dataclass
class _Run:
    """One adaptation's state shared by the recipe's steps."""

    model: nn.Module
    method: AdaptationMethod
    ctx: AdaptContext
    tenant: TenantCorpus
    emb: list[torch.Tensor]
    ks: list[int]
    eval_cfg: EvalConfig

    def evaluate(self, which: str, model: nn.Module | None = None) -> dict[str, float]:
        return evaluate_tenant(scoring_backbone(model or self.model), self.tenant, self.emb[0], which, self.ks,
                               self.eval_cfg.batch_size, self.eval_cfg.exclude_history)


def _setup(base: LoadedBackbone, tenant: Tenant, acfg: AdaptConfig, eval_cfg: EvalConfig, split: KShotSplit,
           text_emb: np.ndarray, init_adapter: str | Path | None = None) -> _Run:
    """The few-shot corpus and the method's trainable copy of the backbone."""
    max_len = base.cfg.data.max_seq_len
    tc = fewshot_corpus(split, text_emb, max_len)
    # np.require copies read-only arrays (memory-mapped caches): torch.from_numpy would warn on them.
    emb = [torch.from_numpy(np.require(text_emb, np.float32, ["C", "W"]))]
    steps_per_epoch = -(-len(tc.train_inputs) // acfg.batch_size)
    ctx = AdaptContext(base_id=f"fewshot-rec-backbone:{base.checksum}", total_steps=max(steps_per_epoch * acfg.epochs, 1),
                       num_items=tc.num_items, item_popularity=tc.item_popularity, item_text=list(tenant.items.text),
                       text=base.cfg.text)
    model = prepare_model(base.model, acfg, ctx=ctx, init_adapter=init_adapter)
    return _Run(model, get_method(acfg.method), ctx, tc, emb, list(eval_cfg.ks_with_primary), eval_cfg)


def _train(run: _Run, acfg: AdaptConfig, on_epoch: EpochCallback | None) -> tuple[TenantFit, TrainingHooks]:
    """Epochs with early stopping on validation NDCG@10 (``fit_tenant``); the best weights are restored."""
    hooks = run.method.training_hooks(run.model)
    settings = FitSettings(epochs=acfg.epochs, lr=acfg.lr, batch_size=acfg.batch_size, patience=acfg.patience, seed=acfg.seed,
                           weight_decay=acfg.weight_decay, ks=tuple(run.ks), eval_batch_size=run.eval_cfg.batch_size,
                           exclude_history=run.eval_cfg.exclude_history)
    fit = fit_tenant(run.model, scoring_backbone(run.model), run.tenant, run.emb[0], trainable_parameters(run.model), settings,
                     regularizer=hooks.regularizer, after_step=hooks.after_step, on_epoch=on_epoch,
                     before_batch=hooks.before_batch)
    return fit, hooks


def tenant_split_and_text(base: LoadedBackbone, tenant: Tenant, acfg: AdaptConfig, split: KShotSplit | None = None,
                           text_emb: np.ndarray | None = None) -> tuple[KShotSplit, np.ndarray]:
    """What every adaptation recipe starts from (``adapt_tenant``, ``rec fed``): the tenant's text checked
    against the backbone's encoder, torch threads and seed set, the K-shot split and the item text.

    Raises:
        ValueError, DataError: As :func:`check_tenant_text`; K larger than the tenant's users.
    """
    check_tenant_text(base, tenant, text_emb)
    torch.set_num_threads(acfg.torch_threads)
    torch.manual_seed(acfg.seed)
    split = split or k_shot_split(tenant, acfg.k_users, acfg.n_first, acfg.seed, acfg.num_eval_users, acfg.eval_fraction)
    if text_emb is None:
        from rec.text import encode_items

        text_emb = encode_items(list(tenant.items.text), base.cfg.text)
    return split, text_emb


def adapt_tenant(
    base: LoadedBackbone,
    tenant: Tenant,
    acfg: AdaptConfig,
    eval_cfg: EvalConfig | None = None,
    text_emb: np.ndarray | None = None,
    on_epoch: EpochCallback | None = None,
    split: KShotSplit | None = None,
    init_adapter: str | Path | None = None,
) -> AdaptResult:
    """Adapt ``base`` to ``tenant`` with ``acfg.method`` using ``acfg.k_users`` training users.

    Args:
        base: The pretrained backbone (``load_backbone``).
        tenant: The new tenant (full data; the K-shot split is taken here, seeded).
        acfg: Method and hyper-parameters.
        eval_cfg: Metric cut-offs (NDCG@10 is always included: it drives early stopping).
        text_emb: Precomputed item-text embeddings ``(N, text_dim)``; encoded (cached) if None.
        on_epoch: Called after every epoch with (epoch, validation metrics): Ray Tune reports here.
        split: Reuse a K-shot split (e.g. the same held-out users across methods).
        init_adapter: Warm start: an adapter folder of ``acfg.method`` (e.g. the serving one)
            whose trained tensors training starts from (``rec.feedback`` re-adaptation).

    Raises:
        ValueError: K larger than the tenant's available users, an ID-only backbone, text model
            mismatch, an ``init_adapter`` that does not fit.
        DataError: The tenant has no items or no item text.
    """
    eval_cfg = eval_cfg or EvalConfig()
    t0 = time.perf_counter()
    split, text_emb = tenant_split_and_text(base, tenant, acfg, split, text_emb)
    run = _setup(base, tenant, acfg, eval_cfg, split, text_emb, init_adapter)
    fit, hooks = _train(run, acfg, on_epoch)
    valid = fit.valid
    if hooks.finish is not None and hooks.finish():  # the restored weights changed (AdaLoRA's final ranks)
        valid = run.evaluate("valid")
    run.model.eval()
    decision = run.method.after_training(run.model, acfg, run.ctx, lambda m: run.evaluate("valid", m), valid)
    if decision:
        valid = run.evaluate("valid")  # what the method kept, measured
    run.model.eval()
    return AdaptResult(
        model=run.model,
        tenant=tenant.name,
        method=acfg.method,
        split=split,
        valid=valid,
        test=run.evaluate("test"),
        adapt_s=time.perf_counter() - t0,
        epochs=fit.epochs,
        best_epoch=fit.best_epoch,
        trainable_params=sum(p.numel() for p in trainable_parameters(run.model)),
        data_hash=run.tenant.data_hash,
        history=fit.history,
        method_report=decision,
    )


def publish_adapter(result: AdaptResult, base: LoadedBackbone, acfg: AdaptConfig, root: str | Path | None = None,
                    extra: dict[str, Any] | None = None) -> Path:
    """Write the adapter as the tenant's next version under ``root`` (default ``acfg.output_root``)."""
    meta = {
        "backbone_checksum": base.checksum,
        "text_model": base.manifest.get("text_model"),
        "k_users": result.split.k_users,
        "n_first": result.split.n_first,
        "train_users": len(result.split.train_rows),
        "eval_users": len(result.split.eval),
        "data_hash": result.data_hash,
        "metrics": {"valid": result.valid, "test": result.test},
        "adapt_s": result.adapt_s,
        "epochs": result.epochs,
        "best_epoch": result.best_epoch,
        "trainable_params": result.trainable_params,
        **result.method_report,
        **(extra or {}),
    }
    return save_adapter(result.model, acfg, result.tenant, root or acfg.output_root, meta)
