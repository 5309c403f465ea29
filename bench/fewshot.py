"""Few-shot benchmark: adapt one text-only backbone to unseen tenants from K of their users.

One backbone (MiniLM item text -> adaptor -> SASRec transformer, no item IDs, so it can score any
catalog) is pretrained with Ray Train on the source tenants. For every target tenant, seed and K,
each method trains on K users and is tested with full ranking on the same held-out users:

    popularity         item counts over the K users' sequences (K=0: a uniform ranking, exact expectation)
    zero-shot          the pretrained backbone, nothing trained (reported at K=0)
    scratch-sasrec-id  ID-only SASRec (the Backbone with use_text=false + item IDs) trained from scratch
    scratch-backbone   our text backbone, randomly initialised, trained from scratch
    head/prompt/lora/full   rec.adaptation methods on the pretrained backbone
    (lora = LoRA on the encoder + the item-text adaptor trained in full: adapt.lora.train_adaptor, the default)
    lora-lowrank-adaptor  LoRA on the encoder and a LoRA update of the adaptor (train_adaptor=false: the old default)
    lora-meta          LoRA on the Reptile meta-init (rec.adaptation.meta, from the pretrained backbone)
    lora-tuned         LoRA with the hyper-parameters of an Optuna+ASHA Ray Tune sweep (tuning.sweep)

Incremental: the backbone, meta-init and sweeps are cached under ``runs_dir``; every finished
(dataset, method, k, seed) row is appended to ``bench/results/<name>_progress.jsonl`` and skipped on
re-run; results (JSON, markdown, PNG) are rebuilt from that file. Protocol: bench/README.md.

Usage::

    python bench/fewshot.py --quick                                  # pipeline check, a few minutes
    nohup python bench/fewshot.py --seeds 0 > "${TMPDIR:-.}/bench_fewshot.log" 2>&1 &   # the real run
    python bench/fewshot.py --targets office toy --seeds 0 --ks 16 64 --methods lora full
    python bench/fewshot.py --report-only                            # rebuild results from progress
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: make `bench`, `rec` and `tuning` importable

from bench._results import RESULTS, log, write_results  # noqa: E402
from bench.fewshot_config import (  # noqa: E402
    ADAPTED, BACKBONE_OPTIONS, METHODS, ROW_KEYS, SCRATCH, TEXT_PRIOR, ZERO_SHOT, BenchConfig, KValue, k_users, load_bench_config, portable_source, rec_config, with_data_root,
)
from bench.fewshot_progress import append_progress, final_rows, read_progress, row_key, settings_hash  # noqa: E402
from bench.fewshot_methods import TEXT_PRIOR_WEIGHTS, popularity, state_bytes, text_prior_fusion, train_from_scratch  # noqa: E402
from bench.fewshot_report import FIXED_INIT_REFERENCE, PROTOCOL, cost_table, previous_protocol, without_data_root, k_order, pivot_tables, plot, target_checks, transfer_checks  # noqa: E402
from rec.config import DATA_ROOT_ENV, AdaptConfig, EvalConfig, RayConfig, RecConfig, TenantSource  # noqa: E402
from rec.data.schema import ItemTable, Tenant  # noqa: E402
from rec.metrics import uniform_metrics  # noqa: E402

# --- data ----------------------------------------------------------------------------------------
def compact_catalog(t: Tenant) -> Tenant:
    """Keep only items some user interacted with (pretraining sources only: less text to encode,
    smaller softmax). Targets keep their whole catalog: evaluation ranks every item."""
    used = np.unique(t.item_index)
    remap = np.full(t.num_items, -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    items = ItemTable(t.items.ids[used], [t.items.text[i] for i in used])
    return Tenant(t.name, items, t.users, t.offsets, remap[t.item_index], t.timestamps, t.source)


@dataclass
class TargetData:
    name: str
    src: TenantSource
    tenant: Tenant
    text_emb: np.ndarray  # (N, text_dim)


#: AdaptConfig fields added after rows were recorded -> the value that behaves as before they existed
ADDED_NEUTRAL = {("lora", "train_adaptor"): False, ("lora", "kind"): "lora", ("lora", "adalora_init_rank"): 12,
                 ("lora", "adalora_warmup"): 0.1, ("lora", "adalora_final"): 0.3, ("lora", "adalora_orth_reg"): 0.5,
                 ("text_lora", "negatives"): "catalog"}
#: AdaptConfig fields that only LoRA methods read: left out of the other methods' settings
LORA_ONLY = (("lora", "train_adaptor"),)
#: method sections added after rows were recorded: in the settings of their own method's rows only
SECTION_OF = {"item_terms": "item-terms", "text_lora": "text-lora"}
#: rows recorded before a bench variant's overrides were part of its settings hash (they still are not)
UNHASHED_VARIANTS = ("lora-lowrank-adaptor",)


class Context:
    """Lazily built, cached artifacts shared by all rows: backbone, meta-init, targets, sweeps."""

    def __init__(self, bc: BenchConfig, runs: Path, quick: bool) -> None:
        self.bc, self.runs, self.quick = bc, runs, quick
        # backbone/, meta/ and tune/ depend on the pretraining settings: a changed setting gets a
        # fresh folder instead of silently reusing a backbone trained another way
        self.stage = runs / f"pretrain-{self.pretrain_key()}"
        self._base = self._meta = self._init = None
        self._options: dict[str, Any] = {}
        self._targets: dict[str, TargetData] = {}
        self._tenants: list[Tenant] | None = None
        self.tune_info: dict[str, dict] = {}

    def adapt_defaults(self, method: str = "lora") -> dict[str, Any]:
        """The resolved AdaptConfig ``method``'s rows start from (bench overrides on the library defaults).

        Fields added to AdaptConfig after rows were recorded are left out while they hold the value
        that reproduces the old behaviour (ADDED_NEUTRAL), and LoRA-only fields are left out of the
        other methods' settings (LORA_ONLY), so rows a change cannot affect stay current.
        """
        out = rec_config(self.bc.adapt).adapt.model_dump(mode="json")
        out["method"] = "lora"  # every row sets adapt.method itself; the value the rows were recorded with
        for (section, key), neutral in ADDED_NEUTRAL.items():
            if out[section].get(key) == neutral:
                del out[section][key]
        if not method.startswith("lora"):
            for section, key in LORA_ONLY:
                out[section].pop(key, None)
        registered = ADAPTED.get(method, (method, {}))[0]
        for section, owner in SECTION_OF.items():
            if registered != owner:
                out.pop(section, None)
        return out

    def variant(self, method: str) -> dict[str, Any]:
        """What a bench method's rows hash beyond adapt_defaults: its method, overrides, backbone options."""
        out: dict[str, Any] = {}
        if method in ADAPTED and method not in UNHASHED_VARIANTS and ADAPTED[method][1]:
            out = {"method": ADAPTED[method][0], "overrides": ADAPTED[method][1]}
        if method in BACKBONE_OPTIONS:
            out["backbone_options"] = BACKBONE_OPTIONS[method]
        return out

    def backbone_for(self, method: str):  # noqa: ANN201 - LoadedBackbone
        """The backbone a method's rows start from: the published one, the meta-init, the untrained
        init, or the published weights with other ``model.*`` options (BACKBONE_OPTIONS)."""
        from rec.models.backbone import build_backbone
        from rec.training.checkpoint import LoadedBackbone

        if method == "lora-meta":
            return self.meta()
        if method == "zero-shot-init":
            return self.init_backbone()
        base = self.backbone()
        over = BACKBONE_OPTIONS.get(method)
        if not over:
            return base
        key = json.dumps(over, sort_keys=True)
        if key not in self._options:
            cfg = rec_config(over, base.cfg.model_dump(mode="json"))
            model = build_backbone(cfg.model, num_item_ids=base.model.id_emb.num_embeddings if base.model.id_emb is not None else 0)
            missing, unexpected = model.load_state_dict(base.model.state_dict(), strict=False)
            if unexpected or set(missing) - {"logit_scale"}:
                raise ValueError(f"backbone options {over}: weights do not fit (missing {missing}, unexpected {unexpected})")
            self._options[key] = LoadedBackbone(model.eval(), cfg, base.tenants, base.manifest, f"{base.checksum}+{key}")
        return self._options[key]

    def adapt_key(self) -> str:
        """Hash of the LoRA defaults a sweep's trials start from."""
        return hashlib.sha256(json.dumps(self.adapt_defaults("lora"), sort_keys=True).encode()).hexdigest()[:8]

    def pretrain_key(self) -> str:
        """Hash of what the backbone depends on: sources, held-out tenants, pretraining overrides."""
        part = {"sources": [portable_source(s, self.bc.data_root) for s in self.source_specs()], "pretrain": self.bc.pretrain,
                "holdout": [portable_source(s, self.bc.data_root) for s in self.holdout_specs()], "quick": self.quick}
        return hashlib.sha256(json.dumps(part, sort_keys=True, default=str).encode()).hexdigest()[:10]

    # sources
    def holdout_specs(self) -> list[TenantSource]:
        """Held-out tenants that select the pretraining checkpoint (zero-shot), never trained on."""
        if not self.quick:
            return list(self.bc.holdout)
        return [s.model_copy(update={"max_users": self.bc.quick.source_max_users}) for s in self.bc.holdout]

    def source_specs(self) -> list[TenantSource]:
        if not self.quick:
            return list(self.bc.sources)
        q = self.bc.quick
        return [s.model_copy(update={"max_users": q.source_max_users}) for s in self.bc.sources if s.name in q.sources]

    def source_tenants(self) -> list[Tenant]:
        from rec.data.loaders import load_source

        if self._tenants is None:
            self._tenants = [compact_catalog(load_source(s, min_seq_len=3)) for s in self.source_specs()]
        return self._tenants

    def pretrain_config(self) -> RecConfig:
        over = {"text.cache_dir": str(ROOT / ".cache" / "rec-text"), "ray.num_cpus": 2, **self.bc.pretrain,
                "train.output_dir": str(self.stage / "backbone"), "train.run_name": "fewshot-backbone", "eval.ks": [10]}
        if self.quick:
            over["train.epochs"] = self.bc.quick.epochs
        return rec_config(over, {"data": {"sources": [s.model_dump(mode="json") for s in self.source_specs()],
                                          "holdout": [s.model_dump(mode="json") for s in self.holdout_specs()]}})

    def backbone(self):  # noqa: ANN201 - LoadedBackbone
        """The pretrained source backbone; pretrained with Ray Train unless its checkpoint exists."""
        from rec.training.ray_train import pretrained_backbone

        if self._base is None:
            self._base, res = pretrained_backbone(self.pretrain_config(), corpus=self._pretrain_corpus)
            if res is not None:
                log(f"pretrained in {res.train_s:.0f} s, {res.epochs} epochs, published "
                    + ("the untrained init" if res.best_epoch < 0 else f"epoch {res.best_epoch + 1}") + "; test ndcg@10 "
                    + " ".join(f"{n}={m['ndcg@10']:.4f}" for n, m in res.test_metrics.items()))
                (self.stage / "backbone" / "history.json").write_text(json.dumps(res.history, indent=2))
        return self._base

    def _pretrain_corpus(self):  # noqa: ANN202 - Corpus
        from rec.training.corpus import build_corpus

        t0 = time.perf_counter()
        tenants = self.source_tenants()
        corpus = build_corpus(self.pretrain_config(), tenants=tenants)
        log(f"pretraining corpus: {[(t.name, t.num_users, t.num_items) for t in tenants]}, "
            f"{corpus.num_train_rows} rows, built in {time.perf_counter() - t0:.0f} s")
        (self.stage / "backbone").mkdir(parents=True, exist_ok=True)
        (self.stage / "backbone" / "sources.json").write_text(json.dumps({t.name: t.stats() for t in tenants}, indent=2))
        return corpus

    def init_backbone(self):  # noqa: ANN201 - LoadedBackbone
        """The untrained init pretraining started from (``zero-shot-init``): same config, same seed.

        Built as the Ray Train worker builds it (``torch.manual_seed(train.seed)``, then
        ``build_backbone``), so ``zero-shot / zero-shot-init`` measures what pretraining added.
        """
        import torch

        from rec.models.backbone import build_backbone
        from rec.training.checkpoint import LoadedBackbone

        if self._init is None:
            base = self.backbone()
            torch.manual_seed(base.cfg.train.seed)
            n_ids = base.model.id_emb.num_embeddings if base.model.id_emb is not None else 0
            model = build_backbone(base.cfg.model, num_item_ids=n_ids).eval()
            theirs = base.model.state_dict()
            same = all(torch.equal(v, theirs[k]) for k, v in model.state_dict().items())
            log("untrained init rebuilt: " + ("identical to the published backbone (pretraining published its init)"
                                              if same else "differs from the published backbone"))
            self._init = LoadedBackbone(model, base.cfg, base.tenants, base.manifest, f"init-of-{base.checksum}")
        return self._init

    def meta(self):  # noqa: ANN201 - LoadedBackbone
        """The Reptile meta-init (started from the pretrained backbone), trained unless cached."""
        from rec.training.checkpoint import load_backbone

        if self._meta is None:
            ckpt = self.stage / "meta" / "checkpoint"
            if not (ckpt / "manifest.json").is_file():
                from rec.adaptation.meta import meta_train
                from rec.ray_session import ray_session
                from rec.training.corpus import build_corpus

                base = self.backbone()
                over = {**self.bc.meta, **(self.bc.quick.meta if self.quick else {}),
                        "meta.output_dir": str(self.stage / "meta"), "meta.run_name": "fewshot-meta"}
                cfg = rec_config(over, base.cfg.model_dump(mode="json"))
                corpus = build_corpus(cfg, tenants=self.source_tenants(), holdout=[])
                with ray_session(RayConfig(num_cpus=2)):
                    res = meta_train(cfg, corpus=corpus, init=base)
                log(f"meta-init in {res.train_s:.0f} s, {res.epochs} outer epochs")
            self._meta = load_backbone(ckpt)
        return self._meta

    def target(self, name: str) -> TargetData:
        from rec.data.loaders import load_source
        from rec.text import encode_items

        if name not in self._targets:
            src = next(t for t in self.bc.targets if t.name == name)
            tenant = load_source(src, min_seq_len=3)
            emb = encode_items(list(tenant.items.text), self.backbone().cfg.text)
            self._targets[name] = TargetData(name, src, tenant, emb)
            log(f"target {name}: {tenant.num_users} users, {tenant.num_items} items")
        return self._targets[name]

    # configs
    def adapt_config(self, td: TargetData, method: str, k: KValue, seed: int, extra: dict | None = None) -> AdaptConfig:
        registered, variant = ADAPTED[method]
        over = {**self.bc.adapt, **variant, **(extra or {}), "adapt.method": registered,
                "adapt.tenant": td.name, "adapt.k_users": 1 if k == 0 else k_users(k), "adapt.seed": seed,
                "adapt.num_eval_users": self.bc.num_eval_users, "adapt.torch_threads": variant.get("adapt.torch_threads", 1)}
        if self.quick:
            over["adapt.epochs"] = self.bc.quick.epochs
        return rec_config(over).adapt

    def tuned(self, td: TargetData, seed: int) -> dict[str, Any]:
        """Best adapt.* overrides of the (target, seed) sweep at K=tune.k; swept once, then cached."""
        from rec.ray_session import ray_session
        from tuning.search_spaces import SweepSpec
        from tuning.sweep import run_sweep

        t = self.bc.tune
        name = f"fewshot-{td.name}-k{t.k}-s{seed}"
        name = f"{name}-a{self.adapt_key()}"  # trials run with these defaults (patience, batch...): re-sweep if they change
        cache = self.stage / "tune" / name / "fewshot_best.json"
        if not cache.is_file():
            base = self.backbone()
            space = {**t.search_space, "adapt.method": "lora"}
            if self.quick:
                space["adapt.epochs"] = self.bc.quick.epochs
            spec = SweepSpec(name=name, tenants=[td.name], k_users=[t.k], search_space=space, search="optuna",
                             scheduler={"type": "asha", "grace_period": t.grace_period, "reduction_factor": t.reduction_factor},
                             num_samples=self.bc.quick.tune_num_samples if self.quick else t.num_samples,
                             max_concurrent_trials=t.max_concurrent_trials, cpus_per_trial=t.cpus_per_trial, seed=seed, publish=False)
            tree = {"data": {"sources": [td.src.model_dump(mode="json")]}, "text": base.cfg.text.model_dump(mode="json"),
                    "eval": {"ks": [10]}, "ray": {"num_cpus": 2}}
            over = {**self.bc.adapt, "adapt.seed": seed, "adapt.num_eval_users": self.bc.num_eval_users}
            if self.quick:
                over["adapt.epochs"] = self.bc.quick.epochs
            cfg = rec_config(over, tree)
            t0 = time.perf_counter()
            with ray_session(RayConfig(num_cpus=2)):
                res = run_sweep(spec, cfg, base, storage_path=self.stage / "tune", verbose=0)
            if not res.best:
                raise RuntimeError(f"sweep {name}: no successful trial ({res.errors} errors), see {res.experiment_dir}")
            best = res.best[0]
            info = {"overrides": {k: v for k, v in best["best_config"].items() if k not in ("adapt.tenant", "adapt.k_users")},
                    "val_ndcg@10": best["val_ndcg@10"], "trial_id": best["trial_id"], "trials": len(res.rows),
                    "tune_s": round(time.perf_counter() - t0, 1)}
            cache.write_text(json.dumps(info, indent=2))
            log(f"sweep {name}: {info}")
        info = json.loads(cache.read_text())
        self.tune_info[f"{td.name}/s{seed}"] = info
        return info["overrides"]


