"""Leave-one-out and K-shot splits: determinism, nesting, disjointness, hand-made targets."""

from __future__ import annotations

import numpy as np
import pytest

from rec.data.schema import DataError, Tenant
from rec.data.splits import k_shot_split, leave_one_out


def _tenant(seqs: list[list[int]], num_items: int = 10, name: str = "t") -> Tenant:
    ids = [f"i{j}" for j in range(num_items)]
    ts = [[100 * u + j for j in range(len(s))] for u, s in enumerate(seqs)]
    return Tenant.from_sequences(name, ids, [f"item {j}" for j in ids], [f"u{u}" for u in range(len(seqs))], seqs, ts)


def _random_tenant(num_users: int = 300, seed: int = 0) -> Tenant:
    rng = np.random.default_rng(seed)
    seqs = [list(rng.integers(0, 50, size=rng.integers(2, 12))) for _ in range(num_users)]
    return _tenant(seqs, num_items=50)


# --- leave-one-out ----------------------------------------------------------------------------
def test_loo_targets_on_hand_made_tenant():
    t = _tenant([[1, 2, 3, 4], [5, 6], [7, 8, 9]])
    s = leave_one_out(t)
    assert s.user_rows.tolist() == [0, 2]
    assert s.short_rows.tolist() == [1]
    assert [x.tolist() for x in s.train_seqs] == [[1, 2], [7]]
    assert s.valid_targets.tolist() == [3, 8]
    assert s.test_targets.tolist() == [4, 9]
    rows, hist, tgt = s.eval_examples("valid")
    assert rows.tolist() == [0, 2] and [h.tolist() for h in hist] == [[1, 2], [7]] and tgt.tolist() == [3, 8]
    rows, hist, tgt = s.eval_examples("test")
    assert [h.tolist() for h in hist] == [[1, 2, 3], [7, 8]] and tgt.tolist() == [4, 9]


def test_loo_train_tenant_has_no_targets():
    t = _tenant([[1, 2, 3, 4], [5, 6], [7, 8, 9]])
    tr = leave_one_out(t).train_tenant()
    assert tr.users.tolist() == ["u0", "u1", "u2"]
    assert [x.tolist() for x in tr.sequences()] == [[1, 2], [5, 6], [7]]
    assert tr.timestamps.tolist() == [0, 1, 100, 101, 200]
    assert leave_one_out(t).train_tenant(include_short=False).users.tolist() == ["u0", "u2"]


def test_loo_sampling_same_users_for_valid_and_test():
    s = leave_one_out(_random_tenant())
    rv, _, _ = s.eval_examples("valid", max_users=20, seed=5)
    rt, _, _ = s.eval_examples("test", max_users=20, seed=5)
    assert len(rv) == 20 and rv.tolist() == rt.tolist()
    assert rv.tolist() != s.eval_examples("test", max_users=20, seed=6)[0].tolist()
    assert len(s.eval_examples("test", max_users=10**6)[0]) == len(s)


def test_loo_errors():
    with pytest.raises(DataError, match=">= 3"):
        leave_one_out(_tenant([[1, 2], [3]]))
    s = leave_one_out(_tenant([[1, 2, 3]]))
    with pytest.raises(ValueError, match="'valid' or 'test'"):
        s.eval_examples("train")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_users"):
        _ = leave_one_out(_random_tenant()).eval_examples("test", max_users=0)


# --- K-shot -----------------------------------------------------------------------------------
def test_kshot_deterministic_and_seed_dependent():
    t = _random_tenant()
    a, b = k_shot_split(t, 16, seed=1), k_shot_split(t, 16, seed=1)
    assert a.train_rows.tolist() == b.train_rows.tolist()
    assert a.eval_rows.tolist() == b.eval_rows.tolist()
    assert a.train.content_hash() == b.train.content_hash()
    c = k_shot_split(t, 16, seed=2)
    assert c.train_rows.tolist() != a.train_rows.tolist()
    assert c.eval_rows.tolist() != a.eval_rows.tolist()


def test_kshot_nested_fixed_eval_and_disjoint():
    t = _random_tenant()
    splits = {k: k_shot_split(t, k, seed=0) for k in (16, 64, 128, None)}
    eval_rows = splits[16].eval_rows.tolist()
    for k, s in splits.items():
        assert s.eval_rows.tolist() == eval_rows, f"eval users changed for K={k}"
        assert not set(s.train_rows.tolist()) & set(eval_rows)
        assert s.train.num_users == len(s.train_rows)
    assert splits[16].train_rows.tolist() == splits[64].train_rows[:16].tolist()
    assert set(splits[64].train_rows.tolist()) <= set(splits[128].train_rows.tolist())
    # n_first does not change who is chosen
    assert k_shot_split(t, 16, n_first=2, seed=0).eval_rows.tolist() == eval_rows
    # all held-out users are evaluable, and 20% of evaluable users are held out by default
    lens = t.lengths()
    assert (lens[splits[16].eval_rows] >= 3).all()
    assert len(eval_rows) == round(0.2 * int((lens >= 3).sum()))
    # the full pool = every non-held-out user with >= 2 interactions
    assert len(splits[None].train_rows) == int(((lens >= 2)).sum()) - len(eval_rows)


def test_kshot_train_tenant_and_n_first():
    t = _random_tenant()
    s = k_shot_split(t, 32, n_first=3, seed=0)
    for j, u in enumerate(s.train_rows):
        full = t.sequence(int(u))
        assert s.train.sequence(j).tolist() == full[:3].tolist()
        assert s.train.users[j] == t.users[u]
    assert s.train.name == t.name


def test_kshot_eval_examples_are_loo_on_held_out_users():
    t = _tenant([[0, 1, 2, 3]] * 10 + [[4, 5, 6]] * 10)
    s = k_shot_split(t, 4, seed=0, num_eval_users=5)
    rows, hist, tgt = s.eval_examples("test")
    assert rows.tolist() == s.eval_rows.tolist() and len(rows) == 5
    for r, h, y in zip(rows, hist, tgt):
        seq = t.sequence(int(r))
        assert h.tolist() == seq[:-1].tolist() and y == seq[-1]
    _, vh, vy = s.eval_examples("valid")
    assert all(y == t.sequence(int(r))[-2] for r, y in zip(rows, vy))


def test_kshot_errors():
    t = _random_tenant(num_users=50)
    with pytest.raises(ValueError, match="only .* training users available"):
        k_shot_split(t, 10_000)
    with pytest.raises(ValueError, match="k_users=0"):
        k_shot_split(t, 0)
    with pytest.raises(ValueError, match="n_first"):
        k_shot_split(t, 4, n_first=1)
    with pytest.raises(ValueError, match="eval_fraction"):
        k_shot_split(t, 4, eval_fraction=1.5)
    with pytest.raises(ValueError, match="num_eval_users"):
        k_shot_split(t, 4, num_eval_users=10_000)
    with pytest.raises(ValueError, match="no training users left"):
        k_shot_split(_tenant([[1, 2, 3]] * 3), None, num_eval_users=3)
