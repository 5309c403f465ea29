"""Meta-learned initialization with Reptile, distributed over Ray Train workers.

Reference: Nichol, Achiam & Schulman, "On First-Order Meta-Learning Algorithms", arXiv:1803.02999,
2018 (Reptile, the batched version of their Algorithm 2).

An episode is one source tenant: ``support_users`` users' training sequences, ``inner_steps``
optimizer steps on the full-softmax CE over that tenant's catalog (``CorpusLoss``), starting from
the meta weights ``theta``. Each worker runs ``episodes_per_iteration`` episodes per meta step; the
deltas ``theta' - theta`` are summed over episodes and all-reduced over workers (gloo/nccl), and
every rank applies the same update ``theta <- theta + eps * mean(theta' - theta)``, so the ranks stay
identical. The update is written as an SGD step on the "gradient" ``-(mean delta)`` so the outer
optimizer is an ordinary ``torch.optim`` object whose state is checkpointed like pretraining's.

Recipe (``meta_train``): optionally start from a pretrained backbone ("pretraining + Reptile") or
from scratch -> outer epochs of ``meta_iterations`` meta steps, a checkpoint and a report after each
(resume on failure) -> publish the final meta weights as a backbone artifact in the same format, so
``adapt_tenant`` / ``rec adapt --backbone`` use it unchanged.

Episodes are a function of (seed, epoch, meta step, slot) only, where slot = episode * world + rank,
including the dropout RNG: a run with W workers and E episodes each equals a run with 1 worker and
W*E episodes, which is how the tests check that deltas are really averaged across workers.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rec.config import PRIMARY_METRIC, MetaConfig, RecConfig
from rec.training.checkpoint import LoadedBackbone
from rec.training.corpus import Corpus, build_corpus
from rec.training.loop import CorpusLoss, train_epoch
from rec.training.scaffold import (
    Worker, evaluate_on_driver, flat_metrics, publish_backbone, restore_checkpoint, run_on_ray_train, setup_worker,
)

__all__ = ["MetaResult", "episode_plan", "meta_epoch", "meta_loop_per_worker", "meta_train", "reptile_step", "weights_digest"]


def _slot_seed(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


def episode_plan(corpus: Corpus, mcfg: MetaConfig, epoch: int, step: int, rank: int, world_size: int) -> list[tuple[int, np.ndarray]]:
    """This rank's episodes for one meta step: ``(tenant index, global training rows)`` each.

    Tenants go round-robin over a seeded per-step permutation of the source tenants, by slot
    ``e * world_size + rank``, so the ranks of one step cover different tenants; support users are
    sampled without replacement with a per-slot seed.
    """
    n_tenants = len(corpus.tenants)
    offsets = np.cumsum([0] + [len(t.train_inputs) for t in corpus.tenants])
    order = np.random.default_rng([mcfg.seed, epoch, step]).permutation(n_tenants)
    plan = []
    for e in range(mcfg.episodes_per_iteration):
        slot = e * world_size + rank
        t = int(order[slot % n_tenants])
        n_rows = len(corpus.tenants[t].train_inputs)
        rng = np.random.default_rng([mcfg.seed, epoch, step, slot])
        rows = rng.choice(n_rows, size=min(mcfg.support_users, n_rows), replace=False)
        plan.append((t, offsets[t] + np.sort(rows)))
    return plan


def _inner_optimizer(params: list[nn.Parameter], mcfg: MetaConfig) -> torch.optim.Optimizer:
    if mcfg.inner_optimizer == "sgd":
        return torch.optim.SGD(params, lr=mcfg.inner_lr)
    # beta1 = 0 as in the paper's inner loop: with few steps, momentum mostly carries the first step.
    return torch.optim.Adam(params, lr=mcfg.inner_lr, betas=(0.0, 0.999))


def reptile_step(
    loss_model: CorpusLoss,
    outer_opt: torch.optim.Optimizer,
    corpus: Corpus,
    text_embs: list[torch.Tensor | None],
    mcfg: MetaConfig,
    epoch: int,
    step: int,
    rank: int = 0,
    world_size: int = 1,
    grad_clip: float = 1.0,
) -> tuple[float, float]:
    """One meta step: adapt from ``theta`` on each episode, average the deltas, update ``theta``.

    Args:
        loss_model: ``CorpusLoss`` around the meta model (not DDP-wrapped: workers must not sync
            inner-loop gradients).
        outer_opt: Optimizer over the meta parameters; its ``lr`` is ``eps`` for this step.
        corpus: The source tenants.
        text_embs: Per-tenant item text embeddings ``(N_t, text_dim)``.
        mcfg: Episode settings.
        epoch, step: Position in the run (they seed the episodes).
        rank, world_size: This worker; with ``world_size > 1`` the deltas are all-reduced, so a
            process group must be initialised.
        grad_clip: Inner-loop gradient norm clip.

    Returns:
        Mean support loss before the first and before the last inner step over this rank's episodes.
    """
    params = [p for p in loss_model.parameters() if p.requires_grad]
    sizes = [p.numel() for p in params]
    theta = nn.utils.parameters_to_vector(params).detach().clone()  # (P,)
    delta = torch.zeros_like(theta)
    first, last = [], []
    plan = episode_plan(corpus, mcfg, epoch, step, rank, world_size)
    for e, (_, rows) in enumerate(plan):
        torch.manual_seed(_slot_seed(mcfg.seed, epoch, step, e * world_size + rank))  # dropout, per slot
        inner = _inner_optimizer(params, mcfg)
        for s in range(mcfg.inner_steps):
            # one inner step = one batch holding every support user
            loss = train_epoch(loss_model, inner, corpus, rows, text_embs, len(rows), grad_clip)
            if s == 0:
                first.append(loss)
        last.append(loss)
        with torch.no_grad():
            delta += nn.utils.parameters_to_vector(params) - theta
            # copy back in place: vector_to_parameters would make the parameters views of theta
            for p, t in zip(params, torch.split(theta, sizes)):
                p.copy_(t.view_as(p))
    if world_size > 1:
        import torch.distributed as dist

        dist.all_reduce(delta, op=dist.ReduceOp.SUM)
    delta /= world_size * len(plan)
    outer_opt.zero_grad(set_to_none=True)
    for p, g in zip(params, torch.split(delta, sizes)):
        p.grad = (-g).view_as(p).clone()  # SGD on -delta: theta + eps * delta
    outer_opt.step()
    return float(np.mean(first)), float(np.mean(last))


def _outer_lr(mcfg: MetaConfig, epoch: int, step: int) -> float:
    if not mcfg.anneal_outer_lr:
        return mcfg.outer_lr
    total = mcfg.outer_epochs * mcfg.meta_iterations
    return mcfg.outer_lr * (1.0 - (epoch * mcfg.meta_iterations + step) / total)


def meta_epoch(
    loss_model: CorpusLoss,
    outer_opt: torch.optim.Optimizer,
    corpus: Corpus,
    text_embs: list[torch.Tensor | None],
    mcfg: MetaConfig,
    epoch: int,
    rank: int = 0,
    world_size: int = 1,
    grad_clip: float = 1.0,
) -> tuple[float, float]:
    """``meta_iterations`` Reptile steps with the (annealed) outer step size.

    Returns:
        This rank's mean support loss before and after adaptation (before the last inner step).
    """
    first, last = [], []
    for step in range(mcfg.meta_iterations):
        for group in outer_opt.param_groups:
            group["lr"] = _outer_lr(mcfg, epoch, step)
        f, l_ = reptile_step(loss_model, outer_opt, corpus, text_embs, mcfg, epoch, step, rank, world_size, grad_clip)
        first.append(f)
        last.append(l_)
    return float(np.mean(first)), float(np.mean(last))


def weights_digest(model: nn.Module) -> str:
    """sha256 (16 hex) of the parameters' bytes: equal digests = bitwise identical weights."""
    h = hashlib.sha256()
    for p in model.parameters():
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def meta_loop_per_worker(loop_cfg: dict[str, Any]) -> None:
    """Ray Train worker entry: Reptile outer epochs, a checkpoint each, resume if restarted."""
    import ray
    import torch.distributed as dist

    from rec.models.backbone import build_backbone

    w = setup_worker(loop_cfg)
    mcfg, tc = w.cfg.meta, w.cfg.train
    torch.manual_seed(mcfg.seed)
    model = build_backbone(w.cfg.model, num_item_ids=loop_cfg["num_item_ids"])
    init = loop_cfg["init_weights"]
    if init is not None:
        model.load_state_dict(ray.get(init) if isinstance(init, ray.ObjectRef) else init)
    outer_opt = torch.optim.SGD(model.parameters(), lr=mcfg.outer_lr)
    state: dict[str, Any] = {"epoch": -1, "resumed_from": None, "history": [], "init_from": loop_cfg["init_from"]}
    restored = restore_checkpoint(model, outer_opt)
    if restored is not None:
        state = restored[1]
    model.to(w.device)
    if w.world > 1:  # one theta for all ranks, whatever each one loaded
        for t in model.state_dict().values():
            dist.broadcast(t, src=0)
    loss_model = CorpusLoss(model, w.cfg.model.loss, w.cfg.model.num_negatives)
    text_embs = w.text_embeddings()
    for epoch in range(state["epoch"] + 1, mcfg.outer_epochs):
        t0 = time.perf_counter()
        first, last = meta_epoch(loss_model, outer_opt, w.corpus, text_embs, mcfg, epoch, w.rank, w.world, tc.grad_clip)
        epoch_s = time.perf_counter() - t0
        # zero-shot quality of theta on the source tenants: a sanity signal, not a selection rule
        val = w.evaluate(model, w.corpus, text_embs)
        state["epoch"] = epoch
        metrics = {**_sync_report(w, model, first, last), "outer_lr_end": outer_opt.param_groups[0]["lr"], "epoch": epoch,
                   "epoch_s": epoch_s, "episodes": (epoch + 1) * mcfg.meta_iterations * mcfg.episodes_per_iteration * w.world,
                   "resumed_from": -1 if state["resumed_from"] is None else state["resumed_from"], **flat_metrics("val", val)}
        state["history"].append(metrics)
        weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        w.report(metrics, model, weights, outer_opt, state)


