"""Pruning and distillation mechanics on a tiny backbone and corpus (quality lives in bench/)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rec.compression import DistillLoss, ffn_prune, magnitude_prune, make_permanent, make_student, recover, sparsity
from rec.config import load_config
from rec.models.backbone import build_backbone
from rec.models.layers import CausalSelfAttention
from rec.training.batches import PAD
from rec.training.corpus import build_corpus
from rec.training.loop import CorpusLoss, iterate_batches
from tests.conftest import tiny_overrides


@pytest.fixture(scope="module")
def setup(tmp_path_factory, text_cache):
    cfg = load_config(None, tiny_overrides(tmp_path_factory.mktemp("c"), text_cache, **{"data.synthetic.tenants": 1}))
    torch.manual_seed(0)
    model = build_backbone(cfg.model).eval()
    corpus = build_corpus(cfg)
    return model, corpus


def _users(model, corpus) -> torch.Tensor:
    t = corpus.tenants[0]
    idx = torch.from_numpy(t.test.histories[:16])
    with torch.no_grad():
        cat = model.item_representations(torch.from_numpy(t.text_emb))
        return model.user_vector(cat[idx.clamp(min=0)], idx == PAD)


def _eval_loss(model, corpus) -> float:
    """Training loss over every training row, dropout off: deterministic, unlike the running mean
    of a training epoch (whose dropout draws can hide a small gain over 2 short epochs)."""
    embs = [torch.from_numpy(t.text_emb) for t in corpus.tenants]
    batch = next(iterate_batches(corpus, np.arange(corpus.num_train_rows), corpus.num_train_rows))
    with torch.no_grad():
        return float(CorpusLoss(model.eval())(*batch, corpus.tenants, embs))


def test_magnitude_pruning_survives_recovery(setup):
    model, corpus = setup
    pruned = magnitude_prune(model, 0.5)
    adaptor_before = {k: v.clone() for k, v in pruned.adaptor.state_dict().items()}
    before = _eval_loss(pruned, corpus)
    recover(pruned, corpus, epochs=2, lr=1e-3)
    make_permanent(pruned)
    assert sparsity(pruned) == pytest.approx(0.5, abs=0.01)  # masks held through the fine-tune
    assert all(torch.equal(v, adaptor_before[k]) for k, v in pruned.adaptor.state_dict().items())  # catalogs unchanged
    assert _eval_loss(pruned, corpus) < before and sparsity(model) < 0.01  # the original is untouched
    with pytest.raises(ValueError, match="amount"):
        magnitude_prune(model, 1.0)


def test_ffn_pruning_shrinks_and_keep_all_is_exact(setup):
    model, corpus = setup
    same = ffn_prune(model, 1.0)
    assert torch.equal(_users(same, corpus), _users(model, corpus))
    half = ffn_prune(model, 0.5)
    hidden = model.blocks[0].ffn.fc1.out_features
    assert half.blocks[0].ffn.fc1.out_features == hidden // 2 == half.blocks[0].ffn.fc2.in_features
    assert sum(p.numel() for p in half.parameters()) < sum(p.numel() for p in model.parameters())
    assert _users(half, corpus).shape == _users(model, corpus).shape


def test_distillation_loss(setup):
    model, corpus = setup
    embs = [torch.from_numpy(t.text_emb) for t in corpus.tenants]
    batch = next(iterate_batches(corpus, np.arange(32), 32))
    # a student identical to its teacher has zero KL: the loss is exactly alpha * CE
    twin = make_student(model, list(range(len(model.blocks))))
    kd = DistillLoss(twin.eval(), model, alpha=0.3)(*batch, corpus.tenants, embs)
    ce = CorpusLoss(model.eval())(*batch, corpus.tenants, embs)
    assert kd.item() == pytest.approx(0.3 * ce.item(), rel=1e-5)
    student = make_student(model, [1])
    assert len(student.blocks) == 1 and len(model.blocks) == 2
    whole = next(iterate_batches(corpus, np.arange(corpus.num_train_rows), corpus.num_train_rows))

    def distill_loss() -> float:  # dropout off: deterministic, see _eval_loss
        with torch.no_grad():
            return float(DistillLoss(student.eval(), model)(*whole, corpus.tenants, embs))

    before = distill_loss()
    recover(student, corpus, loss_model=DistillLoss(student, model), epochs=3, lr=2e-3)
    assert distill_loss() < before
    assert not any(p.grad is not None for p in model.parameters())  # the teacher never trains
    with pytest.raises(ValueError, match="block indices"):
        make_student(model, [5])


def test_student_dropout_override_leaves_the_teacher_alone(setup):
    model, _ = setup
    def rates(m: torch.nn.Module) -> list[float]:
        return [x.p if isinstance(x, torch.nn.Dropout) else x.dropout
                for x in m.modules() if isinstance(x, (torch.nn.Dropout, CausalSelfAttention))]

    before = rates(model)
    assert any(r > 0 for r in before)  # the override has something to change
    quiet = make_student(model, [0], dropout=0.0)
    assert rates(quiet) and all(r == 0.0 for r in rates(quiet))
    assert rates(model) == before
    assert set(rates(make_student(model, [0]))) == set(before)  # default: the teacher's rates
    with pytest.raises(ValueError, match="dropout"):
        make_student(model, [0], dropout=1.0)


def test_recipe_returns_variants_with_their_own_checksums(setup):
    import hashlib

    from safetensors.torch import save

    from rec.compression import CompressionRecipe, compress_backbone
    from rec.training.checkpoint import LoadedBackbone

    model, corpus = setup
    teacher = LoadedBackbone(model, load_config(None, []), {}, {"kind": "backbone", "text_model": "x"}, "teacher-sha")
    variants = compress_backbone(teacher, corpus, CompressionRecipe(recovery_epochs=1, student_epochs=1))
    assert sorted(variants) == ["distill-1L", "ffn-50", "magnitude-50"]
    for name, v in variants.items():
        weights = {k: t.detach().cpu().contiguous() for k, t in v.model.state_dict().items()}
        assert v.checksum == hashlib.sha256(save(weights)).hexdigest() != teacher.checksum
        assert v.manifest["compressed_from"] == "teacher-sha" and v.manifest["compression"].startswith(name)
        assert v.manifest["text_model"] == "x" and v.cfg is teacher.cfg
    assert len(variants["distill-1L"].model.blocks) == 1 and sparsity(variants["magnitude-50"].model) == pytest.approx(0.5, abs=0.01)
