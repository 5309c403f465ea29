"""Reptile meta-init (Nichol et al., 2018): the update rule, episode plans, a 2-worker Ray Train run
from the pretrained ``small_backbone``, and LoRA adaptation of an unseen tenant from it.

The plain-vs-meta comparison is recorded (``record_property`` and the printed line), not asserted:
on tiny synthetic data the meta-init need not help, and the test must not be flaky.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from rec.adaptation.adapt import adapt_tenant
from rec.adaptation.meta import episode_plan, meta_epoch, meta_train, reptile_step
from rec.cli import main as cli_main
from rec.config import AdaptConfig, ConfigError, MetaConfig, RecConfig, load_config
from rec.data.splits import k_shot_split
from rec.io.artifacts import read_manifest
from rec.text import encode_items
from rec.training.checkpoint import load_backbone
from rec.training.corpus import build_corpus
from rec.training.loop import CorpusLoss

pytestmark = pytest.mark.slow

META = {"outer_epochs": 2, "meta_iterations": 4, "episodes_per_iteration": 1, "support_users": 32, "inner_steps": 5,
        "inner_lr": 1e-3, "outer_lr": 0.5, "anneal_outer_lr": False}  # constant eps: a longer run extends a shorter one


def _vec(model: torch.nn.Module) -> torch.Tensor:
    return torch.nn.utils.parameters_to_vector(model.parameters()).detach().clone()


def _in_process(small_backbone, corpus, cfg, epochs: int) -> torch.Tensor:
    """The same meta run in this process: 1 worker x (2 episodes) = 2 workers x 1 episode."""
    torch.set_num_threads(1)
    model = copy.deepcopy(small_backbone.model)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.meta.outer_lr)
    single = cfg.meta.model_copy(update={"episodes_per_iteration": 2})
    embs = [torch.from_numpy(t.text_emb) for t in corpus.tenants]
    for epoch in range(epochs):
        meta_epoch(CorpusLoss(model), opt, corpus, embs, single, epoch, 0, 1, cfg.train.grad_clip)
    return _vec(model)


@pytest.fixture(scope="module")
def corpus(small_backbone):
    return build_corpus(small_backbone.cfg)  # source tenants 0-1, text from the session cache


@pytest.fixture(scope="module")
def meta_run(ray_local, small_backbone, corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("meta")
    tree = small_backbone.cfg.model_dump(mode="json")
    tree["meta"] = {**META, "output_dir": str(out / "first")}
    tree["train"].update(num_workers=2, torch_threads=1)
    tree["ray"]["storage_path"] = str(out / "ray")  # shared with the resumed run below
    cfg = RecConfig.model_validate(tree)
    return cfg, meta_train(cfg, corpus=corpus, init=small_backbone)


def test_reptile_step_interpolates_towards_adapted_weights(small_backbone, corpus):
    """eps=1 lands on the adapted weights theta'; eps=0.5 halfway: theta + 0.5 (theta' - theta)."""
    torch.set_num_threads(1)
    mcfg = MetaConfig(**META)
    embs = [torch.from_numpy(t.text_emb) for t in corpus.tenants]
    theta = _vec(small_backbone.model)
    out = {}
    for eps in (1.0, 0.5):
        model = copy.deepcopy(small_backbone.model)
        before, after = reptile_step(CorpusLoss(model), torch.optim.SGD(model.parameters(), lr=eps), corpus, embs, mcfg, 0, 0)
        assert after < before  # the inner loop fits the support users
        out[eps] = _vec(model)
    assert not torch.equal(out[1.0], theta)
    torch.testing.assert_close(out[0.5], (theta + out[1.0]) / 2, atol=1e-6, rtol=0)


def test_episode_plan_splits_tenants_by_rank_and_is_layout_independent(corpus):
    mcfg = MetaConfig(**META)
    ranks = [episode_plan(corpus, mcfg, 0, 3, r, 2)[0] for r in range(2)]
    assert {t for t, _ in ranks} == {0, 1}  # the two workers adapt to different tenants
    for t, rows in ranks:
        lo = sum(len(x.train_inputs) for x in corpus.tenants[:t])
        assert len(rows) == 32 and len(set(rows)) == 32 and rows.min() >= lo and rows.max() < lo + len(corpus.tenants[t].train_inputs)
    one_worker = episode_plan(corpus, mcfg.model_copy(update={"episodes_per_iteration": 2}), 0, 3, 0, 1)
    for (t1, r1), (t2, r2) in zip(ranks, one_worker):
        assert t1 == t2 and np.array_equal(r1, r2)


def test_meta_run_publishes_a_backbone(meta_run, small_backbone):
    cfg, res = meta_run
    assert res.epochs == 2 and [h["epoch"] for h in res.history] == [0, 1]
    manifest = read_manifest(res.checkpoint, kind="backbone")
    assert manifest["meta"]["init_from"] == small_backbone.checksum
    assert manifest["meta"]["inner_steps"] == 5 and manifest["meta"]["num_workers"] == 2
    loaded = load_backbone(res.checkpoint)
    assert loaded.cfg.model == small_backbone.cfg.model and loaded.cfg.meta == cfg.meta
    assert not torch.equal(_vec(loaded.model), _vec(small_backbone.model))
    assert 0.0 < res.test_metrics["all"]["ndcg@10"] <= 1.0


def test_workers_average_their_deltas(meta_run, small_backbone, corpus):
    """Both ranks hold identical weights after every epoch, and 2 workers x 1 episode equals
    1 process x 2 episodes (same slots): only true if the deltas are all-reduced and averaged."""
    cfg, res = meta_run
    for h in res.history:
        digests = h["rank_weight_digests"].split(",")
        assert len(digests) == 2 and h["weights_in_sync"] and len(set(digests)) == 1
    expected = _in_process(small_backbone, corpus, cfg, cfg.meta.outer_epochs)
    torch.testing.assert_close(_vec(load_backbone(res.checkpoint).model), expected, atol=1e-5, rtol=0)


def test_lora_adaptation_plain_vs_meta(meta_run, small_backbone, new_tenant, record_property):
    """Same K=32 users, held-out users and 3-epoch LoRA budget from both inits; numbers recorded."""
    _, res = meta_run
    meta = load_backbone(res.checkpoint)
    emb = encode_items(list(new_tenant.items.text), small_backbone.cfg.text)
    acfg = AdaptConfig(method="lora", k_users=32, epochs=3, lr=5e-3, patience=3, torch_threads=1)
    split = k_shot_split(new_tenant, acfg.k_users, None, acfg.seed, None, acfg.eval_fraction)
    plain_r = adapt_tenant(small_backbone, new_tenant, acfg, text_emb=emb, split=split)
    meta_r = adapt_tenant(meta, new_tenant, acfg, text_emb=emb, split=split)
    for name, r in (("plain", plain_r), ("meta", meta_r)):
        assert r.epochs >= 1 and 0.0 <= r.valid["ndcg@10"] <= 1.0
        record_property(f"{name}_valid_ndcg@10", r.valid["ndcg@10"])
        record_property(f"{name}_test_ndcg@10", r.test["ndcg@10"])
    print(f"\nLoRA K=32 3 epochs on unseen tenant: valid NDCG@10 plain={plain_r.valid['ndcg@10']:.4f} "
          f"meta={meta_r.valid['ndcg@10']:.4f}; test plain={plain_r.test['ndcg@10']:.4f} meta={meta_r.test['ndcg@10']:.4f}")


def test_a_longer_run_resumes_from_the_last_checkpoint(meta_run, small_backbone, corpus, tmp_path):
    """Same run name and storage, one more outer epoch: only epoch 2 runs, and the result equals an
    uninterrupted 3-epoch run (episodes are seeded by position, not by process)."""
    cfg, _ = meta_run
    more = cfg.model_copy(update={"meta": cfg.meta.model_copy(update={"outer_epochs": 3, "output_dir": str(tmp_path)})})
    res = meta_train(more, corpus=corpus, init=small_backbone)
    assert [h["epoch"] for h in res.history] == [0, 1, 2] and res.history[-1]["resumed_from"] == 1
    torch.testing.assert_close(_vec(load_backbone(res.checkpoint).model), _in_process(small_backbone, corpus, cfg, 3), atol=1e-5, rtol=0)


def test_meta_config_and_cli_errors(capsys):
    with pytest.raises(ConfigError, match="meta.inner_stepz"):
        load_config(None, ["meta.inner_stepz=3"])
    with pytest.raises(ConfigError, match="meta.outer_lr"):
        load_config(None, ["meta.outer_lr=2"])
    with pytest.raises(SystemExit) as e:
        cli_main(["meta"])
    assert e.value.code == 2 and "--backbone" in capsys.readouterr().err
