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

from rec.io.formats import CATALOG_DTYPES

EXIT_USAGE = 2


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", help="YAML config file (default: built-in defaults)")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="dotted config overrides, e.g. train.epochs=3")


def _adapt_args(p: argparse.ArgumentParser, users: str, backbone_help: str = "backbone folder printed by `rec pretrain`") -> None:
    """The flags ``rec adapt`` and ``rec fed`` share (what is adapted, from whom, written where);
    :func:`_adapt_flag_overrides` turns them into ``adapt.*`` overrides."""
    from rec.adaptation.registry import method_names

    p.add_argument("--backbone", required=True, help=backbone_help)
    p.add_argument("--tenant", help="tenant id among the configured data's tenants (adapt.tenant)")
    p.add_argument("--method", choices=method_names(), help="adapt.method (a registered adaptation method)")
    p.add_argument("--k-users", help=f"{users}, or 'null' for all (adapt.k_users)")
    p.add_argument("--out", help="adapter root (adapt.output_root); writes <out>/<tenant>/v<N>")


def _adapt_flag_overrides(args: argparse.Namespace) -> list[str]:
    return _flag_overrides((args.method, "adapt.method"), (args.k_users, "adapt.k_users"), (args.out, "adapt.output_root"),
                           (args.tenant, "adapt.tenant"))


def _flag_overrides(*pairs: tuple[object, str]) -> list[str]:
    """``key=value`` overrides for the CLI flags that were given: ``(args.workers, "train.num_workers")``.

    Flags are shortcuts for config keys, so they go before the user's own dotted overrides (which win).
    """
    return [f"{key}={value}" for value, key in pairs if value is not None]


def _load(args: argparse.Namespace, extra: list[str] | None = None):  # noqa: ANN202
    from rec.config import DATA_ROOT_ENV, load_config

    return load_config(args.config, list(extra or []) + list(args.overrides), data_root=os.environ.get(DATA_ROOT_ENV))


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
    extra = _flag_overrides((args.address, "ray.address"), (args.workers, "train.num_workers"),
                            (args.output_dir, "train.output_dir"))
    cfg = _load(args, extra)
    from rec.ray_session import ray_session
    from rec.training.ray_train import pretrain

    with ray_session(cfg.ray):
        res = pretrain(cfg, progress=True)
    _print_metrics(f"test metrics (leave-one-out, full ranking) after {res.epochs} epochs, {res.train_s:.1f} s", res.test_metrics)
    if res.holdout_test is not None:
        chosen = "the untrained init" if res.best_epoch < 0 else f"epoch {res.best_epoch + 1}"
        _print_metrics(f"held-out tenants, zero-shot test metrics ({chosen}, selected on {cfg.train.select_on})", res.holdout_test)
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
    cfg = _load(args, _adapt_flag_overrides(args))
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


def cmd_meta(args: argparse.Namespace) -> int:
    extra = _flag_overrides((args.address, "ray.address"), (args.workers, "train.num_workers"), (args.output_dir, "meta.output_dir"))
    from rec.training.checkpoint import load_backbone

    base = load_backbone(args.backbone) if args.backbone else None
    cfg = _load(args, extra) if base is None else _backbone_cfg(args, base, extra)
    from rec.adaptation.meta import meta_train
    from rec.ray_session import ray_session

    with ray_session(cfg.ray):
        res = meta_train(cfg, init=base, progress=True)
    _print_metrics(f"zero-shot test metrics of the meta-init on the source tenants after {res.epochs} outer epochs, {res.train_s:.1f} s", res.test_metrics)
    print(f"checkpoint: {res.checkpoint}")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    extra = _flag_overrides((args.address, "ray.address"), (args.storage_path, "ray.storage_path"))
    from tuning.search_spaces import load_sweep
    from tuning.sweep import SweepInterrupted, run_sweep

    spec = load_sweep(args.sweep)
    # Without --config, the backbone's own config (data, text encoder) is the base of every trial.
    cfg = _backbone_cfg(args, args.backbone, extra)
    try:
        res = run_sweep(spec, cfg, args.backbone, verbose=args.verbose)
    except SweepInterrupted as e:
        raise CliError(str(e)) from None
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"best trial per (tenant, K) of {spec.name}: {len(res.rows)} trials, {res.wall_s:.1f} s" + (" (resumed)" if res.resumed else ""))
    for col in ("tenant", "K", "trial", "val ndcg@10", "test ndcg@10", "adapter"):
        table.add_column(col)
    for b in res.best:
        test = b.get("test", {}).get("ndcg@10")
        table.add_row(b["tenant"], b["k"], b["trial_id"], f"{b['val_ndcg@10']:.4f}", "" if test is None else f"{test:.4f}", b.get("adapter", ""))
    Console().print(table)
    print(f"results: {res.csv_path} {res.md_path}")
    if res.missing:
        print(f"rec tune: no successful trial for {', '.join(res.missing)} ({res.errors} errored trials; see {res.experiment_dir})", file=sys.stderr)
        return 1
    return 0


