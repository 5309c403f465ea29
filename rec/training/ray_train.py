"""Distributed pretraining with Ray Train (``TorchTrainer``, DDP over gloo on CPU / nccl on GPU).

Recipe: build the corpus on the driver -> put it in the object store -> every worker trains on its
rank's shard of a seeded per-epoch permutation -> per-epoch sharded evaluation and a checkpoint
(resume point) -> early stopping on validation NDCG@10 -> the best weights are published as a
backbone artifact.

Why not Ray Data shards: the corpus is already a set of small padded int arrays; sharding a seeded
permutation by rank makes the row -> rank assignment independent of node layout, which is what lets
a multi-node run reproduce a single-node run exactly (tested). Ray Data's ``streaming_split`` gives
no such guarantee.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rec.config import RecConfig
from rec.training.checkpoint import export_backbone, load_train_state, save_train_state
from rec.training.corpus import Corpus, build_corpus
from rec.training.loop import CorpusLoss, evaluate_corpus, train_epoch
from rec.training.batches import shard_rows

__all__ = ["pretrain", "PretrainResult", "train_loop_per_worker"]

PRIMARY_METRIC = "ndcg@10"
log = logging.getLogger(__name__)


def _flat(prefix: str, metrics: dict[str, dict[str, float]]) -> dict[str, float]:
    out = {f"{prefix}_{k}": v for k, v in metrics["all"].items()}
    for tenant, m in metrics.items():
        if tenant != "all":
            out[f"{prefix}_{tenant}_{PRIMARY_METRIC}"] = m[PRIMARY_METRIC]
    return out


def _epoch_name(epoch: int) -> str:
    return "untrained init" if epoch < 0 else f"epoch {epoch + 1}"


def train_loop_per_worker(loop_cfg: dict[str, Any]) -> None:
    """Ray Train worker entry: train, evaluate and checkpoint every epoch; resume if restarted."""
    import ray
    import ray.train
    import ray.train.torch
    import torch.distributed as dist

    from rec.models.backbone import build_backbone

    # Train V2 logs every report at INFO through the worker's root logger; keep the user's terminal
    # to our one line per epoch (warnings still show).
    logging.getLogger().setLevel(logging.WARNING)
    cfg = RecConfig.model_validate(loop_cfg["config"])
    corpus: Corpus = ray.get(loop_cfg["corpus"]) if isinstance(loop_cfg["corpus"], ray.ObjectRef) else loop_cfg["corpus"]
    tc = cfg.train
    torch.set_num_threads(tc.torch_threads)
    torch.manual_seed(tc.seed)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()

    model = build_backbone(cfg.model, num_item_ids=corpus.num_item_ids)
    optimizer = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    # The history travels inside every checkpoint: Train V2's Result only keeps metrics of the
    # retained checkpoints, and a restarted run must still know its earlier epochs.
    state = {"epoch": -1, "best": -1.0, "best_epoch": -1, "bad_epochs": 0, "resumed_from": None, "history": []}
    best_weights = {k: v.clone() for k, v in model.state_dict().items()}
    restored = restore_from_checkpoint(model, optimizer)
    if restored is not None:
        best_weights, state = restored

    loss_model = ray.train.torch.prepare_model(CorpusLoss(model, cfg.model.loss, cfg.model.num_negatives))
    device = ray.train.torch.get_device()
    # Arrays from the object store are read-only views: copy so torch owns writable memory.
    text_embs = [None if t.text_emb is None else torch.tensor(t.text_emb, device=device) for t in corpus.tenants]
    node = ray.get_runtime_context().get_node_id()
    nodes = [node]
    if world > 1:
        nodes = [None] * world
        dist.all_gather_object(nodes, node)
    ks = sorted(set(cfg.eval.ks) | {10})
    holdout = corpus.holdout_corpus()
    holdout_embs = [None if t.text_emb is None else torch.tensor(t.text_emb, device=device) for t in holdout.tenants]

    def evaluate(which: Corpus, embs: list) -> dict[str, dict[str, float]]:
        return evaluate_corpus(model, which, embs, "valid", ks, cfg.eval.batch_size, cfg.eval.exclude_history, rank, world)

    select_holdout = tc.select_on == "holdout"
    if select_holdout and state["epoch"] == -1 and not state["history"]:
        # Transfer validation: the untrained init is a candidate, so a run whose pretraining only
        # hurts unseen tenants publishes the init and says so, instead of a worse model.
        hold = evaluate(holdout, holdout_embs)
        state.update(best=hold["all"][PRIMARY_METRIC], best_epoch=-1)
        state["history"].append({"epoch": -1, **_flat("holdout", hold)})
        if rank == 0:
            print(f"untrained init  holdout ndcg@10 {state['best']:.4f}", flush=True)

    for epoch in range(state["epoch"] + 1, tc.epochs):
        t0 = time.perf_counter()
        rows = shard_rows(corpus.num_train_rows, epoch, tc.seed, rank, world)
        loss = train_epoch(loss_model, optimizer, corpus, rows, text_embs, tc.batch_size, tc.grad_clip)
        train_s = time.perf_counter() - t0
        val = evaluate(corpus, text_embs)
        hold = evaluate(holdout, holdout_embs) if holdout.tenants else None
        score = (hold if select_holdout else val)["all"][PRIMARY_METRIC]
        if score > state["best"]:
            state.update(best=score, best_epoch=epoch, bad_epochs=0)
            best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch
        stop = state["bad_epochs"] >= tc.patience
        metrics = {
            "epoch": epoch,
            "train_loss": loss,
            "epoch_train_s": train_s,
            "samples_per_s": len(rows) * world / max(train_s, 1e-9),
            "selected_on": tc.select_on,
            "best_val_ndcg@10": state["best"],
            "best_epoch": state["best_epoch"],
            "resumed_from": -1 if state["resumed_from"] is None else state["resumed_from"],
            "worker_nodes": ",".join(nodes),
            "early_stopped": stop,
            **_flat("val", val),
            **(_flat("holdout", hold) if hold is not None else {}),
        }
        state["history"].append(metrics)
        if rank == 0:
            held = f"  holdout ndcg@10 {hold['all'][PRIMARY_METRIC]:.4f}" if hold is not None else ""
            print(
                f"epoch {epoch + 1}/{tc.epochs}  loss {loss:.4f}  val ndcg@10 {val['all'][PRIMARY_METRIC]:.4f}{held}  "
                f"best {state['best']:.4f} ({_epoch_name(state['best_epoch'])})  {train_s:.1f}s"
                + ("  early stop" if stop else ""),
                flush=True,
            )
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if rank == 0:
                save_train_state(Path(tmp) / "state", model, best_weights, optimizer, dict(state))
                checkpoint = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=checkpoint)
        if stop:
            break


@dataclass
class PretrainResult:
    checkpoint: Path
    test_metrics: dict[str, dict[str, float]]
    history: list[dict[str, Any]] = field(default_factory=list)
    train_s: float = 0.0
    epochs: int = 0
    best_epoch: int = -1  # -1: the untrained init was best (only possible with train.select_on=holdout)
    holdout_test: dict[str, dict[str, float]] | None = None  # zero-shot test metrics on data.holdout


def restore_from_checkpoint(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict[str, Any]] | None:
    """Inside a Ray Train worker: load the run's latest checkpoint (a restart or ``train.resume``).

    Loads the weights and optimizer state in place and returns ``(best_weights, state)`` with
    ``state["resumed_from"]`` set to the epoch it continues after, or None on a fresh start.
    """
    import ray.train

    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        return None
    with ckpt.as_directory() as d:
        weights, best_weights, opt_state, state = load_train_state(Path(d) / "state")
    model.load_state_dict(weights)
    optimizer.load_state_dict(opt_state)
    state["resumed_from"] = state["epoch"]
    return best_weights, state


def run_storage(cfg: RecConfig, out: Path, run_name: str) -> str:
    """Ray Train storage root for a run: ``ray.storage_path`` or ``<out>/ray``.

    A local root is resolved and, unless ``train.resume``, the run's previous folder is removed so
    a fresh run never restores someone else's checkpoint. A URI (``s3://``, ``gs://``) is passed to
    Ray as is (multi-node runs need shared storage); there a new ``run_name`` starts fresh.
    """
    sp = cfg.ray.storage_path
    if sp and "://" in sp:
        return sp.rstrip("/")
    storage = Path(sp).resolve() if sp else out / "ray"
    if not cfg.train.resume and (storage / run_name).exists():
        shutil.rmtree(storage / run_name)
    return str(storage)


def fit_on_ray_train(loop_per_worker: Any, loop_config: dict[str, Any], cfg: RecConfig, run_name: str, storage: str) -> Any:
    """Run ``loop_per_worker`` under a ``TorchTrainer`` sized by ``cfg.train``; return the Result.

    Shared by pretraining and meta-training. Raises RuntimeError with the cause when the run fails
    after ``train.max_failures`` restarts or ends without a checkpoint.
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    tc = cfg.train
    trainer = TorchTrainer(
        loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(
            num_workers=tc.num_workers,
            use_gpu=tc.use_gpu,
            resources_per_worker={"CPU": tc.cpus_per_worker},
            placement_strategy=tc.placement_strategy,
        ),
        run_config=RunConfig(
            name=run_name,
            storage_path=storage,
            failure_config=FailureConfig(max_failures=tc.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )
    try:
        result = trainer.fit()  # Train V2 raises TrainingFailedError; V1 returned result.error
    except Exception as e:  # noqa: BLE001 - re-raised with the run named
        raise RuntimeError(f"Ray Train run {run_name!r} failed (train.max_failures={tc.max_failures}): {e}") from e
    if getattr(result, "error", None) is not None:
        raise RuntimeError(f"Ray Train run {run_name!r} failed: {result.error}") from result.error
    if result.checkpoint is None:
        raise RuntimeError(f"Ray Train run {run_name!r} finished without a checkpoint")
    return result


def pretrain(cfg: RecConfig, corpus: Corpus | None = None, progress: bool = False) -> PretrainResult:
    """Pretrain the backbone on Ray Train and publish ``<output_dir>/checkpoint``.

    Ray must be initialised by the caller (see ``rec.ray_session.ray_session``).

    Returns:
        The published checkpoint path, per-tenant test metrics (full ranking), the per-epoch
        history reported by rank 0, wall time and epochs run.
    """
    import ray

    from rec.models.backbone import build_backbone
    from rec.training.checkpoint import load_train_state
    from rec.training.loop import evaluate_corpus

    out = Path(cfg.train.output_dir).resolve()
    storage = run_storage(cfg, out, cfg.train.run_name)
    corpus = build_corpus(cfg, progress=progress) if corpus is None else corpus
    t0 = time.perf_counter()
    loop_config = {"config": cfg.model_dump(mode="json"), "corpus": ray.put(corpus)}
    result = fit_on_ray_train(train_loop_per_worker, loop_config, cfg, cfg.train.run_name, storage)
    train_s = time.perf_counter() - t0
    with result.checkpoint.as_directory() as d:
        _, best, _, state = load_train_state(Path(d) / "state")
    model = build_backbone(cfg.model, num_item_ids=corpus.num_item_ids)
    model.load_state_dict(best)
    model.eval()
    text_embs = [None if t.text_emb is None else torch.from_numpy(t.text_emb) for t in corpus.tenants]
    ks = sorted(set(cfg.eval.ks) | {10})
    test = evaluate_corpus(model, corpus, text_embs, "test", ks, cfg.eval.batch_size, cfg.eval.exclude_history)
    holdout = corpus.holdout_corpus()
    holdout_test = None
    if holdout.tenants:
        embs = [None if t.text_emb is None else torch.from_numpy(t.text_emb) for t in holdout.tenants]
        holdout_test = evaluate_corpus(model, holdout, embs, "test", ks, cfg.eval.batch_size, cfg.eval.exclude_history)
    if state["best_epoch"] < 0:
        log.warning(
            "pretraining never beat the untrained init on the held-out tenants %s (zero-shot NDCG@10 %.4f): "
            "publishing the init. Try more or closer source tenants, a lower train.lr, or train.select_on=valid.",
            [t.name for t in holdout.tenants], state["best"],
        )
    history = state["history"]
    tenants = {t.name: {"id_offset": t.id_offset, "num_items": t.num_items, "data_hash": t.data_hash} for t in corpus.tenants}
    ckpt = export_backbone(
        out / "checkpoint",
        {k: v.contiguous() for k, v in best.items()},
        cfg,
        tenants,
        metrics={"test": test, "best_val_ndcg@10": state["best"], "best_epoch": state["best_epoch"],
                 "selected_on": cfg.train.select_on, "holdout_test": holdout_test},
        text_model=corpus.text_model,
        extra={"protocol": "leave-one-out, full ranking over each tenant's catalog, history not excluded"
               if not cfg.eval.exclude_history else "leave-one-out, full ranking, history excluded",
               "train_s": train_s, "epochs_run": int(state["epoch"]) + 1,
               "holdout_tenants": {t.name: t.data_hash for t in holdout.tenants}, "ray_run": f"{storage}/{cfg.train.run_name}"},
    )
    return PretrainResult(ckpt, test, history, train_s, int(state["epoch"]) + 1, state["best_epoch"], holdout_test)

