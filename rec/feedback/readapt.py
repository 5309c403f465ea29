"""One re-adaptation round of one tenant from its event log (``rec readapt``).

setup (the serving version, its manifest and adapter; the log read with Ray Data; the gate split)
-> adapt, warm-started from the serving adapter -> save the candidate adapter -> gate: NDCG@10 on
the held-out most recent events, candidate vs serving version, both loaded from their adapter
folders and scored by one function -> publish (``publish_tenant``) only if candidate >=
serving + ``min_gain`` (strictly: a tie keeps the live version) -> record the round (``rec.feedback.rounds``) either way.

The adaptation runs in this process (the Ray job's driver): a round trains a few hundred small
sequences for seconds, so a Ray Train worker group would cost more to start than it saves; Ray
Data reads the log. Candidate adapters go to ``<root>/readapt/adapters/<tenant>/v<N>`` (kept
whether or not they were published, so a kept round can be inspected).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rec.adaptation.registry import ExportKind, WarmStartError, get_method
from rec.config import AdaptConfig, EvalConfig, ReadaptConfig
from rec.data.schema import Tenant
from rec.feedback.gate import GATE_METRIC, LoggedSplit, gate_ndcg, split_logged
from rec.feedback.log_reader import read_interactions
from rec.feedback.rounds import append_record
from rec.io.artifacts import read_manifest
from rec.serving.events import EventLog
from rec.serving.store import ArtifactRoot
from rec.training.checkpoint import LoadedBackbone

__all__ = ["ReadaptError", "ServingVersion", "readapt_tenant", "serving_version"]


class ReadaptError(ValueError):
    """The round cannot start (unknown tenant, backbone mismatch); the message says what to do."""


@dataclass(frozen=True)
class ServingVersion:
    """The version a tenant serves now: number, method and the adapter folder it was exported from."""

    version: int
    method: str
    adapter_dir: Path | None


def serving_version(root: str | Path, tenant: str, loaded: LoadedBackbone) -> ServingVersion:
    """The tenant's live version, checked against ``loaded``.

    Raises:
        ReadaptError: the tenant is not published under ``root``, or its version was exported
            from another backbone.
    """
    store = ArtifactRoot(root)
    current = store.current_version(tenant)
    if current is None:
        raise ReadaptError(f"tenant {tenant!r} is not published under {store.root}: run `rec publish --tenant {tenant}` first")
    manifest = read_manifest(store.version_dir(tenant, current), verify=False)
    if manifest.get("backbone_checksum") != loaded.checksum:
        raise ReadaptError(
            f"{tenant} v{current} was exported from backbone {str(manifest.get('backbone_checksum'))[:12]}, not "
            f"{loaded.checksum[:12]}: pass the --backbone the artifact root was published with"
        )
    path = (manifest.get("adapter") or {}).get("path")
    return ServingVersion(current, manifest["method"], Path(path) if path else None)


def _adapt_config(acfg: AdaptConfig, rcfg: ReadaptConfig, serving: ServingVersion, adapters: Path) -> tuple[AdaptConfig, dict]:
    """The round's adaptation config and the serving adapter's manifest (``{}`` if none).

    Method: ``feedback.readapt.method``, else the serving version's, else (the serving version
    trains nothing, e.g. zero-shot) ``adapt.method``. The method's own section comes from the
    serving adapter's hyper-parameters when the methods match, so its tensors fit the warm start.
    """
    method = rcfg.method or serving.method
    if get_method(method).export is ExportKind.BASE:
        method = acfg.method
    manifest = {}
    if serving.adapter_dir is not None and (serving.adapter_dir / "manifest.json").is_file():
        manifest = read_manifest(serving.adapter_dir, verify=False)
    update: dict[str, Any] = {"method": method, "k_users": None, "n_first": None, "output_root": str(adapters)}
    if manifest.get("method") == method:
        saved = manifest.get("hyperparameters") or {}
        section = AdaptConfig.model_validate({f: saved[f] for f in get_method(method).config_fields if f in saved})
        update.update({f: getattr(section, f) for f in get_method(method).config_fields if f in saved})
    return acfg.model_copy(update=update), manifest


def _scoring_model(loaded: LoadedBackbone, adapter_dir: Path | None):  # noqa: ANN202 - Backbone
    from rec.adaptation.artifacts import load_adapter

    if adapter_dir is None:
        return copy.deepcopy(loaded.model).eval()
    return load_adapter(adapter_dir, loaded.model, loaded.checksum)[0]


def _adapt(loaded: LoadedBackbone, split: LoggedSplit, acfg: AdaptConfig, eval_cfg: EvalConfig, text_emb: np.ndarray,
           warm: Path | None) -> tuple[Any, str | None]:
    """``adapt_tenant`` on the logged users, warm-started when the serving adapter fits; (result, why cold)."""
    from rec.adaptation.adapt import adapt_tenant

    if warm is not None:
        try:
            return adapt_tenant(loaded, split.train, acfg, eval_cfg, text_emb=text_emb, init_adapter=warm), None
        except WarmStartError as e:
            cold = str(e)
    else:
        cold = "the serving version has no adapter of this method"
    return adapt_tenant(loaded, split.train, acfg, eval_cfg, text_emb=text_emb), cold


def readapt_tenant(root: str | Path, loaded: LoadedBackbone, catalog: Tenant, text_emb: np.ndarray, rcfg: ReadaptConfig,
                   acfg: AdaptConfig, eval_cfg: EvalConfig | None = None) -> dict[str, Any]:
    """One round for ``catalog.name`` (module doc); returns the round's record.

    Args:
        root: The serving artifact root (``tenants/``, ``events/``; rounds go to ``readapt/``).
        loaded: The backbone the root was published with.
        catalog: The tenant as configured: its catalog rows (logged ids are mapped onto them).
        text_emb: ``(N, text_dim)`` item-text embeddings of the catalog.
        rcfg, acfg, eval_cfg: ``feedback.readapt``, ``adapt`` and ``eval`` of the config.

    Raises:
        ReadaptError: unknown tenant or backbone mismatch. NoEvents / TooFewUsers (DataError):
            nothing or too little to learn from; no round is recorded then.
    """
    from rec.adaptation.adapt import publish_adapter
    from rec.export.publish import publish_tenant

    t0 = time.perf_counter()
    eval_cfg = eval_cfg or EvalConfig()
    tenant = catalog.name
    store = ArtifactRoot(root)
    serving = serving_version(root, tenant, loaded)
    logged = read_interactions(EventLog(store.events_dir).files(tenant), tenant)
    split = split_logged(catalog, logged, rcfg.holdout_users, rcfg.min_train_users)
    acfg, serving_manifest = _adapt_config(acfg, rcfg, serving, store.root / "readapt" / "adapters")
    warm = serving.adapter_dir if serving_manifest.get("method") == acfg.method else None
    res, cold_reason = _adapt(loaded, split, acfg, eval_cfg, text_emb, warm)
    candidate = publish_adapter(res, loaded, acfg, extra={"readapt": {"from_version": serving.version, "warm_start": cold_reason is None}})
    max_len, excl = loaded.cfg.data.max_seq_len, eval_cfg.exclude_history
    new = gate_ndcg(_scoring_model(loaded, candidate), text_emb, split.gate, max_len, excl)
    current = gate_ndcg(_scoring_model(loaded, serving.adapter_dir), text_emb, split.gate, max_len, excl)
    passed = new > current + rcfg.min_gain  # a tie would publish a version no better than the live one
    record: dict[str, Any] = {
        "kind": "round", "decision": "published" if passed else "kept", "method": acfg.method,
        "gate": {"metric": GATE_METRIC, "new": new, "current": current, "min_gain": rcfg.min_gain, "users": len(split.gate)},
        "from_version": serving.version, "candidate_adapter": str(candidate),
        "warm_start": cold_reason is None, "cold_start_reason": cold_reason,
        "events_read": logged.events, "events_from_requests": logged.from_requests, "events_used": split.events_used, "dropped_unknown_items": split.dropped_unknown,
        "joined_via_request_id": logged.joined, "unattributed": logged.unattributed, "users": logged.num_users,
        "log_until_unix": logged.last_received_unix, "adapt_epochs": res.epochs, "adapt_s": res.adapt_s,
    }
    if passed:
        pub = publish_tenant(root, loaded, catalog, text_emb, candidate)
        record["version"] = pub.version
    else:
        record["reason"] = (f"gate: new {GATE_METRIC} {new:.4f} <= current {current:.4f} + min_gain {rcfg.min_gain:g} "
                            f"on the {len(split.gate)} most recent held-out events; v{serving.version} stays live")
    record["seconds"] = time.perf_counter() - t0
    return append_record(root, tenant, record)