def _export_overrides(args: argparse.Namespace) -> list[str]:
    """The export flags a command has and was given, as ``export.*`` overrides."""
    get = lambda name: getattr(args, name, None)  # noqa: E731 - not every command has every flag
    return _flag_overrides(
        (True if get("int8") else None, "export.int8"),
        (get("catalog_dtype"), "export.catalog_dtype"),
        (get("opset"), "export.opset"),
        (False if get("no_real_data") else None, "export.real_data_parity"),
        (get("threads"), "export.threads"),
    )


def _backbone_cfg(args: argparse.Namespace, base, extra: list[str] | None = None):  # noqa: ANN001, ANN202
    """Config for commands on a backbone: --config if given, else the backbone's own config, + overrides.

    ``base``: a LoadedBackbone, or the checkpoint folder (loaded only when its config is needed).
    """
    if args.config:
        return _load(args, extra)
    from rec.config import DATA_ROOT_ENV, load_config
    from rec.training.checkpoint import load_backbone

    base = load_backbone(base) if isinstance(base, (str, Path)) else base
    return load_config(None, list(extra or []) + list(args.overrides), data_root=os.environ.get(DATA_ROOT_ENV),
                       base=base.cfg.model_dump(mode="json"))


def _tenant_text(base, tenant):  # noqa: ANN001, ANN202
    """The tenant's item-text embeddings, encoded (cached) with the backbone's text model."""
    from rec.data.schema import DataError
    from rec.text import encode_items

    if not tenant.items.has_text:
        raise DataError(f"tenant {tenant.name!r} has no item text, but its catalog matrix is built from item text: add titles")
    return encode_items(list(tenant.items.text), base.cfg.text)


def cmd_export(args: argparse.Namespace) -> int:
    import torch

    from rec.export.parity import parity_data_from_tenant
    from rec.export.serving_model import export_serving_model
    from rec.training.checkpoint import load_backbone

    base = load_backbone(args.backbone)
    ec = _backbone_cfg(args, base, _export_overrides(args)).export
    torch.set_num_threads(ec.threads)
    real = None
    if ec.real_data_parity:
        tenant = _pick_tenant(_backbone_cfg(args, base), args.tenant)
        real = parity_data_from_tenant(base, tenant, _tenant_text(base, tenant))
    path = export_serving_model(base, args.out, opset=ec.opset, quantize=ec.int8, real_data=real)
    from rec.io.artifacts import read_manifest

    m = read_manifest(path)
    fp = m["parity"]["fp32"]["random"]
    line = f"serving model: {path} (opset {m['opset']}, {m['sizes']['model.onnx']} bytes, fp32 max |diff| {fp['max_abs_diff_user']:.1e}"
    if ec.int8:
        q = m["parity"]["int8"]
        nd = q.get("real_ndcg@10", {}).get("delta")
        line += f"; int8 {m['sizes']['int8_ratio']:.0%} of fp32, top-10 overlap {q['random_vs_torch']['top10_overlap']:.3f}"
        line += "" if nd is None else f", NDCG@10 delta {nd:+.4f}"
    print(line + ")")
    return 0


