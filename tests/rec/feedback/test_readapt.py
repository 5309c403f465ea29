"""Re-adaptation from the event log: the Ray Data reader, the gate split and whole rounds on a real root."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rec.config import AdaptConfig, ReadaptConfig
from rec.data.schema import DataError
from rec.feedback.gate import TooFewUsers, gate_ndcg, split_logged
from rec.feedback.log_reader import NoEvents, read_interactions
from rec.feedback.readapt import ReadaptError, readapt_tenant, serving_version
from rec.feedback.replay import replay_interactions
from rec.feedback.rounds import read_records, rounds_path
from rec.serving.events import EventLog
from rec.serving.store import ArtifactRoot

DAY0 = 1_767_225_600.0 - 6 * 3600  # 2025-12-31 18:00 UTC: the replay crosses into the next day
ACFG = AdaptConfig(epochs=3, patience=3, lr=5e-3, torch_threads=1)


def _files(root, tenant="podcasts"):
    return EventLog(ArtifactRoot(root).events_dir).files(tenant)


@pytest.fixture
def logged_root(world_copy, serving_world):
    tenant = serving_world.tenants["podcasts"]
    n = replay_interactions(world_copy, tenant, list(range(tenant.num_users)), DAY0, step_s=30.0, version="v2",
                            extra_items=("not-in-catalog-1", "not-in-catalog-2"))
    return world_copy, n


def test_reader_reads_day_files_and_joins_users_by_request_id(ray_local, logged_root, serving_world):
    root, written = logged_root
    tenant = serving_world.tenants["podcasts"]
    files = _files(root)
    assert [p.name for p in files] == ["2025-12-31.jsonl", "2026-01-01.jsonl"], "the replay spans two day files"
    with open(files[-1], "ab") as fh:
        fh.write(b'{"kind":"event","type":"cli')  # a torn last line after a crash
    logged = read_interactions(files, "podcasts")
    assert logged.events == written and logged.unattributed == 0
    assert 0 < logged.joined < written, "some clicks had no user id and were joined through their impression"
    assert logged.num_users == tenant.num_users
    by_user = dict(zip(logged.users, logged.sequences))
    for u in (1, 7, tenant.num_users - 1):  # chronological, exactly the replayed sequence
        assert by_user[f"user-{tenant.users[u]}"] == [str(tenant.items.ids[i]) for i in tenant.sequence(u)]
    assert by_user[f"user-{tenant.users[0]}"][:2] == ["not-in-catalog-1", "not-in-catalog-2"]


def test_asks_are_interactions_through_their_newest_history_item(ray_local, tmp_path):
    log = EventLog(ArtifactRoot(tmp_path).events_dir)

    def ask(t: float, last: str | None, user: str | None = "u1") -> dict:
        rec = {"kind": "impression", "request_id": f"r{t}", "items": ["z"], "timestamp": t, "received_unix": t}
        return {**rec, **({"user_id": user} if user else {}), **({"history_last": last} if last else {})}

    def click(t: float, item: str) -> dict:
        return {"kind": "event", "type": "click", "item_id": item, "user_id": "u1", "timestamp": t, "received_unix": t}

    log.append_unkeyed("shop", [ask(1, "a"), click(2, "b"), ask(3, "b"), ask(4, "b"), click(5, "b"), ask(6, None),
                                ask(7, "c", user=None), ask(8, "d", user="u2")])
    logged = read_interactions(EventLog(ArtifactRoot(tmp_path).events_dir).files("shop"), "shop")
    by_user = dict(zip(logged.users, logged.sequences))
    # the asks repeating the click add nothing, the second click of b counts, an ask without a user cannot
    assert by_user == {"u1": ["a", "b", "b"], "u2": ["d"]}
    assert (logged.events, logged.from_requests) == (2, 2)


def test_the_gate_target_is_what_an_ask_reported_not_a_trailing_click(ray_local, tmp_path, serving_world):
    tenant = serving_world.tenants["podcasts"]
    ids = [str(i) for i in tenant.items.ids[:6]]
    log = EventLog(ArtifactRoot(tmp_path).events_dir)
    recs = []
    for u in range(4):  # each user: asks reporting ids[0], ids[1], ids[2], then a click on ids[3+u%3] (shown)
        for j in range(3):
            t = 100.0 * u + j
            recs.append({"kind": "impression", "request_id": f"r{u}-{j}", "items": ["x"], "user_id": f"u{u}",
                         "history_last": ids[j], "timestamp": t, "received_unix": t})
        recs.append({"kind": "event", "type": "click", "item_id": ids[3 + u % 3], "user_id": f"u{u}",
                     "timestamp": 100.0 * u + 5, "received_unix": 100.0 * u + 5})
    log.append_unkeyed("podcasts", recs)
    logged = read_interactions(log.files("podcasts"), "podcasts")
    split = split_logged(tenant, logged, holdout_users=2, min_train_users=2)
    index = {i: tenant.item_index_of(i) for i in ids}
    assert sorted(split.gate.users) == ["u2", "u3"], "the users who acted last"
    assert split.gate.targets.tolist() == [index[ids[2]]] * 2, "the last reported interaction, not the click after it"
    assert all(h.tolist() == [index[ids[0]], index[ids[1]]] for h in split.gate.histories)
    held = [r for r, u in enumerate(split.train.users) if u in ("u2", "u3")]
    assert all(split.train.sequence(r).tolist() == [index[ids[0]], index[ids[1]]] for r in held), "target and later click never train"


def test_gate_split_holds_out_the_most_recent_events(ray_local, logged_root, serving_world):
    root, _ = logged_root
    tenant = serving_world.tenants["podcasts"]
    logged = read_interactions(_files(root), "podcasts")
    split = split_logged(tenant, logged, holdout_users=10, min_train_users=20)
    assert split.dropped_unknown == 2
    last_users = [f"user-{tenant.users[u]}" for u in range(tenant.num_users - 10, tenant.num_users)]
    assert sorted(split.gate.users) == sorted(last_users), "the users who acted last are the gate"
    for user, hist, target in zip(split.gate.users, split.gate.histories, split.gate.targets):
        seq = tenant.sequence(int(np.flatnonzero(tenant.users == user.removeprefix("user-"))[0]))
        assert target == seq[-1] and list(hist) == list(seq[:-1])
        row = int(np.flatnonzero(split.train.users == user)[0])
        assert list(split.train.sequence(row)) == list(seq[:-1]), "a held-out event never trains"
    with pytest.raises(TooFewUsers, match="min_train_users"):
        split_logged(tenant, logged, holdout_users=10, min_train_users=tenant.num_users)


def test_gate_scores_a_better_model_higher(serving_world, ray_local, logged_root):
    """The LoRA version was adapted on this tenant; the zero-shot backbone was not: the gate must see it."""
    root, _ = logged_root
    tenant, loaded = serving_world.tenants["podcasts"], serving_world.loaded
    split = split_logged(tenant, read_interactions(_files(root), "podcasts"), holdout_users=40, min_train_users=20)
    from rec.feedback.readapt import _scoring_model

    emb, max_len = serving_world.text_emb["podcasts"], loaded.cfg.data.max_seq_len
    lora = gate_ndcg(_scoring_model(loaded, serving_world.adapters["podcasts"]), emb, split.gate, max_len)
    zero = gate_ndcg(_scoring_model(loaded, None), emb, split.gate, max_len)
    assert lora > zero


def _round(root, serving_world, min_gain):
    rcfg = ReadaptConfig(holdout_users=20, min_train_users=20, min_gain=min_gain)
    return readapt_tenant(root, serving_world.loaded, serving_world.tenants["podcasts"], serving_world.text_emb["podcasts"],
                          rcfg, ACFG)


def test_round_publishes_when_the_gate_passes(ray_local, logged_root, serving_world):
    root, written = logged_root
    store = ArtifactRoot(root)
    assert store.current_version("podcasts") == 2
    rec = _round(root, serving_world, min_gain=-1.0)
    assert rec["decision"] == "published" and rec["version"] == 3 and store.current_version("podcasts") == 3
    assert rec["method"] == "lora" and rec["warm_start"] is True, "warm start from the serving LoRA adapter"
    assert rec["events_read"] == written and rec["dropped_unknown_items"] == 2
    assert rec["gate"]["users"] == 20 and 0 <= rec["gate"]["new"] <= 1 and rec["seconds"] > 0
    manifest = json.loads((store.version_dir("podcasts", 3) / "manifest.json").read_text())
    assert manifest["adapter"]["path"] == rec["candidate_adapter"]
    assert read_records(root, "podcasts") == [rec]
    # the next round warm-starts from the adapter it just published
    assert serving_version(root, "podcasts", serving_world.loaded).adapter_dir.as_posix() == rec["candidate_adapter"]


def test_round_keeps_the_current_version_when_the_gate_fails(ray_local, logged_root, serving_world):
    root, _ = logged_root
    rec = _round(root, serving_world, min_gain=1.0)
    assert rec["decision"] == "kept" and ArtifactRoot(root).current_version("podcasts") == 2
    assert "min_gain 1" in rec["reason"] and "v2 stays live" in rec["reason"]
    assert rec["gate"]["current"] == pytest.approx(read_records(root, "podcasts")[-1]["gate"]["current"])
    assert rounds_path(root, "podcasts").read_bytes().endswith(b"\n")


def test_round_refuses_unknown_tenants_empty_logs_and_other_backbones(ray_local, world_copy, serving_world):
    with pytest.raises(NoEvents, match="no event log"):
        _round(world_copy, serving_world, 0.0)
    other = serving_world.tenants["podcasts"]
    with pytest.raises(ReadaptError, match="not published"):
        serving_version(world_copy, "nobody", serving_world.loaded)
    from rec.training.checkpoint import LoadedBackbone

    b = serving_world.loaded
    impostor = LoadedBackbone(b.model, b.cfg, b.tenants, b.manifest, "0" * 64)
    with pytest.raises(ReadaptError, match="--backbone"):
        serving_version(world_copy, other.name, impostor)
    assert issubclass(NoEvents, DataError) and issubclass(TooFewUsers, DataError)


def test_round_on_a_zero_shot_version_adapts_cold_with_the_configured_method(ray_local, world_copy, serving_world):
    tenant = serving_world.tenants["courses"]  # served zero-shot (v1): nothing to warm-start from
    replay_interactions(world_copy, tenant, list(range(tenant.num_users)), DAY0, version="v1")
    rcfg = ReadaptConfig(holdout_users=20, min_train_users=20, min_gain=-1.0)
    rec = readapt_tenant(world_copy, serving_world.loaded, tenant, serving_world.text_emb["courses"], rcfg,
                         ACFG.model_copy(update={"method": "head"}))
    assert rec["method"] == "head" and rec["warm_start"] is False and "no adapter" in rec["cold_start_reason"]
    assert rec["decision"] == "published" and ArtifactRoot(world_copy).current_version("courses") == 2


def test_item_terms_round_trips_a_warm_start(small_backbone, new_tenant, tmp_path):
    """The popularity floor changes the bias after training; a warm start must begin from what was saved."""
    import torch

    from rec.adaptation.adapt import adapt_tenant, publish_adapter
    from rec.adaptation.artifacts import load_adapter
    from rec.text import encode_items

    emb = encode_items(list(new_tenant.items.text), small_backbone.cfg.text)
    acfg = AdaptConfig(method="item-terms", k_users=32, epochs=2, patience=2, lr=1e-2, torch_threads=1, output_root=str(tmp_path))
    first = publish_adapter(adapt_tenant(small_backbone, new_tenant, acfg, text_emb=emb), small_backbone, acfg)
    # no floor and a vanishing step: what the warm run ends with is what it started from
    again = acfg.model_copy(update={"epochs": 1, "lr": 1e-12, "item_terms": acfg.item_terms.model_copy(update={"popularity_floor": False})})
    warm = adapt_tenant(small_backbone, new_tenant, again, text_emb=emb, init_adapter=first)
    cold = adapt_tenant(small_backbone, new_tenant, again, text_emb=emb)
    saved = load_adapter(first, small_backbone.model, small_backbone.checksum)[0]
    for name in ("item_bias", "catalog_gate"):
        assert torch.allclose(getattr(warm.model, name), getattr(saved, name), atol=1e-5), name
    assert not torch.allclose(cold.model.item_bias, saved.item_bias, atol=1e-3), "the first run must have moved the bias"
