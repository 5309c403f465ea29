"""The synthetic default dataset: sizes, determinism, text and learnable sequential structure."""

from __future__ import annotations

import time
from collections import Counter, defaultdict

import numpy as np
import pytest

from rec.config import SyntheticConfig
from rec.data.schema import TENANT_ID_RE
from rec.data.synthetic import TOPICS, generate_synthetic, generate_tenants

SMALL = SyntheticConfig(tenants=3, users_per_tenant=120, items_per_tenant=80, topics=6, seed=7)


@pytest.fixture(scope="module")
def default_world():
    return generate_synthetic(SyntheticConfig())


def test_counts_match_config_and_tenants_valid():
    tenants = generate_tenants(SMALL)
    assert len(tenants) == SMALL.tenants
    assert len({t.name for t in tenants}) == SMALL.tenants
    for t in tenants:
        assert TENANT_ID_RE.match(t.name)
        assert t.num_users == SMALL.users_per_tenant and t.num_items == SMALL.items_per_tenant
        lens = t.lengths()
        assert lens.min() >= SMALL.min_len and lens.max() <= SMALL.max_len
        assert len(set(t.items.ids.tolist())) == t.num_items and len(set(t.users.tolist())) == t.num_users
        for u in range(t.num_users):
            ts = t.timestamps[t.offsets[u] : t.offsets[u + 1]]
            assert (np.diff(ts) > 0).all()
    assert tenants[0].items.ids[0] == "a-0001" and tenants[1].items.ids[0] == "b-0001"
    # different tenants have different catalogs
    assert tenants[0].items.text != tenants[1].items.text


def test_deterministic_and_seed_dependent():
    a = [t.content_hash() for t in generate_tenants(SMALL)]
    b = [t.content_hash() for t in generate_tenants(SMALL)]
    c = [t.content_hash() for t in generate_tenants(SMALL.model_copy(update={"seed": 8}))]
    assert a == b
    assert all(x != y for x, y in zip(a, c))
    # tenant i depends only on (seed, i): adding tenants keeps the earlier ones
    more = generate_tenants(SMALL.model_copy(update={"tenants": 4}))
    assert [t.content_hash() for t in more[:3]] == a


def test_text_non_empty_and_topic_words_present():
    for w in generate_synthetic(SMALL):
        for text, topic in zip(w.tenant.items.text, w.item_topic):
            assert text.strip()
            words = set(text.lower().replace(",", " ").split())
            assert words & TOPICS[topic].words, text
        assert set(w.item_topic.tolist()) <= set(range(SMALL.topics))
        for liked in w.user_topics:
            assert 1 <= len(liked) <= 2 and len(set(liked)) == len(liked)


def test_topics_are_shared_across_tenants():
    ws = generate_synthetic(SMALL)
    present = [set(w.item_topic.tolist()) for w in ws]
    assert set.intersection(*present), "tenants should share topics for zero-shot transfer"


def test_users_stay_within_their_topics():
    w = generate_synthetic(SMALL)[0]
    t = w.tenant
    own = []
    for u in range(t.num_users):
        seq_topics = w.item_topic[t.sequence(u)]
        own.append(np.isin(seq_topics, w.user_topics[u]).mean())
    assert np.mean(own) > 0.9


def test_bigram_beats_popularity(default_world):
    for w in default_world:
        t = w.tenant
        succ: dict[int, Counter] = defaultdict(Counter)
        pop: Counter = Counter()
        for u in range(t.num_users):
            train = t.sequence(u)[:-1].tolist()
            pop.update(train)
            for a, b in zip(train, train[1:]):
                succ[a][b] += 1
        most_popular = pop.most_common(1)[0][0]
        bigram_hits = pop_hits = 0
        for u in range(t.num_users):
            seq = t.sequence(u)
            prev, target = int(seq[-2]), int(seq[-1])
            guess = succ[prev].most_common(1)[0][0] if succ[prev] else most_popular
            bigram_hits += guess == target
            pop_hits += most_popular == target
        bigram_hr, pop_hr = bigram_hits / t.num_users, pop_hits / t.num_users
        assert bigram_hr > pop_hr + 0.3, (t.name, bigram_hr, pop_hr)


def test_default_is_fast():
    start = time.perf_counter()
    generate_tenants(SyntheticConfig())
    assert time.perf_counter() - start < 1.5


def test_config_errors():
    with pytest.raises(ValueError, match="min_len"):
        generate_tenants(SyntheticConfig(min_len=10, max_len=5))
    with pytest.raises(ValueError, match="topics"):
        generate_tenants(SyntheticConfig(topics=len(TOPICS) + 1))


def test_many_tenants_get_valid_unique_names():
    ts = generate_tenants(SyntheticConfig(tenants=30, users_per_tenant=4, items_per_tenant=10, min_len=3, max_len=4))
    names = [t.name for t in ts]
    assert len(set(names)) == 30 and all(TENANT_ID_RE.match(n) for n in names)
    assert ts[26].items.ids[0] == "ba-0001"