def cmd_export_tenant(args: argparse.Namespace) -> int:
    import torch

    from rec.export.merged_model import export_merged_tenant_model
    from rec.export.tenant_bundle import export_tenant_bundle
    from rec.training.checkpoint import load_backbone

    base = load_backbone(args.backbone)
    cfg = _backbone_cfg(args, base, _export_overrides(args))
    ec = cfg.export
    torch.set_num_threads(ec.threads)
    tenant = _pick_tenant(cfg, args.tenant)
    emb = _tenant_text(base, tenant)
    if args.merged:
        path = export_merged_tenant_model(base, tenant, emb, args.adapter, args.out, opset=ec.opset, quantize=ec.int8)
        print(f"merged tenant model: {path}")
    else:
        if ec.int8:
            raise CliError("--int8 (export.int8) quantizes a merged model; for a bundle use --catalog-dtype int8")
        path = export_tenant_bundle(base, tenant, emb, args.adapter, args.out, catalog_dtype=ec.catalog_dtype)
        print(f"tenant bundle: {path}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    extra = _flag_overrides((args.out, "demo.output_dir"), (args.port, "demo.http_port"))
    if args.keep_serving:
        extra.append("demo.keep_serving=true")
    cfg = _load(args, extra)
    from rec.demo import run_demo

    report = run_demo(cfg)
    if cfg.demo.keep_serving:
        import time

        print(f"serving at {report.url} (OpenAPI: {report.url}/docs); Ctrl-C to stop")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            from ray import serve

            serve.shutdown()
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


def cmd_publish(args: argparse.Namespace) -> int:
    from rec.export.publish import ensure_serving_model, publish_tenant
    from rec.training.checkpoint import load_backbone

    dirs = [o for o in args.overrides if "=" not in o]
    if len(dirs) > 1:
        raise CliError(f"expected at most one ADAPTER_DIR, got {dirs}; overrides look like key.sub=value")
    args.overrides = [o for o in args.overrides if "=" in o]
    adapter_dir = dirs[0] if dirs else None
    loaded = load_backbone(args.backbone)
    cfg = _backbone_cfg(args, loaded, _export_overrides(args))
    tenant = _pick_tenant(cfg, args.tenant)
    ensure_serving_model(args.root, loaded, quantize=cfg.export.int8)
    text_emb = _tenant_text(loaded, tenant)
    res = publish_tenant(args.root, loaded, tenant, text_emb, adapter_dir, catalog_dtype=cfg.export.catalog_dtype)
    was = "new tenant" if res.previous is None else f"was v{res.previous}"
    print(f"published {res.tenant} v{res.version} ({res.method}, {was}): {res.path}")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from rec.export.publish import rollback_tenant

    res = rollback_tenant(args.root, args.tenant, args.to)
    print(f"{res.tenant}: v{res.previous} -> v{res.version} ({res.method})")
    return 0


def cmd_apikey(args: argparse.Namespace) -> int:
    from rec.serving.auth import create_api_key, revoke_api_keys
    from rec.serving.store import ArtifactRoot

    store = ArtifactRoot(args.root)
    if store.current_version(args.tenant) is None:
        raise CliError(f"tenant {args.tenant!r} is not published under {args.root}: run `rec publish` first")
    if args.revoke:
        print(f"{args.tenant}: revoked {revoke_api_keys(store.keys_path(args.tenant))} key(s)")
        return 0
    print(create_api_key(store.keys_path(args.tenant)))
    return 0


def _add_training_commands(sub: argparse._SubParsersAction) -> None:
    """pretrain, evaluate, adapt, meta, tune."""
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
    _adapt_args(p, "training users")
    p.set_defaults(func=cmd_adapt)

    p = sub.add_parser("meta", help="meta-learn an initialization with Reptile on Ray Train; publishes a backbone for `rec adapt`")
    _common(p)
    init = p.add_mutually_exclusive_group(required=True)
    init.add_argument("--backbone", help="start from this pretrained backbone (its config is the default config)")
    init.add_argument("--from-scratch", action="store_true", help="start from a random initialization instead")
    p.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    p.add_argument("--workers", type=int, help="Ray Train workers (train.num_workers)")
    p.add_argument("--output-dir", help="where the meta-init checkpoint goes (meta.output_dir)")
    p.set_defaults(func=cmd_meta)

    p = sub.add_parser("tune", help="Ray Tune sweep of adaptation hyper-parameters per (tenant, K); publishes each best adapter")
    _common(p)
    p.add_argument("--backbone", required=True, help="backbone folder (its config is the default base config)")
    p.add_argument("--sweep", required=True, help="sweep YAML, e.g. tuning/configs/quick.yaml (see docs/tuning.md)")
    p.add_argument("--address", help="Ray cluster address, e.g. auto inside `ray job submit` (ray.address)")
    p.add_argument("--storage-path", help="Tune storage root (ray.storage_path, default runs/tune); re-running resumes")
    p.add_argument("--verbose", type=int, default=1, choices=[0, 1, 2], help="Tune console verbosity")
    p.set_defaults(func=cmd_tune)


def _add_serving_commands(sub: argparse._SubParsersAction) -> None:
    """publish, rollback, apikey: a serving artifact root."""
    p = sub.add_parser("publish", help="publish a tenant version (zero-shot catalog or adapter) to a serving artifact root; replicas pick it up live")
    p.add_argument("--config", "-c", help="YAML config whose data holds the tenant (default: the backbone's config)")
    p.add_argument("overrides", nargs="*", metavar="[ADAPTER_DIR] key.sub=value",
                   help="adapter version folder from `rec adapt` (omit to onboard the tenant zero-shot), then dotted config overrides")
    p.add_argument("--root", required=True, help="serving artifact root (the Serve app's artifact_root)")
    p.add_argument("--backbone", required=True, help="backbone folder; its serving model is exported to <root>/model once")
    p.add_argument("--tenant", required=True, help="tenant id among the configured data's tenants (its catalog is published)")
    p.add_argument("--catalog-dtype", choices=CATALOG_DTYPES, help="storage of the catalog matrix (export.catalog_dtype, default fp32)")
    p.add_argument("--int8", action="store_true", help="also export the int8 model when <root>/model is created (export.int8)")
    p.set_defaults(func=cmd_publish)

    p = sub.add_parser("rollback", help="point a tenant back at an older published version (atomic; replicas follow live)")
    p.add_argument("--root", required=True, help="serving artifact root")
    p.add_argument("--tenant", required=True, help="tenant id")
    p.add_argument("--to", type=int, help="version number N of v<N> (default: the one before the current)")
    p.set_defaults(func=cmd_rollback)

    p = sub.add_parser("apikey", help="create (prints once) or revoke a tenant's API keys; stored as scrypt hashes")
    p.add_argument("--root", required=True, help="serving artifact root")
    p.add_argument("--tenant", required=True, help="tenant id")
    p.add_argument("--revoke", action="store_true", help="remove all of the tenant's keys instead")
    p.set_defaults(func=cmd_apikey)


def _add_export_commands(sub: argparse._SubParsersAction) -> None:
    """export (the shared model), export-tenant (a bundle or a merged model)."""
    p = sub.add_parser("export", help="export the shared multi-tenant ONNX serving model (dynamo exporter, verified, optional int8)")
    _common(p)
    p.add_argument("--backbone", required=True, help="backbone folder printed by `rec pretrain`")
    p.add_argument("--out", required=True, help="output folder (replaced atomically)")
    p.add_argument("--int8", action="store_true", help="also write model.int8.onnx (ORT dynamic quantization; export.int8)")
    p.add_argument("--opset", type=int, help="ONNX opset (export.opset; default: the exporter's)")
    p.add_argument("--tenant", help="tenant of the config's data used for real-data parity (default: the last one)")
    p.add_argument("--no-real-data", action="store_true", help="check parity on random inputs only, no data loading (export.real_data_parity=false)")
    p.add_argument("--threads", type=int, help="torch threads (export.threads, default 1)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("export-tenant", help="export one tenant: catalog + adapter bundle for the shared model, or a merged model")
    _common(p)
    p.add_argument("--backbone", required=True, help="backbone folder the serving model was exported from")
    p.add_argument("--tenant", help="tenant id among the configured data's tenants (default: the last one)")
    p.add_argument("--adapter", help="adapter version folder from `rec adapt` (default: zero-shot)")
    p.add_argument("--out", required=True, help="output folder (replaced atomically)")
    p.add_argument("--catalog-dtype", choices=CATALOG_DTYPES, help="storage of the catalog matrix (export.catalog_dtype, default fp32)")
    p.add_argument("--merged", action="store_true", help="write the classic self-contained per-tenant ONNX model instead")
    p.add_argument("--int8", action="store_true", help="with --merged: also write model.int8.onnx (export.int8)")
    p.add_argument("--opset", type=int, help="with --merged: ONNX opset (export.opset)")
    p.add_argument("--threads", type=int, help="torch threads (export.threads, default 1)")
    p.set_defaults(func=cmd_export_tenant)


def _add_other_commands(sub: argparse._SubParsersAction) -> None:
    """demo, data stats/generate."""
    p = sub.add_parser("demo", help="the whole story on the synthetic default: pretrain, tune 3 tenants, int8 ONNX, serve, onboard a tenant")
    _common(p)
    p.add_argument("--out", help="report and artifacts folder (demo.output_dir, replaced)")
    p.add_argument("--port", type=int, help="HTTP port of the local Serve endpoint (demo.http_port)")
    p.add_argument("--keep-serving", action="store_true", help="leave the endpoint up after the report")
    p.set_defaults(func=cmd_demo)

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rec", description="fewshot-rec: pretrain, adapt, export and serve text-based recommenders on Ray.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    from rec.cli_fed import add_fed_commands  # here: these import this module's helpers
    from rec.cli_feedback import add_feedback_commands

    for add in (_add_training_commands, add_fed_commands, _add_serving_commands, add_feedback_commands, _add_export_commands,
                _add_other_commands):
        add(sub)
    return parser


def _one_line(e: BaseException) -> str:
    msg = " ".join(str(e).split())
    return msg if len(msg) < 600 else msg[:597] + "..."


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see rec.ray_session.LOCAL_RUNTIME_ENV
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