def run_row(ctx: Context, td: TargetData, method: str, k: KValue, seed: int) -> tuple[dict[str, float], dict[str, Any]]:
    """One (dataset, method, k, seed): returns (row metrics, extra diagnostics)."""
    import torch

    from rec.data.splits import k_shot_split

    n_eval = ctx.bc.num_eval_users
    if k == 0 and method == "popularity":
        return {**uniform_metrics(td.tenant.num_items), "adapt_s": 0.0, "adapter_bytes": 0}, {}
    # zero-shot trains nothing: any K gives the same held-out users; 1 keeps the split cheap
    split = k_shot_split(td.tenant, 1 if k == 0 else k_users(k), None, seed, n_eval)
    extra: dict[str, Any] = {"train_users": 0 if k == 0 else len(split.train_rows), "eval_users": len(split.eval)}
    if method == "popularity":
        t0 = time.perf_counter()
        m = popularity(split, td.tenant.num_items, seed)
        return {**m, "adapt_s": time.perf_counter() - t0, "adapter_bytes": 4 * td.tenant.num_items}, extra
    if method in SCRATCH:
        from rec.adaptation.adapt import fewshot_corpus
        from rec.config import ModelConfig
        from rec.models.backbone import build_backbone

        base = ctx.backbone()
        torch.set_num_threads(1)
        torch.manual_seed(seed)
        t0 = time.perf_counter()
        max_len = base.cfg.data.max_seq_len
        tc = fewshot_corpus(split, td.text_emb, max_len)
        if method == "scratch-sasrec-id":
            mcfg = ModelConfig.model_validate({**base.cfg.model.model_dump(), "use_text": False, "use_id_embedding": True})
            model, tc, emb = build_backbone(mcfg, num_item_ids=tc.num_items), replace(tc, id_offset=0, text_emb=None), None
        else:
            model, emb = build_backbone(base.cfg.model), torch.from_numpy(td.text_emb)
        s = ctx.bc.scratch.model_copy(update={"epochs": ctx.bc.quick.epochs}) if ctx.quick else ctx.bc.scratch
        valid, test, epochs = train_from_scratch(model, tc, emb, s, seed)
        extra.update(val_ndcg=valid["ndcg@10"], epochs=epochs, trainable_params=sum(p.numel() for p in model.parameters()))
        return {**test, "adapt_s": time.perf_counter() - t0, "adapter_bytes": state_bytes(model)}, extra
    from rec.adaptation.adapt import adapt_tenant, publish_adapter

    base, cpu0 = ctx.backbone_for(method), time.process_time()
    tuned = ctx.tuned(td, seed) if method == "lora-tuned" else None
    acfg = ctx.adapt_config(td, method, k, seed, tuned)
    res = adapt_tenant(base, td.tenant, acfg, EvalConfig(ks=[10]), text_emb=td.text_emb, split=split)
    extra["adapt_cpu_s"] = round(time.process_time() - cpu0, 2)  # CPU seconds, all threads: comparable under load
    with tempfile.TemporaryDirectory() as tmp:
        weights = publish_adapter(res, base, acfg, root=tmp) / "adapter_model.safetensors"
        nbytes = weights.stat().st_size if weights.is_file() else 0
    extra.update(val_ndcg=res.valid["ndcg@10"], epochs=res.epochs, trainable_params=res.trainable_params, backbone=base.checksum[:20], **res.method_report.get("text_lora", {}))
    if method in TEXT_PRIOR:
        from rec.adaptation.adapt import fewshot_corpus

        test, fused = text_prior_fusion(res.model, fewshot_corpus(split, td.text_emb, base.cfg.data.max_seq_len), td.text_emb)
        extra.update(fused, model_alone_ndcg=res.test["ndcg@10"])
        res.test = {**res.test, **test}
    if floor := res.method_report.get("popularity_floor"):
        extra.update(floor_chosen=floor["chosen"], floor_candidates=floor["candidates"])
    if tuned is not None:
        extra["tuned"] = tuned
    return {**res.test, "adapt_s": res.adapt_s, "adapter_bytes": nbytes}, extra


