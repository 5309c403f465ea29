"""The one Ray Train scaffold: everything a job that trains on Ray Train shares.

Pretraining (``rec.training.ray_train``) and Reptile (``rec.adaptation.meta``) are written on it;
later Ray Train jobs (re-adaptation, federated rounds) should be too. A job supplies only its worker
loop and what it publishes; the scaffold does the rest:

driver  :func:`run_on_ray_train` -- storage folder (fresh unless ``train.resume``), the corpus put in
        the object store once, a ``TorchTrainer`` sized by ``cfg.train``, failures surfaced with
        the run named, the final checkpoint's state read back.
worker  :func:`setup_worker` -- typed config, corpus (zero-copy from the object store), torch
        threads, seed, rank/world, device, node ids; :meth:`Worker.text_embeddings` copies the
        read-only object-store arrays onto the device; :meth:`Worker.evaluate` ranks a strided
        shard per rank; :func:`restore_checkpoint` resumes a restarted run;
        :meth:`Worker.report` writes rank 0's checkpoint and reports once per epoch (every report
        blocks for the health-check interval: never per step).
publish :func:`publish_backbone` -- test metrics and the backbone artifact in one format.

Ray is imported inside functions only: the pure loop and tests import this module without a cluster.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rec.config import PRIMARY_METRIC, RecConfig
from rec.training.checkpoint import export_backbone, load_train_state, save_train_state
from rec.training.corpus import Corpus, TenantCorpus
from rec.training.loop import evaluate_corpus

__all__ = [
    "RunOutcome",
    "Worker",
    "evaluate_on_driver",
    "flat_metrics",
    "publish_backbone",
    "restore_checkpoint",
    "run_on_ray_train",
    "run_storage",
    "setup_worker",
    "tenant_records",
    "text_embeddings",
]

STATE_DIR = "state"  # the train-state folder inside every Ray Train checkpoint


def text_embeddings(tenants: list[TenantCorpus], device: torch.device | str | None = None) -> list[torch.Tensor | None]:
    """Each tenant's item-text matrix ``(N_t, text_dim)`` as a tensor on ``device`` (None: ID-only).

    Arrays that come from the object store (or a memory-mapped cache) are read-only: those are
    copied so torch owns writable memory; writable arrays are shared, not copied.
    """
    return [None if t.text_emb is None else torch.from_numpy(np.require(t.text_emb, np.float32, ["C", "W"])).to(device)
            for t in tenants]


def flat_metrics(prefix: str, metrics: dict[str, dict[str, float]]) -> dict[str, float]:
    """``evaluate_corpus`` output as one flat report row: every ``all`` metric plus each tenant's primary one."""
    out = {f"{prefix}_{k}": v for k, v in metrics["all"].items()}
    for tenant, m in metrics.items():
        if tenant != "all":
            out[f"{prefix}_{tenant}_{PRIMARY_METRIC}"] = m[PRIMARY_METRIC]
    return out


# --- inside a worker ----------------------------------------------------------------------------
@dataclass
class Worker:
    """One Ray Train rank, set up by :func:`setup_worker`."""

    cfg: RecConfig
    corpus: Corpus
    loop_config: dict[str, Any]  # the job's own entries travel here too
    rank: int
    world: int
    device: torch.device
    nodes: list[str]  # node id of every rank (a multi-node run shows its layout)

    def text_embeddings(self, corpus: Corpus | None = None) -> list[torch.Tensor | None]:
        """``corpus``'s (default: the training corpus's) text matrices on this rank's device."""
        return text_embeddings((corpus or self.corpus).tenants, self.device)

    def evaluate(self, model: nn.Module, corpus: Corpus, embs: list[torch.Tensor | None], split: str = "valid") -> dict[str, dict[str, float]]:
        """Full-ranking metrics, each rank ranking a strided shard; every rank gets the same result."""
        ev = self.cfg.eval
        return evaluate_corpus(model, corpus, embs, split, ev.ks_with_primary, ev.batch_size, ev.exclude_history, self.rank, self.world)

    def report(self, metrics: dict[str, Any], model: nn.Module, best_weights: dict[str, torch.Tensor],
               optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
        """End of an epoch: rank 0 checkpoints (weights, kept weights, optimizer, ``state``), all ranks report."""
        import ray.train

        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if self.rank == 0:
                save_train_state(Path(tmp) / STATE_DIR, model, best_weights, optimizer, dict(state))
                checkpoint = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=checkpoint)


def setup_worker(loop_config: dict[str, Any]) -> Worker:
    """First call of every worker loop: config, corpus, threads, seed, ranks, device, node ids.

    Seeds torch with ``train.seed``; a job with its own seed re-seeds after this call.
    """
    import ray
    import ray.train
    import ray.train.torch

    # Train V2 logs every report at INFO through the worker's root logger; keep the user's terminal
    # to the job's own lines (warnings still show).
    logging.getLogger().setLevel(logging.WARNING)
    cfg = RecConfig.model_validate(loop_config["config"])
    corpus = loop_config["corpus"]
    corpus = ray.get(corpus) if isinstance(corpus, ray.ObjectRef) else corpus
    torch.set_num_threads(cfg.train.torch_threads)
    torch.manual_seed(cfg.train.seed)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    node = ray.get_runtime_context().get_node_id()
    nodes = [node]
    if world > 1:
        import torch.distributed as dist

        nodes = [None] * world
        dist.all_gather_object(nodes, node)
    return Worker(cfg, corpus, loop_config, rank, world, ray.train.torch.get_device(), nodes)