def _sync_report(w: Worker, model: nn.Module, first: float, last: float) -> dict[str, Any]:
    """Support losses averaged over ranks, and every rank's weight digest (equal: the ranks are in sync)."""
    digests, losses = [weights_digest(model)], [(first, last)]
    if w.world > 1:
        import torch.distributed as dist

        digests, losses = [None] * w.world, [None] * w.world
        dist.all_gather_object(digests, weights_digest(model))
        dist.all_gather_object(losses, (first, last))
    return {
        "support_loss_before": float(np.mean([f for f, _ in losses])),
        "support_loss_after": float(np.mean([a for _, a in losses])),
        "rank_weight_digests": ",".join(digests),
        "weights_in_sync": len(set(digests)) == 1,
    }


@dataclass
class MetaResult:
    checkpoint: Path  # the published meta-init backbone
    test_metrics: dict[str, dict[str, float]]  # zero-shot on the source tenants' test items
    history: list[dict[str, Any]] = field(default_factory=list)
    train_s: float = 0.0
    epochs: int = 0


def _run_cfg(cfg: RecConfig, init: LoadedBackbone | None) -> RecConfig:
    """The run's config: the backbone's model (and text encoder) when starting from one."""
    if init is None:
        return cfg
    if cfg.text.model != init.cfg.text.model:
        raise ValueError(
            f"text.model={cfg.text.model!r} differs from the backbone's {init.cfg.text.model!r}: "
            "the source tenants must be encoded by the backbone's text model"
        )
    tree = cfg.model_dump(mode="json")
    tree["model"] = init.cfg.model.model_dump(mode="json")
    return RecConfig.model_validate(tree)


