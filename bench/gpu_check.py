"""The training worker's GPU path without Ray (issue 16 §3): nccl process group, the DDP wrap that
``ray.train.torch.prepare_model`` applies, the epoch loop, sharded evaluation, a checkpoint written
from the GPU rank and read back.

A GPU machine may have torch and no Ray: this runs the per-worker steps of
``rec.training.ray_train.train_loop_per_worker`` (build the backbone, fused AdamW, DDP-wrapped
``CorpusLoss``, ``shard_rows`` + ``train_epoch``, ``evaluate_corpus`` sharded by rank,
``save_train_state`` from rank 0) under plain ``torch.distributed``: nccl when torch sees a GPU,
gloo otherwise (the CPU fallback runs in CI: tests/bench/test_gpu_check.py). World size 1 by
default; ``torchrun --nproc-per-node N bench/gpu_check.py`` runs N ranks.

Usage::

    bench/gpu_check.sh                                  # this + the CUDA tests, < 8 min
    python bench/gpu_check.py --dataset scientific --epochs 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: see bench/backbone.py

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from rec.config import RecConfig, TenantSource, load_config  # noqa: E402
from rec.training.corpus import Corpus, build_corpus  # noqa: E402

SOURCES = {
    "ml-100k": ("movielens-100k", "ml-100k"),
    "scientific": ("unisrec", "amazon-scientific-unisrec"),
    "ml-1m": ("movielens-1m-tsv", "ml-1m"),
}


def run_worker(cfg: RecConfig, corpus: Corpus, out: Path) -> dict[str, Any]:
    """This rank's training run; the process group is initialised. Returns rank 0's summary."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from rec.models.backbone import build_backbone
    from rec.training.batches import shard_rows
    from rec.training.checkpoint import load_train_state, save_train_state
    from rec.training.loop import CorpusLoss, evaluate_corpus, make_optimizer, train_epoch

    rank, world = dist.get_rank(), dist.get_world_size()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    tc = cfg.train
    torch.manual_seed(tc.seed)
    model = build_backbone(cfg.model, num_item_ids=corpus.num_item_ids)
    optimizer = make_optimizer(model.parameters(), tc.lr, tc.weight_decay)
    # What prepare_model does: weights to this rank's device, then DDP (device_ids only on a GPU).
    model.to(device)
    loss_model = DistributedDataParallel(CorpusLoss(model, cfg.model.loss, cfg.model.num_negatives),
                                         device_ids=[device.index] if cuda else None)
    embs = [None if t.text_emb is None else torch.tensor(t.text_emb, device=device) for t in corpus.tenants]
    history, best, best_weights = [], -1.0, None
    for epoch in range(tc.epochs):
        t0 = time.perf_counter()
        rows = shard_rows(corpus.num_train_rows, epoch, tc.seed, rank, world)
        loss = train_epoch(loss_model, optimizer, corpus, rows, embs, tc.batch_size, tc.grad_clip)
        train_s = time.perf_counter() - t0
        val = evaluate_corpus(model, corpus, embs, "valid", cfg.eval.ks, cfg.eval.batch_size, cfg.eval.exclude_history, rank, world)
        if val["all"]["ndcg@10"] > best:
            best, best_weights = val["all"]["ndcg@10"], {k: v.detach().clone() for k, v in model.state_dict().items()}
        history.append({"epoch": epoch, "train_loss": loss, "train_s": round(train_s, 2), **{f"val_{k}": v for k, v in val["all"].items()}})
        if rank == 0:
            print(f"epoch {epoch + 1}/{tc.epochs} loss {loss:.4f} val ndcg@10 {val['all']['ndcg@10']:.4f} auc "
                  f"{val['all']['auc']:.4f} {train_s:.1f}s on {device}", flush=True)
            # The checkpoint of the GPU rank: the weights and the optimizer state live on the device.
            save_train_state(out / "state", model, best_weights, optimizer, {"epoch": epoch, "history": history})
        dist.barrier()
    checks = {"on_device": all(p.device == device for p in model.parameters()),
              "loss_fell": history[-1]["train_loss"] < history[0]["train_loss"],
              "beats_random": history[-1]["val_auc"] > 0.5}
    if rank == 0:
        weights, best_back, opt_state, _ = load_train_state(out / "state")
        checks["checkpoint_round_trip"] = all(torch.equal(weights[k], v.detach().cpu()) for k, v in model.state_dict().items()) and \
            all(torch.equal(best_back[k], v.cpu()) for k, v in best_weights.items()) and len(opt_state["state"]) > 0
    return {"backend": dist.get_backend(), "device": str(device), "world_size": world, "history": history, "checks": checks}


def config_for(args: argparse.Namespace) -> RecConfig:
    return load_config(None, [
        "model.use_text=false", "model.use_id_embedding=true", f"train.epochs={args.epochs}", "train.max_eval_users=2000",
        f"train.torch_threads={args.threads}", "eval.ks=[10,20]", f"train.output_dir={args.out}",
    ] + args.overrides)


def main(argv: list[str] | None = None) -> int:
    import torch.distributed as dist

    from rec.data.loaders import load_source

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", choices=list(SOURCES), default="scientific")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--max-users", type=int, default=None, help="a seeded user sample (CI)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data-dir", type=Path, default=None,
                   help="data root (default: $REC_DATA_ROOT, else ../shared/datasets beside the repo)")
    p.add_argument("--out", type=Path, default=None, help="checkpoint folder (default: a temporary one)")
    p.add_argument("overrides", nargs="*", help="dotted RecConfig overrides, e.g. model.d_model=128")
    args = p.parse_args(argv)
    from rec.data.paths import data_root
    from rec.data.schema import DataError

    try:
        args.data_dir = data_root(args.data_dir, os.environ.get("REC_DATA_ROOT"))
    except DataError as e:
        print(f"error: {e} (or pass --data-dir)", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        args.out = args.out or Path(tmp)
        cfg = config_for(args)
        fmt, folder = SOURCES[args.dataset]
        tenant = load_source(TenantSource(format=fmt, path=str(args.data_dir / folder), name=args.dataset,
                                          max_users=args.max_users), min_seq_len=3)
        corpus = build_corpus(cfg, tenants=[tenant])
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")  # world size 1 without torchrun
        os.environ.setdefault("MASTER_PORT", str(29500 + os.getpid() % 1000))
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend, rank=int(os.environ.get("RANK", 0)), world_size=int(os.environ.get("WORLD_SIZE", 1)))
        try:
            summary = run_worker(cfg, corpus, args.out)
        finally:
            dist.destroy_process_group()
    if int(os.environ.get("RANK", 0)) == 0:
        print(json.dumps(summary, indent=1), flush=True)
    failed = [k for k, ok in summary["checks"].items() if not ok]
    if failed:
        print(f"GPU path check FAILED: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