def restore_checkpoint(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """Inside a worker: load the run's latest checkpoint (a restart or ``train.resume``).

    Loads the weights and optimizer state in place and returns ``(kept weights, state)`` with
    ``state["resumed_from"]`` set to the epoch it continues after, or None on a fresh start.
    """
    import ray.train

    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        return None
    with ckpt.as_directory() as d:
        weights, best_weights, opt_state, state = load_train_state(Path(d) / STATE_DIR)
    model.load_state_dict(weights)
    optimizer.load_state_dict(opt_state)
    state["resumed_from"] = state["epoch"]
    return best_weights, state


# --- on the driver ------------------------------------------------------------------------------
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


@dataclass
class RunOutcome:
    """What a finished Ray Train run left: its last checkpoint's state and where the run lives."""

    weights: dict[str, torch.Tensor]  # the model at the last checkpoint
    best_weights: dict[str, torch.Tensor]  # the weights the job chose to keep
    state: dict[str, Any]  # the job's counters and history
    storage: str
    train_s: float

    @property
    def epochs_run(self) -> int:
        return int(self.state["epoch"]) + 1


def run_on_ray_train(loop_per_worker: Callable[[dict[str, Any]], None], cfg: RecConfig, corpus: Corpus, out_dir: str | Path,
                     run_name: str, **job_entries: Any) -> RunOutcome:
    """Run ``loop_per_worker`` under a ``TorchTrainer`` sized by ``cfg.train`` and read its last checkpoint.

    Ray must be initialised by the caller (see ``rec.ray_session.ray_session``).

    Args:
        loop_per_worker: The job's worker loop; it receives ``{"config", "corpus", **job_entries}``.
        cfg: Workers, CPUs, GPU, placement, failures tolerated and resume come from ``cfg.train``.
        corpus: Put in the object store once; every worker reads it zero-copy.
        out_dir: Storage defaults to ``<out_dir>/ray``.
        run_name: The Ray Train run (a restart with the same name resumes it).
        **job_entries: More loop-config entries (large ones: pass ``ray.put`` refs).

    Raises:
        RuntimeError: The run failed after ``train.max_failures`` restarts, or left no checkpoint.
    """
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    tc = cfg.train
    storage = run_storage(cfg, Path(out_dir).resolve(), run_name)
    trainer = TorchTrainer(
        loop_per_worker,
        train_loop_config={"config": cfg.model_dump(mode="json"), "corpus": ray.put(corpus), **job_entries},
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
    t0 = time.perf_counter()
    try:
        result = trainer.fit()  # Train V2 raises TrainingFailedError; V1 returned result.error
    except Exception as e:  # noqa: BLE001 - re-raised with the run named
        raise RuntimeError(f"Ray Train run {run_name!r} failed (train.max_failures={tc.max_failures}): {e}") from e
    train_s = time.perf_counter() - t0
    if getattr(result, "error", None) is not None:
        raise RuntimeError(f"Ray Train run {run_name!r} failed: {result.error}") from result.error
    if result.checkpoint is None:
        raise RuntimeError(f"Ray Train run {run_name!r} finished without a checkpoint")
    with result.checkpoint.as_directory() as d:
        weights, best, _, state = load_train_state(Path(d) / STATE_DIR)
    return RunOutcome(weights, best, state, storage, train_s)


def tenant_records(corpus: Corpus) -> dict[str, dict[str, Any]]:
    """tenant name -> {id_offset, num_items, data_hash}: the ``tenants.json`` of a backbone artifact."""
    return {t.name: {"id_offset": t.id_offset, "num_items": t.num_items, "data_hash": t.data_hash} for t in corpus.tenants}


def evaluate_on_driver(model: nn.Module, corpus: Corpus, cfg: RecConfig, split: str = "test",
                       text_embs: list[torch.Tensor | None] | None = None) -> dict[str, dict[str, float]]:
    """Full-ranking metrics of ``model`` on every tenant of ``corpus`` (one process, no Ray).

    Args:
        text_embs: Each tenant's item-text matrix; default: the corpus's (the frozen encoder's).
    """
    ev = cfg.eval
    embs = text_embeddings(corpus.tenants) if text_embs is None else text_embs
    return evaluate_corpus(model, corpus, embs, split, ev.ks_with_primary, ev.batch_size, ev.exclude_history)


def publish_backbone(dest: Path, weights: dict[str, torch.Tensor], cfg: RecConfig, corpus: Corpus, outcome: RunOutcome,
                     run_name: str, metrics: dict[str, Any], protocol: str, extra: dict[str, Any] | None = None,
                     tenants: dict[str, dict[str, Any]] | None = None,
                     text_encoder: Callable[[Path], Any] | None = None) -> Path:
    """Publish a Ray Train run's chosen weights as a backbone artifact (``rec.training.checkpoint``).

    Args:
        tenants: The ``tenants.json`` record; default: ``corpus``'s layout.
        text_encoder: Writes the tuned text encoder into the artifact (``export_backbone``).
    """
    return export_backbone(
        dest,
        {k: v.contiguous() for k, v in weights.items()},
        cfg,
        tenants if tenants is not None else tenant_records(corpus),
        metrics=metrics,
        text_model=corpus.text_model,
        extra={"protocol": protocol, "train_s": outcome.train_s, "epochs_run": outcome.epochs_run,
               "ray_run": f"{outcome.storage}/{run_name}", **(extra or {})},
        text_encoder=text_encoder,
    )