# --- the run -------------------------------------------------------------------------------------
@dataclass
class Selection:
    targets: list[str]
    ks: list[KValue]
    seeds: list[int]
    methods: list[str]


def plan(sel: Selection) -> list[tuple[int, str, KValue, str]]:
    """(seed, target, k, method) in run order: seed, then K ascending (zero-shot with K=0), then target.

    K-major inside a seed so a partial run covers every target at the cheap small K first.
    """
    out = []
    for seed in sel.seeds:
        ks = ([0] if set(ZERO_SHOT) & set(sel.methods) and 0 not in sel.ks else []) + list(sel.ks)
        for k in sorted(ks, key=lambda k: (k == "all", k if k != "all" else 0)):
            for t in sel.targets:
                if k == 0:
                    out += [(seed, t, 0, m) for m in sel.methods if m in ZERO_SHOT or (m == "popularity" and 0 in sel.ks)]
                else:
                    out += [(seed, t, k, m) for m in sel.methods if m not in ZERO_SHOT]
    return out


def run(ctx: Context, sel: Selection, progress: Path, report) -> None:  # noqa: ANN001
    done = {row_key(r): r.get("settings") for r in read_progress(progress) if r.get("status") == "ok"}
    todo = plan(sel)
    log(f"{len(todo)} rows planned, progress file {progress}")
    last_block, last_report = None, time.monotonic()
    for i, (seed, name, k, method) in enumerate(todo):
        src = next(t for t in ctx.bc.targets if t.name == name)
        h = settings_hash(ctx, src, method)
        key = (name, method, str(k), seed)
        if done.get(key) != h:  # another run on the same progress file may have finished it meanwhile
            done = {row_key(r): r.get("settings") for r in read_progress(progress) if r.get("status") == "ok"}
        if done.get(key) == h:
            continue
        if last_block is not None and (last_block != (seed, k) or time.monotonic() - last_report > 1800):
            report()  # results so far: after every (seed, K) block, and every 30 min
            last_report = time.monotonic()
        last_block = (seed, k)
        row: dict[str, Any] = {"dataset": name, "method": method, "k": k, "seed": seed}
        try:
            td = ctx.target(name)
            if k not in (0, "all") and k > len(td.tenant.users) - ctx.bc.num_eval_users:
                log(f"skip {name} {method} K={k}: more than the {len(td.tenant.users) - ctx.bc.num_eval_users} non-held-out users")
                continue
            metrics, extra = run_row(ctx, td, method, k, seed)
        except Exception as e:  # noqa: BLE001 - a long unattended run logs the failure and moves on
            log(f"FAILED {name} {method} K={k} seed={seed}: {e}\n{traceback.format_exc()}")
            append_progress(progress, {**row, "status": "failed", "error": str(e)[:500], "settings": h})
            continue
        row.update({"hr@10": metrics["hr@10"], "ndcg@10": metrics["ndcg@10"], "adapt_s": round(metrics["adapt_s"], 2),
                    "adapter_bytes": int(metrics["adapter_bytes"])})
        append_progress(progress, {**row, "status": "ok", "settings": h, "extra": extra, "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})
        log(f"[{i + 1}/{len(todo)}] {name:<10} {method:<17} K={k!s:<4} seed={seed} ndcg@10={row['ndcg@10']:.4f} "
            f"hr@10={row['hr@10']:.4f} adapt_s={row['adapt_s']:.1f} bytes={row['adapter_bytes']} "
            + " ".join(f"{a}={b}" for a, b in extra.items() if a in ("epochs", "train_users")))


# --- report --------------------------------------------------------------------------------------
def protocol_dict(ctx: Context, sel: Selection, rows: list[dict[str, Any]], failed: list[str], summary: dict,
                  previous: dict[str, Any] | None = None) -> dict[str, Any]:
    bc = ctx.bc
    previous = previous or {}
    ran: dict[str, Any] = {}
    for r in rows:
        d = ran.setdefault(r["dataset"], {"seeds": set(), "ks": set(), "methods": set(), "rows": 0})
        d["seeds"].add(r["seed"])
        d["ks"].add(str(r["k"]))
        d["methods"].add(r["method"])
        d["rows"] += 1
    ran = {ds: {"seeds": sorted(d["seeds"]), "ks": k_order(d["ks"]), "methods": [m for m in METHODS if m in d["methods"]],
                "rows": d["rows"]} for ds, d in ran.items()}
    expected = len(plan(Selection([t.name for t in bc.targets], list(bc.ks), list(bc.seeds), list(bc.methods))))
    bb = ctx.stage / "backbone" / "checkpoint" / "manifest.json"
    bbm = json.loads(bb.read_text()) if bb.is_file() else {}
    mm = ctx.stage / "meta" / "checkpoint" / "manifest.json"
    mmeta = json.loads(mm.read_text()) if mm.is_file() else previous.get("meta_init", {})
    sources_json = ctx.stage / "backbone" / "sources.json"
    tune_done = {p.parent.name: json.loads(p.read_text()) for p in sorted((ctx.stage / "tune").glob(f"*-a{ctx.adapt_key()}/fewshot_best.json"))}
    tune_done = tune_done or previous.get("lora_tuned", {}).get("sweeps", {})
    configured = sum(1 for r in rows if r["method"] in bc.methods)
    return {
        "protocol": PROTOCOL,
        "status": f"{'complete' if configured >= expected else 'PARTIAL'}: {configured} of {expected} configured rows "
                  f"({len(bc.targets)} targets x seeds {list(bc.seeds)} x Ks {list(bc.ks)} x {len(bc.methods)} methods)",
        "ran": ran,
        "last_invocation": {"targets": sel.targets, "ks": sel.ks, "seeds": sel.seeds, "methods": sel.methods},
        "failed_rows": failed,
        "quick": ctx.quick,
        "sources": [s.model_dump(mode="json", exclude_defaults=True) for s in ctx.source_specs()],
        "source_stats_after_sampling_and_catalog_compaction": json.loads(sources_json.read_text()) if sources_json.is_file() else None,
        "targets": [t.model_dump(mode="json", exclude_defaults=True) for t in bc.targets],
        "num_eval_users": bc.num_eval_users,
        "pretraining": {"overrides": bc.pretrain, "how": "rec.training.ray_train.pretrain (Ray Train TorchTrainer, 1 worker); "
                        "checkpoint selection and early stopping on train.select_on (holdout: zero-shot NDCG@10 of the "
                        "held-out tenants below, the untrained init included as a candidate); source catalogs = items the sampled users touched",
                        "holdout": [s.model_dump(mode="json", exclude_defaults=True) for s in ctx.holdout_specs()],
                        "selected_on": bbm.get("metrics", {}).get("selected_on"), "best_epoch": bbm.get("metrics", {}).get("best_epoch"),
                        "holdout_test_metrics": bbm.get("metrics", {}).get("holdout_test"),
                        "history": json.loads(hist.read_text()) if (hist := ctx.stage / "backbone" / "history.json").is_file() else None,
                        "checksum": bbm.get("files", {}).get("model.safetensors", {}).get("sha256"),
                        "train_s": bbm.get("train_s"), "epochs_run": bbm.get("epochs_run"),
                        "source_test_metrics": bbm.get("metrics", {}).get("test")},
        "meta_init": {"overrides": bc.meta, "how": "rec.adaptation.meta.meta_train (Reptile on Ray Train) from the pretrained backbone",
                      "train_s": mmeta.get("train_s"), "epochs_run": mmeta.get("epochs_run")},
        "adaptation": {"adapt_overrides": bc.adapt, "defaults": AdaptConfig().model_dump(mode="json", exclude={"tenant", "output_root"}),
                       "note": "torch_threads=1 (text-lora: 2); adapt_s = rec.adaptation.adapt.adapt_tenant's own timer (corpus, training "
                               "with per-epoch validation, test); adapter_bytes = adapter_model.safetensors of the published "
                               "adapter (0 for zero-shot)"},
        "scratch": {**bc.scratch.model_dump(), "note": "same architecture as the backbone; scratch-sasrec-id: use_text=false + "
                    "an ID embedding over the target catalog; adapter_bytes = whole model as safetensors"},
        "popularity": "counts over the K users' sequences, random tie-break; adapter_bytes = 4 bytes per item; K=0: exact "
                      "expectation of a uniformly random ranking (10/N HR@10)",
        "lora_tuned": {**bc.tune.model_dump(), "note": "one Optuna-TPE + ASHA sweep (tuning.sweep.run_sweep) per (target, seed) at "
                       "K=k on the held-out users' validation item; its best config is used for every K; adapt_s excludes "
                       "the sweep (tune_s below)", "sweeps": tune_done},
        "issue_17": {"default": {"method": ADAPTED["default"][0], "overrides": ADAPTED["default"][1]},
                     "zero_shot_init": "the untrained init rebuilt with torch.manual_seed(train.seed) + build_backbone, as the Ray "
                                       "Train worker builds it; scored zero-shot at K=0",
                     "backbone_options": BACKBONE_OPTIONS, "text_prior_weights": list(TEXT_PRIOR_WEIGHTS),
                     "fixed_init_reference": FIXED_INIT_REFERENCE,
                     "note": "option rows (+center, +whiten, +cosine, +text-prior) and the item-terms variants are side-by-side "
                             "measurements on a few (target, seed) cells; adapt_s of the 2026-12-04 rows ran at load average 40-50"},
        "targets_met": summary,
    }


def report(ctx: Context, sel: Selection, progress: Path, name: str, results_dir: Path) -> Path | None:
    prog = read_progress(progress)
    rows = final_rows(prog, ctx)
    if not rows:
        log(f"no finished rows in {progress}: nothing to report")
        return None
    ok = {row_key(r) for r in prog if r.get("status") == "ok"}
    failed = sorted({f"{r['dataset']}/{r['method']}/K={r['k']}/seed={r['seed']}: {r.get('error', '')[:120]}"
                     for r in prog if r.get("status") == "failed" and row_key(r) not in ok})
    checks, summary = target_checks(rows)
    transfer, transfer_summary = transfer_checks(rows)
    summary = {"issue_3": summary, "issue_17": transfer_summary}
    notes = "\n\n".join([
        "## Mean NDCG@10 over seeds (method × K)", pivot_tables(rows),
        "## Targets of issue 17: never below popularity, pretraining that transfers, adaptation that learns", transfer,
        "## Targets of issue 3 (ratios of mean NDCG@10)", checks,
        "## Cost per method (mean over datasets and seeds)", cost_table(rows),
    ])
    results_dir.mkdir(parents=True, exist_ok=True)
    previous = previous_protocol(results_dir / f"{name}.json")
    path = write_results(name, without_data_root(protocol_dict(ctx, sel, rows, failed, summary, previous)), rows,
                         columns=ROW_KEYS, notes=notes, results_dir=results_dir)
    plot(rows, results_dir / f"{name}_ndcg_vs_k.png")
    log(f"wrote {path} ({len(rows)} rows) and {name}_ndcg_vs_k.png")
    return path


# --- CLI -----------------------------------------------------------------------------------------
def _k(v: str) -> KValue:
    if v == "all":
        return v
    try:
        k = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"K {v!r}: use a non-negative integer or 'all'") from None
    if k < 0:
        raise argparse.ArgumentTypeError(f"K {k} must be >= 0")
    return k


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, default=ROOT / "bench" / "fewshot.yaml")
    p.add_argument("--targets", nargs="+", help="target names from the config (default: all)")
    p.add_argument("--ks", nargs="+", type=_k, help="K values: integers or 'all' (default: the config's)")
    p.add_argument("--seeds", nargs="+", type=int)
    p.add_argument("--methods", nargs="+", choices=METHODS)
    p.add_argument("--quick", action="store_true", help="tiny pipeline check (the config's quick: section)")
    p.add_argument("--report-only", action="store_true", help="rebuild JSON/markdown/PNG from the progress file")
    p.add_argument("--name", help="results name (default fewshot, or fewshot-quick)")
    p.add_argument("--progress", type=Path, help="progress JSONL (default <results-dir>/<name>_progress.jsonl)")
    p.add_argument("--results-dir", type=Path, default=RESULTS)
    p.add_argument("--runs-dir", type=Path, help="override the config's runs_dir")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bc = with_data_root(load_bench_config(args.config), os.environ.get(DATA_ROOT_ENV))
    q = bc.quick
    names = [t.name for t in bc.targets]
    unknown = [t for t in args.targets or [] if t not in names]
    if unknown:
        raise SystemExit(f"unknown targets {unknown}; the config has {names}")
    sel = Selection(args.targets or (q.targets if args.quick else names), args.ks or (q.ks if args.quick else list(bc.ks)),
                    args.seeds or (q.seeds if args.quick else list(bc.seeds)), args.methods or list(bc.methods))
    name = args.name or ("fewshot-quick" if args.quick else "fewshot")
    runs = args.runs_dir or (ROOT / bc.runs_dir if not Path(bc.runs_dir).is_absolute() else Path(bc.runs_dir))
    runs = Path(str(runs) + "-quick") if args.quick and not args.runs_dir else runs
    progress = args.progress or args.results_dir / f"{name}_progress.jsonl"
    ctx = Context(bc, runs, args.quick)
    t0 = time.perf_counter()
    if not args.report_only:
        run(ctx, sel, progress, lambda: report(ctx, sel, progress, name, args.results_dir))
        log(f"run finished in {(time.perf_counter() - t0) / 60:.1f} min")
    report(ctx, sel, progress, name, args.results_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