def _check_init(init: LoadedBackbone, corpus: Corpus) -> None:
    if init.manifest.get("text_model") and corpus.text_model and init.manifest["text_model"] != corpus.text_model:
        raise ValueError("the corpus was encoded with another text model than the backbone's: rebuild it with the backbone's text config")
    if init.model.id_emb is not None:
        layout = {t.name: (t.id_offset, t.num_items) for t in corpus.tenants}
        theirs = {n: (t["id_offset"], t["num_items"]) for n, t in init.tenants.items()}
        if layout != theirs:
            raise ValueError(
                f"the backbone has item-ID embeddings for tenants {sorted(theirs)}; meta-train on exactly those "
                f"tenants (got {sorted(layout)}) or use a text-only backbone"
            )


def meta_train(cfg: RecConfig, corpus: Corpus | None = None, init: LoadedBackbone | None = None, progress: bool = False) -> MetaResult:
    """Reptile over ``cfg.data``'s tenants on Ray Train; publish ``<meta.output_dir>/checkpoint``.

    Ray must be initialised by the caller (see ``rec.ray_session.ray_session``). Workers, CPUs,
    failures tolerated, resume and placement come from ``cfg.train``; episodes from ``cfg.meta``.

    Args:
        cfg: Run config. With ``init`` its ``model`` section is replaced by the backbone's.
        corpus: The source tenants (built from ``cfg`` when None).
        init: Start from this pretrained backbone ("pretraining + Reptile"); None = from scratch.
        progress: Show progress bars while encoding item text.

    Returns:
        The published checkpoint, zero-shot test metrics of the meta weights on the source tenants,
        rank 0's per-epoch history, wall time and outer epochs run.

    Raises:
        ValueError: ``init`` was trained with another text model, or has ID embeddings for other
            tenants than ``cfg.data``'s.
        RuntimeError: The Ray Train run failed (after ``train.max_failures`` restarts).
    """
    import ray

    from rec.models.backbone import build_backbone

    cfg = _run_cfg(cfg, init)
    corpus = build_corpus(cfg, progress=progress) if corpus is None else corpus
    num_item_ids = corpus.num_item_ids
    if init is not None:
        _check_init(init, corpus)
        num_item_ids = int(init.manifest["num_item_ids"])
    out = Path(cfg.meta.output_dir).resolve()
    run = run_on_ray_train(
        meta_loop_per_worker, cfg, corpus, out, cfg.meta.run_name,
        num_item_ids=num_item_ids,
        init_weights=None if init is None else ray.put({k: v.detach().clone() for k, v in init.model.state_dict().items()}),
        init_from=None if init is None else init.checksum,
    )
    state = run.state
    model = build_backbone(cfg.model, num_item_ids=num_item_ids)
    model.load_state_dict(run.weights)
    model.eval()
    test = evaluate_on_driver(model, corpus, cfg, "test")
    history = state["history"]
    meta = {
        **cfg.meta.model_dump(mode="json"),
        "init_from": state.get("init_from"),
        "num_workers": cfg.train.num_workers,
        "source_tenants": [t.name for t in corpus.tenants],
    }
    ckpt = publish_backbone(
        out / "checkpoint", run.weights, cfg, corpus, run, cfg.meta.run_name,
        metrics={"test": test, f"final_val_{PRIMARY_METRIC}": history[-1][f"val_{PRIMARY_METRIC}"]},
        protocol="zero-shot on the source tenants: leave-one-out, full ranking over each tenant's catalog",
        extra={"meta": meta},
        # same layout (checked); keep the backbone's record
        tenants=init.tenants if init is not None and init.model.id_emb is not None else None,
    )
    return MetaResult(ckpt, test, history, run.train_s, run.epochs_run)
