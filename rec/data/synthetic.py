"""The embedded, license-clean default dataset: several synthetic tenants with real-word item text.

Generative story (all randomness from ``numpy.random.default_rng``, seeded per tenant with
``[cfg.seed, tenant_index]`` so results are identical across runs and machines):

* ``cfg.topics`` interest topics (hiking, cooking, jazz, ...) are **shared by all tenants**; each
  has an English vocabulary, so a sentence encoder places same-topic items close together and a
  model pretrained on some tenants transfers to an unseen one through text alone.
* Each tenant is a different kind of shop (``books``, ``courses``, ``podcasts``, ...) with its own
  product nouns, brand names and topic mix. Its items belong to one topic each and are grouped
  into short series ("... vol. 1", "vol. 2", ...) laid out in a fixed order per topic, with
  Zipf-like popularity.
* A user likes 1-2 topics. After each item, with probability ``P_NEXT_IN_SERIES`` the next item
  is the following item of the same topic (order matters: a sequential model beats popularity),
  with ``P_SAME_TOPIC`` a popular item of the same topic, otherwise a popular item of a topic
  drawn from the user's mixture. Timestamps increase.

Example::

    tenants = generate_tenants(SyntheticConfig(tenants=2, users_per_tenant=100))
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rec.config import SyntheticConfig
from rec.data.schema import Tenant

__all__ = [
    "TOPICS",
    "SHOP_KINDS",
    "P_NEXT_IN_SERIES",
    "P_SAME_TOPIC",
    "Topic",
    "SyntheticTenant",
    "generate_synthetic",
    "generate_tenants",
]

P_NEXT_IN_SERIES = 0.6
P_SAME_TOPIC = 0.15
ZIPF_EXPONENT = 1.0
_T0 = 1_600_000_000  # 2020-09-13, start of the synthetic clock


@dataclass(frozen=True)
class Topic:
    """A shared interest: its name, topic nouns and adjectives (all lower-case English)."""

    name: str
    nouns: tuple[str, ...]
    adjectives: tuple[str, ...]

    @property
    def words(self) -> frozenset[str]:
        return frozenset(self.nouns) | frozenset(self.adjectives) | frozenset(self.name.split())


def _t(name: str, nouns: str, adjectives: str) -> Topic:
    return Topic(name, tuple(nouns.split()), tuple(adjectives.split()))


TOPICS: tuple[Topic, ...] = (
    _t("hiking", "trail summit backpack compass ridge trekking", "rugged alpine wilderness mountain"),
    _t("cooking", "recipe skillet stew spices kitchen roast", "homemade savory hearty rustic"),
    _t("jazz", "saxophone trumpet bebop swing improvisation trio", "smoky soulful bluesy vintage"),
    _t("science fiction", "starship galaxy android cyborg spaceship alien", "futuristic cosmic interstellar dystopian"),
    _t("gardening", "compost seedlings roses vegetables greenhouse soil", "organic blooming leafy green"),
    _t("photography", "camera lens portrait exposure tripod darkroom", "cinematic analog candid monochrome"),
    _t("fitness", "workout cardio strength yoga muscles stretching", "athletic intense energizing lean"),
    _t("travel", "passport itinerary voyage islands backpacking airport", "exotic wandering coastal tropical"),
    _t("baking", "sourdough pastry bread croissant oven dough", "buttery golden flaky sweet"),
    _t("chess", "gambit checkmate endgame opening grandmaster bishop", "tactical strategic positional classic"),
    _t("astronomy", "telescope planets nebula constellations comet stargazing", "celestial lunar starry orbital"),
    _t("fishing", "angler trout lure tackle river fly-fishing", "freshwater patient riverside quiet"),
    _t("painting", "watercolor canvas brushes easel portrait acrylic", "colorful impressionist expressive abstract"),
    _t("cycling", "bicycle pedals peloton saddle gravel velodrome", "fast aerodynamic endurance speedy"),
    _t("classical music", "symphony orchestra violin sonata concerto piano", "baroque romantic elegant orchestral"),
    _t("coffee", "espresso barista roast beans latte brewing", "aromatic bold velvety roasted"),
)

# Kinds of shop a tenant can be, with topic-neutral product nouns ("jazz podcast", "hiking course").
SHOP_KINDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("books", ("guide", "handbook", "novel", "anthology")),
    ("courses", ("online course", "workshop", "masterclass", "bootcamp")),
    ("podcasts", ("podcast", "audio show", "radio series", "interview series")),
    ("videos", ("documentary", "video series", "film", "tutorial video")),
    ("magazines", ("magazine", "journal", "newsletter", "almanac")),
    ("posters", ("poster", "art print", "wall calendar", "postcard set")),
    ("events", ("meetup", "festival", "weekend retreat", "club night")),
    ("apps", ("app", "tracker", "planner", "mobile game")),
)

_SYLLABLES = ("nor", "vik", "ta", "lo", "ra", "bel", "mon", "den", "sa", "ki", "ro", "va", "lin", "tor", "ga", "mi",
              "zen", "ka", "lu", "fer", "dra", "po", "sel", "qui", "ar", "es", "bo", "nia")  # fmt: skip


@dataclass(frozen=True)
class SyntheticTenant:
    """A generated tenant plus its latent structure (for tests and analysis).

    Attributes:
        tenant: The :class:`Tenant` (what every other module reads).
        item_topic: ``(N,)`` int topic index (into :data:`TOPICS`) of every dense item.
        next_in_series: ``(N,)`` int dense index of the item that follows each item in its
            topic's order (wraps to the topic's first item).
        popularity: ``(N,)`` float Zipf-like popularity weight of each item within its topic.
        user_topics: ``U`` tuples of the topic indices each user likes.
    """

    tenant: Tenant
    item_topic: np.ndarray
    next_in_series: np.ndarray
    popularity: np.ndarray
    user_topics: list[tuple[int, ...]]


def _letters(i: int) -> str:
    """0 -> 'a', 25 -> 'z', 26 -> 'ba', ...: a short id prefix per tenant."""
    s = ""
    while True:
        s = chr(ord("a") + i % 26) + s
        i //= 26
        if i == 0:
            return s


def _tenant_name(i: int) -> str:
    kind = SHOP_KINDS[i % len(SHOP_KINDS)][0]
    return kind if i < len(SHOP_KINDS) else f"{kind}-{i // len(SHOP_KINDS) + 1}"


def _brands(rng: np.random.Generator, n: int) -> list[str]:
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        k = int(rng.integers(2, 4))
        name = "".join(_SYLLABLES[j] for j in rng.integers(0, len(_SYLLABLES), size=k)).capitalize()
        if name not in seen:
            seen.add(name)
            out.append(name)
    return out


def _allocate(weights: np.ndarray, total: int) -> np.ndarray:
    """Split ``total`` items over topics proportionally to ``weights`` (largest remainder)."""
    raw = weights / weights.sum() * total
    counts = np.floor(raw).astype(np.int64)
    order = np.argsort(-(raw - counts), kind="stable")
    counts[order[: total - counts.sum()]] += 1
    return counts


def _pick(cdf: np.ndarray, u: float) -> int:
    return min(int(np.searchsorted(cdf, u * cdf[-1], side="right")), len(cdf) - 1)


def _catalog(rng: np.random.Generator, tenant_idx: int, num_items: int, num_topics: int):
    """Items (text, topic, series successor, popularity) in a shuffled dense order."""
    _, products = SHOP_KINDS[tenant_idx % len(SHOP_KINDS)]
    mix = rng.random(num_topics) ** 2 + 0.05  # uneven topic mix, every topic possible
    counts = _allocate(mix, num_items)
    brands = _brands(rng, max(4, num_items // 25))
    texts: list[str] = []
    topic_of: list[int] = []
    local_order: list[np.ndarray] = []  # per topic: positions in `texts`, in series order
    for t, c in enumerate(counts):
        topic = TOPICS[t]
        start = len(texts)
        while len(texts) - start < c:
            length = min(int(rng.integers(3, 7)), c - (len(texts) - start))
            adj = topic.adjectives[rng.integers(len(topic.adjectives))]
            noun, tag = rng.choice(len(topic.nouns), size=2, replace=False)
            product = products[rng.integers(len(products))]
            brand = brands[rng.integers(len(brands))]
            for v in range(1, length + 1):
                texts.append(
                    f"{adj.capitalize()} {topic.nouns[noun]} {product}, vol. {v}, by {brand} - "
                    f"{topic.name}, {topic.nouns[tag]}"
                )
                topic_of.append(t)
        local_order.append(np.arange(start, start + c))
    # Shuffle dense ids so item order carries no information by itself.
    perm = rng.permutation(num_items)  # perm[old] = new dense index
    text = [""] * num_items
    for old, new in enumerate(perm):
        text[new] = texts[old]
    item_topic = np.empty(num_items, dtype=np.int64)
    item_topic[perm] = np.asarray(topic_of, dtype=np.int64)
    series_order = [perm[o] for o in local_order]  # per topic: dense ids in series order
    nxt = np.empty(num_items, dtype=np.int64)
    pop = np.empty(num_items, dtype=np.float64)
    pop_cdf: list[np.ndarray] = []
    for order in series_order:
        if len(order) == 0:
            pop_cdf.append(np.zeros(0))
            continue
        nxt[order] = np.roll(order, -1)
        w = 1.0 / (rng.permutation(len(order)) + 1.0) ** ZIPF_EXPONENT
        pop[order] = w
        pop_cdf.append(np.cumsum(w))
    return text, item_topic, nxt, pop, mix * (counts > 0), series_order, pop_cdf


def _generate_one(cfg: SyntheticConfig, tenant_idx: int) -> SyntheticTenant:
    rng = np.random.default_rng([cfg.seed, tenant_idx])
    text, item_topic, nxt, pop, mix, series_order, pop_cdf = _catalog(rng, tenant_idx, cfg.items_per_tenant, cfg.topics)
    prefix = _letters(tenant_idx)
    topic_cdf = np.cumsum(mix)
    seqs: list[np.ndarray] = []
    stamps: list[np.ndarray] = []
    user_topics: list[tuple[int, ...]] = []
    for _ in range(cfg.users_per_tenant):
        liked = [_pick(topic_cdf, rng.random())]
        if rng.random() < 0.5 and np.count_nonzero(mix) > 1:
            rest = mix.copy()
            rest[liked[0]] = 0.0
            liked.append(_pick(np.cumsum(rest), rng.random()))
        w1 = 1.0 if len(liked) == 1 else 0.5 + 0.3 * rng.random()
        length = int(rng.integers(cfg.min_len, cfg.max_len + 1))
        draws = rng.random((length, 3))  # (step, [action, topic, item])
        seq = np.empty(length, dtype=np.int64)
        cur = -1
        for step, (a, ut, ui) in enumerate(draws):
            if cur >= 0 and a < P_NEXT_IN_SERIES:
                cur = int(nxt[cur])
            else:
                if cur >= 0 and a < P_NEXT_IN_SERIES + P_SAME_TOPIC:
                    t = int(item_topic[cur])
                else:
                    t = liked[0] if ut < w1 else liked[1]
                cur = int(series_order[t][_pick(pop_cdf[t], ui)])
            seq[step] = cur
        seqs.append(seq)
        start = _T0 + int(rng.integers(0, 365 * 86400))
        stamps.append(start + np.cumsum(rng.integers(60, 3 * 86400, size=length)))
        user_topics.append(tuple(liked))
    ids = [f"{prefix}-{j + 1:04d}" for j in range(cfg.items_per_tenant)]
    users = [f"{prefix}-u{u + 1:04d}" for u in range(cfg.users_per_tenant)]
    tenant = Tenant.from_sequences(
        _tenant_name(tenant_idx), ids, text, users, seqs, stamps, source=f"synthetic(seed={cfg.seed})"
    )
    return SyntheticTenant(tenant, item_topic, nxt, pop, user_topics)


def generate_synthetic(cfg: SyntheticConfig) -> list[SyntheticTenant]:
    """Generate ``cfg.tenants`` tenants together with their latent structure.

    Tenant ``i`` depends only on ``(cfg.seed, i)`` and the sizes, so adding tenants leaves the
    earlier ones unchanged.

    Raises:
        ValueError: ``cfg.topics`` exceeds the built-in vocabularies or ``min_len > max_len``.
    """
    if cfg.topics > len(TOPICS):
        raise ValueError(f"synthetic.topics={cfg.topics}: at most {len(TOPICS)} topics are built in; lower it")
    if cfg.min_len > cfg.max_len:
        raise ValueError(
            f"synthetic.min_len={cfg.min_len} > synthetic.max_len={cfg.max_len}: set min_len <= max_len"
        )
    return [_generate_one(cfg, i) for i in range(cfg.tenants)]


def generate_tenants(cfg: SyntheticConfig) -> list[Tenant]:
    """The default dataset: ``cfg.tenants`` tenants of ``cfg.users_per_tenant`` users and
    ``cfg.items_per_tenant`` items each (see the module doc for the generative story).

    Raises:
        ValueError: As :func:`generate_synthetic`.
    """
    return [s.tenant for s in generate_synthetic(cfg)]
