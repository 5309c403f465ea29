"""Publishing a sweep's result: each (tenant, K)'s best trial re-run and saved as an adapter."""

from __future__ import annotations

import json
from pathlib import Path

from rec.io.artifacts import atomic_write_json
from tuning.search_spaces import k_label, trial_config, trial_overrides

__all__ = ["PUBLISHED_FILE", "publish_best"]

PUBLISHED_FILE = "published.json"


def publish_best(rows, groups, spec, cfg, base, tenants, text_embs, tree, exp_dir, threads):  # noqa: ANN001, ANN202
    """Re-run each group's best trial (same config, its epoch count) and publish it as an adapter.

    Re-running on the driver keeps trials free of side effects (ASHA-stopped trials leave nothing
    behind) and works without a shared filesystem. Groups already published for the same trial
    (a resumed or repeated command) are not published twice.
    """
    from rec.adaptation.adapt import adapt_tenant, publish_adapter

    published_path = exp_dir / PUBLISHED_FILE
    published = json.loads(published_path.read_text()) if published_path.is_file() else {}
    root = Path(cfg.adapt.output_root).resolve()
    best_rows, missing = [], []
    for tenant, k in groups:
        ok = [r for r in rows if r["tenant"] == tenant and r["k_users"] == k and r["val_ndcg@10"] is not None and r["status"] != "error"]
        if not ok:
            missing.append(f"{tenant}/K={k_label(k)}")
            continue
        r = max(ok, key=lambda r: (r["val_ndcg@10"], r["trial_id"]))  # ties: the same pick after a resume
        key = f"{tenant}/{k_label(k)}"
        entry = {"tenant": tenant, "k": k_label(k), "trial_id": r["trial_id"], "val_ndcg@10": r["val_ndcg@10"],
                 "epochs": r["epochs"], "best_config": trial_overrides(spec, r["_config"])}
        prev = published.get(key)
        if spec.job == "fed":  # the trial published its adapter itself (tuning.trial.federated_trial): nothing to re-run
            best_rows.append({**entry, "adapter": r.get("adapter")})
            continue
        if not spec.publish:
            best_rows.append(entry)
            continue
        if prev and prev["trial_id"] == r["trial_id"] and (Path(prev["adapter"]) / "manifest.json").is_file():
            best_rows.append(prev)
            continue
        tcfg = trial_config(tree, spec, r["_config"], torch_threads=threads)
        acfg = tcfg.adapt.model_copy(update={"epochs": max(1, r["epochs"])}) if r["epochs"] else tcfg.adapt
        res = adapt_tenant(base, tenants[tenant], acfg, tcfg.eval, text_emb=text_embs[tenant])
        tune_block = {"experiment": str(exp_dir), "name": spec.name, "trial_id": r["trial_id"],
                      "best_config": entry["best_config"], "val_ndcg@10": r["val_ndcg@10"],
                      "search": spec.search, "scheduler": spec.scheduler.type,
                      "trials_in_group": len([x for x in rows if x["tenant"] == tenant and x["k_users"] == k])}
        path = publish_adapter(res, base, acfg, root=root, extra={"tune": tune_block})
        entry.update(adapter=str(path), rerun_val_ndcg=res.valid["ndcg@10"], test={m: float(v) for m, v in res.test.items()})
        published[key] = entry
        atomic_write_json(published_path, published)
        best_rows.append(entry)
    return best_rows, missing
