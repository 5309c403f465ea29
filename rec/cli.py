"""The ``rec`` command line. The only module that reads argv or sets process environment.

Every subcommand reads an optional YAML config (``--config``) plus dotted ``key.sub=value``
overrides, and exits non-zero with one line saying what was wrong and how to fix it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

EXIT_USAGE = 2


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", help="YAML config file (default: built-in defaults)")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="dotted config overrides, e.g. train.epochs=3")


def _load(args: argparse.Namespace, extra: list[str] | None = None):  # noqa: ANN202
    from rec.config import load_config

    return load_config(args.config, list(extra or []) + list(args.overrides))


def _print_metrics(title: str, metrics: dict[str, dict[str, float]]) -> None:
    from rich.console import Console
    from rich.table import Table

    keys = [k for k in next(iter(metrics.values())).keys()]
    keys = [k for k in keys if k.split("@")[0] in ("hr", "ndcg", "mrr") and k.split("@")[1] in ("10", "20")]
    table = Table(title=title)
    table.add_column("tenant")
    for k in keys:
        table.add_column(k, justify="right")
    for tenant, m in metrics.items():
        table.add_row(tenant, *(f"{m[k]:.4f}" for k in keys), style="bold" if tenant == "all" else None)
    Console().print(table)


# --- subcommands --------------------------------------------------------------------------------
def cmd_pretrain(args: argparse.Namespace) -> int:
    extra = []
    if args.address:
        extra.append(f"ray.address={args.address}")
    if args.workers:
        extra.append(f"train.num_workers={args.workers}")
    if args.output_dir:
        extra.append(f"train.output_dir={args.output_dir}")
    cfg = _load(args, extra)
    from rec.ray_session import ray_session
    from rec.training.ray_train import pretrain

    with ray_session(cfg.ray):
        res = pretrain(cfg, progress=True)
    _print_metrics(f"test metrics (leave-one-out, full ranking) after {res.epochs} epochs, {res.train_s:.1f} s", res.test_metrics)
    print(f"checkpoint: {res.checkpoint}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from rec.training.checkpoint import load_backbone
    from rec.training.evaluate_checkpoint import evaluate_checkpoint

    loaded = load_backbone(args.checkpoint)
    cfg = _load(args) if (args.config or args.overrides) else loaded.cfg
    metrics = evaluate_checkpoint(loaded, cfg, split=args.split, progress=True)
    _print_metrics(f"{args.split} metrics of {args.checkpoint}", metrics)
    if args.json:
        print(json.dumps(metrics, indent=2))
    return 0


def _pick_tenant(cfg, name: str | None):  # noqa: ANN001, ANN202
    from rec.training.corpus import load_tenants

    tenants = load_tenants(cfg.data)
    if name is None:
        return tenants[-1]
    for t in tenants:
        if t.name == name:
            return t
    raise CliError(f"tenant {name!r} is not in the configured data; available: {[t.name for t in tenants]}")


def cmd_adapt(args: argparse.Namespace) -> int:
    extra = []
    for flag, key in ((args.method, "adapt.method"), (args.k_users, "adapt.k_users"), (args.out, "adapt.output_root"), (args.tenant, "adapt.tenant")):
        if flag is not None:
            extra.append(f"{key}={flag}")
    cfg = _load(args, extra)
    from rec.adaptation.adapt import adapt_tenant, publish_adapter
    from rec.training.checkpoint import load_backbone

    base = load_backbone(args.backbone)
    tenant = _pick_tenant(cfg, cfg.adapt.tenant)
    print(f"adapting {tenant.name!r} ({tenant.num_users} users, {tenant.num_items} items) with {cfg.adapt.method}, K={cfg.adapt.k_users}")
    res = adapt_tenant(base, tenant, cfg.adapt, cfg.eval)
    path = publish_adapter(res, base, cfg.adapt)
    _print_metrics(
        f"{res.method} on {res.tenant}: {res.epochs} epochs, {res.adapt_s:.1f} s, {res.trainable_params} trainable params",
        {"valid": res.valid, "test": res.test},
    )
    print(f"adapter: {path}")
    return 0


def cmd_data_stats(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from rec.training.corpus import load_tenants

    cfg = _load(args)
    table = Table(title="tenants")
    for col in ("tenant", "users", "items", "interactions", "avg_len", "items_with_text", "source"):
        table.add_column(col)
    for t in load_tenants(cfg.data):
        s = t.stats()
        table.add_row(t.name, str(s["users"]), str(s["items"]), str(s["interactions"]), f"{s['avg_len']:.1f}", str(s["items_with_text"]), t.source)
    Console().print(table)
    return 0


def cmd_data_generate(args: argparse.Namespace) -> int:
    from rec.data.export_csv import write_generic
    from rec.training.corpus import load_tenants

    cfg = _load(args)
    if cfg.data.sources:
        raise CliError("data generate writes the synthetic default: remove data.sources from the config")
    for t in load_tenants(cfg.data):
        inter, items = write_generic(t, Path(args.out) / t.name)
        print(f"{t.name}: {inter} {items}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rec", description="fewshot-rec: pretrain, adapt, export and serve text-based recommenders on Ray.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("pretrain", help="pretrain the backbone with Ray Train (DDP) and publish a checkpoint")
    _common(p)
    p.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    p.add_argument("--workers", type=int, help="Ray Train workers (train.num_workers)")
    p.add_argument("--output-dir", help="where the checkpoint goes (train.output_dir)")
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("evaluate", help="full-ranking evaluation of a checkpoint (zero-shot on tenants it never saw)")
    _common(p)
    p.add_argument("--checkpoint", required=True, help="backbone folder printed by `rec pretrain`")
    p.add_argument("--split", choices=["valid", "test"], default="test")
    p.add_argument("--json", action="store_true", help="also print the metrics as JSON")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("adapt", help="adapt a pretrained backbone to one tenant from K users; writes a versioned adapter")
    _common(p)
    p.add_argument("--backbone", required=True, help="backbone folder printed by `rec pretrain`")
    p.add_argument("--tenant", help="tenant id among the configured data's tenants (adapt.tenant)")
    p.add_argument("--method", choices=["zero-shot", "head", "prompt", "lora", "full"], help="adapt.method")
    p.add_argument("--k-users", help="training users, or 'null' for all (adapt.k_users)")
    p.add_argument("--out", help="adapter root (adapt.output_root); writes <out>/<tenant>/v<N>")
    p.set_defaults(func=cmd_adapt)

    data = sub.add_parser("data", help="inspect or generate datasets")
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION")
    p = dsub.add_parser("stats", help="load the configured tenants and print their sizes")
    _common(p)
    p.set_defaults(func=cmd_data_stats)
    p = dsub.add_parser("generate", help="write the synthetic default tenants as generic CSV files")
    _common(p)
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=cmd_data_generate)
    data.set_defaults(func=lambda a: (data.print_help(), EXIT_USAGE)[1])
    return parser


def _one_line(e: BaseException) -> str:
    msg = " ".join(str(e).split())
    return msg if len(msg) < 600 else msg[:597] + "..."


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    # Overrides may come before or after options (`rec adapt k=v --method lora k2=v2`).
    args, rest = parser.parse_known_args(argv)
    unknown = [r for r in rest if r.startswith("-") or "=" not in r]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if rest:
        args.overrides = list(getattr(args, "overrides", [])) + rest
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return EXIT_USAGE
    from rec.config import ConfigError
    from rec.data.schema import DataError
    from rec.io.artifacts import ArtifactError

    try:
        return func(args)
    except (CliError, ConfigError, DataError, ArtifactError, FileNotFoundError, ValueError) as e:
        print(f"rec {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"rec {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
