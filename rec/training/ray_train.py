"""Distributed pretraining with Ray Train (``TorchTrainer``, DDP over gloo on CPU / nccl on GPU).

Recipe: build the corpus on the driver -> put it in the object store -> every worker trains on its
rank's shard of a seeded per-epoch permutation -> per-epoch sharded evaluation and a checkpoint
(resume point) -> early stopping on validation NDCG@10 -> the best weights are published as a
backbone artifact.

Why not Ray Data shards: the corpus is already a set of small padded int arrays; sharding a seeded
permutation by rank makes the row -> rank assignment independent of node layout, which is what lets
a multi-node run reproduce a single-node run exactly (tested). Ray Data's ``streaming_split`` gives
no such guarantee.

``train.text_lora`` (LoRA on the item-text encoder, ``rec.training.pretrain_text_lora``) changes
only what stands for each tenant's text and what the weights include; the recipe is the same.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rec.config import PRIMARY_METRIC, RecConfig
from rec.text.lora_tower import save_tuned_encoder
from rec.training.checkpoint import LoadedBackbone
from rec.training.corpus import Corpus, build_corpus
from rec.training.early_stopping import EarlyStopping
from rec.training.loop import CorpusLoss, make_optimizer, train_epoch
from rec.training.lr_schedule import STATE_KEY as LR_STATE_KEY
from rec.training.lr_schedule import current_lr, plateau_counters, plateau_scheduler
from rec.training.mixture import epoch_rows
from rec.training.pretrain_text_lora import JointWeights, TextLoraRun, build_text_lora, split_weights, text_lora_cut
from rec.training.scaffold import (
    Worker, evaluate_on_driver, flat_metrics, publish_backbone, restore_checkpoint, run_on_ray_train, setup_worker,
)
from rec.training.text_tower import catalog_matrices, preserve_regularizer

__all__ = ["pretrain", "pretrained_backbone", "PretrainResult", "train_loop_per_worker"]

log = logging.getLogger(__name__)


def _epoch_name(epoch: int) -> str:
    return "untrained init" if epoch < 0 else f"epoch {epoch + 1}"


def train_loop_per_worker(loop_cfg: dict[str, Any]) -> None:
    """Ray Train worker entry: train, evaluate and checkpoint every epoch; resume if restarted."""
    import ray.train.torch

    from rec.models.backbone import build_backbone

    w = setup_worker(loop_cfg)
    tc = w.cfg.train
    model = build_backbone(w.cfg.model, num_item_ids=w.corpus.num_item_ids)
    lora = build_text_lora(w.cfg, w.corpus, loop_cfg["token_states"]) if tc.text_lora.layers else None
    # with train.text_lora the LoRA weights are kept, checkpointed and restored with the backbone's
    weights = model if lora is None else JointWeights(model, lora.tower)
    params = model.parameters() if lora is None else lora.param_groups(model, tc.lr, tc.text_lora.lr)
    optimizer = make_optimizer(params, tc.lr, tc.weight_decay)
    # -1: any first epoch beats "nothing yet" (select_on=holdout scores the untrained init below)
    stopper = EarlyStopping(weights, {PRIMARY_METRIC: -1.0}, tc.patience)
    # The history travels inside every checkpoint: Train V2's Result only keeps metrics of the
    # retained checkpoints, and a restarted run must still know its earlier epochs.
    state: dict[str, Any] = {"epoch": -1, "resumed_from": None, "history": [], **stopper.counters()}
    restored = restore_checkpoint(weights, optimizer)
    if restored is not None:
        best_weights, state = restored
        stopper.resume(best_weights, state)
    loss_model = ray.train.torch.prepare_model(CorpusLoss(model, w.cfg.model.loss, w.cfg.model.num_negatives,
                                                                tc.infonce_temperature, None if lora is None else lora.tower))
    holdout = w.corpus.holdout_corpus()
    embs, holdout_embs = (w.text_embeddings(), w.text_embeddings(holdout)) if lora is None else (lora.texts, lora.holdout_texts)
    regularizer = None if lora is None else preserve_regularizer(lora.texts, tc.text_lora.preserve_weight)
    if tc.select_on == "holdout" and state["epoch"] == -1 and not state["history"]:
        _score_untrained_init(w, model, holdout, catalog_matrices(holdout_embs, w.device), stopper, state)
    scheduler = plateau_scheduler(optimizer, tc, state)  # after the init's score: both count gains from one best
    for epoch in range(state["epoch"] + 1, tc.epochs):
        t0 = time.perf_counter()
        rows = epoch_rows(w.corpus, tc, epoch, w.rank, w.world)
        loss = train_epoch(loss_model, optimizer, w.corpus, rows, embs, tc.batch_size, tc.grad_clip, regularizer)
        train_s = time.perf_counter() - t0
        val = w.evaluate(model, w.corpus, catalog_matrices(embs, w.device))
        hold = w.evaluate(model, holdout, catalog_matrices(holdout_embs, w.device)) if holdout.tenants else None
        selection = holdout_selection(hold) if tc.select_on == "holdout" else val["all"]
        stopper.update(epoch, selection, weights)
        state.update(epoch=epoch, **stopper.counters())
        metrics = _epoch_metrics(w, state, loss, train_s, len(rows), val, hold, stopper.stopped)
        metrics["lr"] = current_lr(optimizer)  # the rate this epoch trained at
        if scheduler is not None:
            scheduler.step(selection[PRIMARY_METRIC])
            state[LR_STATE_KEY] = plateau_counters(scheduler)
        state["history"].append(metrics)
        if w.rank == 0:
            _print_epoch(tc.epochs, metrics, state, val, hold)
        w.report(metrics, weights, stopper.best_weights, optimizer, state)
        if stopper.stopped:
            break


def holdout_selection(hold: dict[str, dict[str, float]]) -> dict[str, float]:
    """What ``select_on=holdout`` compares: NDCG@10 averaged over the held-out tenants, each
    counting once (with one held-out tenant, its own NDCG@10). One catalog alone misled the
    selection before (bench/README.md), so several can be held out and none outweighs the others."""
    names = [k for k in hold if k != "all"]
    return {PRIMARY_METRIC: float(sum(hold[n][PRIMARY_METRIC] for n in names) / max(len(names), 1))}


def _score_untrained_init(w: Worker, model: torch.nn.Module, holdout: Corpus, embs: list, stopper: EarlyStopping,
                          state: dict[str, Any]) -> None:
    """Transfer validation: the untrained init is a candidate, so a run whose pretraining only hurts
    unseen tenants publishes the init and says so, instead of a worse model."""
    hold = w.evaluate(model, holdout, embs)
    stopper.best = holdout_selection(hold)
    state.update(stopper.counters())
    state["history"].append({"epoch": -1, **flat_metrics("holdout", hold)})
    if w.rank == 0:
        print(f"untrained init  holdout ndcg@10 {state['best']:.4f}", flush=True)


def _epoch_metrics(w: Worker, state: dict[str, Any], loss: float, train_s: float, n_rows: int,
                   val: dict[str, dict[str, float]], hold: dict[str, dict[str, float]] | None, stop: bool) -> dict[str, Any]:
    return {
        "epoch": state["epoch"],
        "train_loss": loss,
        "epoch_train_s": train_s,
        "samples_per_s": n_rows * w.world / max(train_s, 1e-9),
        "selected_on": w.cfg.train.select_on,
        "best_val_ndcg@10": state["best"],
        "best_epoch": state["best_epoch"],
        "resumed_from": -1 if state["resumed_from"] is None else state["resumed_from"],
        "worker_nodes": ",".join(w.nodes),
        "early_stopped": stop,
        **flat_metrics("val", val),
        **(flat_metrics("holdout", hold) if hold is not None else {}),
    }


def _print_epoch(epochs: int, m: dict[str, Any], state: dict[str, Any], val: dict, hold: dict | None) -> None:
    held = f"  holdout ndcg@10 {hold['all'][PRIMARY_METRIC]:.4f}" if hold is not None else ""
    print(
        f"epoch {m['epoch'] + 1}/{epochs}  loss {m['train_loss']:.4f}  val ndcg@10 {val['all'][PRIMARY_METRIC]:.4f}{held}  "
        f"best {state['best']:.4f} ({_epoch_name(state['best_epoch'])})  lr {m['lr']:.2g}  {m['epoch_train_s']:.1f}s"
        + ("  early stop" if m["early_stopped"] else ""),
        flush=True,
    )


@dataclass
class PretrainResult:
    checkpoint: Path
    test_metrics: dict[str, dict[str, float]]
    history: list[dict[str, Any]] = field(default_factory=list)
    train_s: float = 0.0
    epochs: int = 0
    best_epoch: int = -1  # -1: the untrained init was best (only possible with train.select_on=holdout)
    holdout_test: dict[str, dict[str, float]] | None = None  # zero-shot test metrics on data.holdout


def pretrain(cfg: RecConfig, corpus: Corpus | None = None, progress: bool = False) -> PretrainResult:
    """Pretrain the backbone on Ray Train and publish ``<output_dir>/checkpoint``.

    Ray must be initialised by the caller (see ``rec.ray_session.ray_session``). With
    ``train.text_lora.layers > 0`` the item-text encoder's top layers train too
    (``rec.training.pretrain_text_lora``): test metrics use the selected epoch's tuned text, and its
    merged encoder is published inside the checkpoint (``checkpoint/text-encoder``).

    Returns:
        The published checkpoint path, per-tenant test metrics (full ranking), the per-epoch
        history reported by rank 0, wall time and epochs run.

    Raises:
        ValueError: ``train.text_lora.layers`` is not below the text encoder's layer count, or a
            given ``corpus`` lacks the item texts text_lora needs.
    """
    from rec.models.backbone import build_backbone

    out = Path(cfg.train.output_dir).resolve()
    if cfg.train.text_lora.layers:
        text_lora_cut(cfg.text, cfg.train.text_lora.layers)  # a layer count the encoder lacks fails before Ray starts
    corpus = build_corpus(cfg, progress=progress) if corpus is None else corpus
    states_root = out / "token-states"
    if cfg.train.text_lora.layers:
        # the token-state cache is written here, once: ranks sharing a node would otherwise race to write it
        build_text_lora(cfg, corpus, states_root)
    run = run_on_ray_train(train_loop_per_worker, cfg, corpus, out, cfg.train.run_name, token_states=str(states_root))
    state = run.state
    weights, lora_weights = split_weights(run.best_weights)
    model = build_backbone(cfg.model, num_item_ids=corpus.num_item_ids)
    model.load_state_dict(weights)
    model.eval()
    lora = _selected_text_lora(cfg, corpus, states_root, lora_weights)
    holdout = corpus.holdout_corpus()
    test = evaluate_on_driver(model, corpus, cfg, "test", None if lora is None else catalog_matrices(lora.texts))
    holdout_test = (evaluate_on_driver(model, holdout, cfg, "test", None if lora is None else catalog_matrices(lora.holdout_texts))
                    if holdout.tenants else None)
    if state["best_epoch"] < 0:
        log.warning(
            "pretraining never beat the untrained init on the held-out tenants %s (zero-shot NDCG@10 %.4f): "
            "publishing the init. Try more or closer source tenants, a lower train.lr, or train.select_on=valid.",
            [t.name for t in holdout.tenants], state["best"],
        )
    protocol = ("leave-one-out, full ranking, history excluded" if cfg.eval.exclude_history
                else "leave-one-out, full ranking over each tenant's catalog, history not excluded")
    ckpt = publish_backbone(
        out / "checkpoint", weights, cfg, corpus, run, cfg.train.run_name,
        metrics={"test": test, "best_val_ndcg@10": state["best"], "best_epoch": state["best_epoch"],
                 "selected_on": cfg.train.select_on, "holdout_test": holdout_test},
        protocol=protocol, extra={"holdout_tenants": {t.name: t.data_hash for t in holdout.tenants}},
        text_encoder=None if lora is None else lambda dest: save_tuned_encoder(
            lora.encoder, lora.tower, dest, {"selected_epoch": state["best_epoch"], "text_lora": cfg.train.text_lora.model_dump()}),
    )
    return PretrainResult(ckpt, test, state["history"], run.train_s, run.epochs_run, state["best_epoch"], holdout_test)


def _selected_text_lora(cfg: RecConfig, corpus: Corpus, states_root: Path, lora_weights: dict[str, torch.Tensor]) -> TextLoraRun | None:
    """The run's text tower with the selected epoch's LoRA (token states read back from the workers' cache); None when off."""
    if not cfg.train.text_lora.layers:
        return None
    lora = build_text_lora(cfg, corpus, states_root)
    lora.tower.load_lora(lora_weights)
    return lora


def pretrained_backbone(cfg: RecConfig, corpus: Corpus | Callable[[], Corpus] | None = None,
                        progress: bool = False) -> tuple[LoadedBackbone, PretrainResult | None]:
    """The backbone published at ``<train.output_dir>/checkpoint``: loaded if a valid one is there, else pretrained.

    For pipelines that cache their backbone (benchmarks, the demo): key ``train.output_dir`` by the
    settings that shape the backbone, since an existing checkpoint is taken as it is. Pretraining
    starts a Ray session from ``cfg.ray`` unless Ray is already initialised.

    Args:
        corpus: The pretraining corpus, or a function that builds it (called only when pretraining);
            None = built from ``cfg``.

    Returns:
        The loaded backbone, and the :class:`PretrainResult` when it was pretrained now (None when
        it was loaded).
    """
    from rec.io.artifacts import ArtifactError
    from rec.ray_session import ray_session
    from rec.training.checkpoint import load_backbone

    ckpt = Path(cfg.train.output_dir).resolve() / "checkpoint"
    if (ckpt / "manifest.json").is_file():
        try:
            return load_backbone(ckpt), None
        except ArtifactError as e:
            log.warning("%s; pretraining it again", e)
    if callable(corpus):
        corpus = corpus()
    with ray_session(cfg.ray):
        res = pretrain(cfg, corpus=corpus, progress=progress)
    return load_backbone(res.checkpoint), res
