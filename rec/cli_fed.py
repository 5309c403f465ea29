"""The ``rec fed`` command: federated adaptation of one tenant's adapter (docs/federated.md).

Split from :mod:`rec.cli` (one concept per module); it shares its config helpers and one-line
error handling. It is a Ray job entrypoint as it is::

    ray job submit --working-dir . -- rec fed --address auto --backbone runs/x/checkpoint --tenant shop
"""

from __future__ import annotations

import argparse
import json
import shlex

from rec.cli import _adapt_args, _adapt_flag_overrides, _backbone_cfg, _common, _flag_overrides, _pick_tenant, _print_metrics

__all__ = ["add_fed_commands", "cmd_fed", "fed_entrypoint"]


def fed_entrypoint(backbone: str, tenant: str, config: str | None = None, overrides: list[str] | None = None) -> str:
    """The shell command a ``ray job submit`` of a federated run executes (on the cluster it was submitted to)."""
    argv = ["rec", "fed", "--address", "auto", "--backbone", str(backbone), "--tenant", tenant]
    if config:
        argv += ["--config", str(config)]
    return shlex.join([*argv, *(overrides or [])])


def _progress(rounds: int):  # noqa: ANN202 - (rich Progress, on_round callback)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("[bold]fed[/] round"), MofNCompleteColumn(), BarColumn(), TextColumn("{task.fields[status]}"),
                   TimeElapsedColumn())
    task = bar.add_task("rounds", total=rounds, status="")

    def on_round(server_round: int, metrics, log) -> None:  # noqa: ANN001 - dict | None, RoundLog | None
        parts = []
        if metrics is not None:
            parts.append(f"val ndcg@10 {metrics['ndcg@10']:.4f}")
        if log is not None:
            parts.append(f"{log.replies}/{log.sampled} clients" + (f", {log.failed} failed" if log.failed else "")
                         + (f", {log.rejected} rejected" if log.rejected else ""))
        bar.update(task, completed=server_round, status=", ".join(parts))

    return bar, on_round


def cmd_fed(args: argparse.Namespace) -> int:
    from rec.federated import check_fed_config, federated_adapt, publish_federated
    from rec.training.checkpoint import load_backbone

    extra = _adapt_flag_overrides(args) + _flag_overrides((args.address, "ray.address"), (args.rounds, "fed.rounds"))
    base = load_backbone(args.backbone)
    cfg = _backbone_cfg(args, base, extra)
    check_fed_config(cfg.adapt, cfg.fed)  # refuse before any data loads
    tenant = _pick_tenant(cfg, cfg.adapt.tenant)
    print(f"federated {cfg.adapt.method} for {tenant.name!r}: {cfg.fed.client_mode} clients from K={cfg.adapt.k_users}, "
          f"{cfg.fed.strategy}, {cfg.fed.rounds} rounds, client DP {cfg.fed.client_dp}" + (", SecAgg+" if cfg.fed.secagg else ""))
    bar, on_round = _progress(cfg.fed.rounds)
    with bar:
        res = federated_adapt(base, tenant, cfg.adapt, cfg.fed, cfg.eval, cfg.ray, on_round=on_round, verbose=args.verbose)
    path = publish_federated(res, base, cfg.adapt, cfg.fed)
    title = (f"{res.adapt.method} on {res.adapt.tenant}: {cfg.fed.rounds} rounds of {res.clients_per_round}/{res.num_clients} "
             f"clients, {res.adapt.adapt_s:.1f} s, upload {res.adapter_bytes} B per client per round")
    _print_metrics(title, {"valid": res.adapt.valid, "test": res.adapt.test})
    if res.privacy is not None:
        print(f"client-level DP: epsilon {res.privacy.epsilon:.3f} at delta {res.privacy.delta:.2e} "
              f"(noise multiplier {res.privacy.noise_multiplier:.3f}, {res.privacy.accountant})")
    print(f"adapter: {path}")
    record = {"adapter": str(path), "valid": res.adapt.valid, "test": res.adapt.test, **res.manifest_block(cfg.fed)}
    if args.json:
        print(json.dumps(record, indent=2, default=str))
    if args.record:
        from rec.io.artifacts import atomic_write_json

        atomic_write_json(args.record, json.loads(json.dumps(record, default=str)))
    return 0


def add_fed_commands(sub: argparse._SubParsersAction) -> None:
    """fed: federated adaptation (Flower on Ray)."""
    p = sub.add_parser("fed", help="federated adaptation of a tenant's adapter (Flower on Ray): only adapter tensors leave the clients")
    _common(p)
    _adapt_args(p, "users that become clients", "backbone folder printed by `rec pretrain` (its config is the default config)")
    p.add_argument("--rounds", type=int, help="federated rounds (fed.rounds)")
    p.add_argument("--address", help="Ray cluster address, e.g. auto inside `ray job submit` (ray.address; default: a local Ray)")
    p.add_argument("--verbose", action="store_true", help="show Flower's and the client actors' logs")
    p.add_argument("--json", action="store_true", help="also print the round history and privacy record as JSON")
    p.add_argument("--record", help="also write that JSON record to this file (what a Tune trial reads)")
    p.set_defaults(func=cmd_fed)
