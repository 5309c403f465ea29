"""Tenant registry of a serving replica: a memory-bounded LRU of tenant bundles with hot reload.

``get(tenant)`` returns the bundle the tenant's version pointer names. At most every
``poll_interval_s`` it re-stats the pointer (one ``stat`` call); when the pointer was replaced it
loads the new version *before* swapping it in, so requests already holding the old
:class:`ServedTenant` finish on the old version and a broken publish never replaces a good one.

A version that fails to load (corrupt file, wrong backbone) is never served: the tenant keeps its
current version, or falls back to the newest older version that loads, and ``status`` says why.

Concurrency: the lock guards only the in-memory maps (held for dict operations, never for I/O).
Reading, hashing and validating a bundle happen outside it, in the thread that asked first; other
threads asking for the *same* tenant wait on that load's future, while threads asking for other
tenants go on: a slow load never delays a held tenant, nor the load of another one.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rec.io.artifacts import ArtifactError
from rec.serving.bundles import TenantBundle
from rec.serving.store import ArtifactRoot

__all__ = ["TenantRegistry", "ServedTenant", "UnknownTenant", "TenantUnavailable"]


class UnknownTenant(KeyError):
    """No version pointer: the tenant was never published (HTTP 404)."""


class TenantUnavailable(RuntimeError):
    """The tenant is published but no version of it loads (HTTP 503, reported in status)."""


@dataclass(frozen=True)
class ServedTenant:
    """One loaded tenant version. Immutable: a hot publish swaps in a new object."""

    tenant: str
    version: int
    bundle: TenantBundle
    fallback_reason: str | None = None

    @property
    def nbytes(self) -> int:
        return self.bundle.nbytes


@dataclass
class _Entry:
    served: ServedTenant
    stamp: tuple[int, int] | None
    checked_at: float
    failed: dict[int, str] = field(default_factory=dict)


class TenantRegistry:
    """LRU of loaded tenant bundles bounded by bytes (and optionally by count), following each
    tenant's version pointer.

    Args:
        store: The artifact root.
        load_bundle: ``path -> TenantBundle`` (``rec.serving.bundles.load_tenant_bundle``); must
            raise on a corrupt or incomplete folder. Injected so other loaders can be swapped in.
        max_bytes: Budget for loaded bundles; least recently used tenants are dropped beyond it
            (the tenant being loaded is always kept, even if alone it exceeds the budget).
        max_tenants: Optional bound on the number of tenants held (LRU beyond it).
        poll_interval_s: How often a tenant's pointer is re-checked (0 = every request).
        validate: Optional ``bundle -> None`` raising ``ArtifactError`` when the bundle does not
            fit the served model (e.g. trained on another backbone).
        clock: Monotonic clock (tests may pass their own).
    """

    def __init__(
        self,
        store: ArtifactRoot,
        load_bundle: Callable[[Path], TenantBundle],
        max_bytes: int = 256 << 20,
        poll_interval_s: float = 1.0,
        validate: Callable[[TenantBundle], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_tenants: int | None = None,
    ) -> None:
        self.store, self._load_bundle, self.max_bytes = store, load_bundle, int(max_bytes)
        self.max_tenants = max_tenants
        self.poll_interval_s, self._validate, self._clock = float(poll_interval_s), validate, clock
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        # Tenants with no loadable version, by pointer stamp: not re-verified until the pointer moves.
        self._unavailable: dict[str, tuple[tuple[int, int], str]] = {}
        self._loading: dict[str, Future[ServedTenant]] = {}  # one load per tenant at a time
        self._lock = threading.Lock()  # guards the three maps and the counters; never held during I/O
        self.loads = 0
        self.evictions = 0

    # --- public --------------------------------------------------------------------------------
    def get(self, tenant: str) -> ServedTenant:
        """The version to serve now; loads it (outside the lock) when it is not held or was republished.

        Raises:
            ValueError: Invalid tenant id.
            UnknownTenant: The tenant has no version pointer.
            TenantUnavailable: No version of the tenant loads.
        """
        now = self._clock()
        served, stamp = self._held(tenant, now)
        if served is not None:
            return served
        if stamp is None:
            self.evict(tenant)
            raise UnknownTenant(f"unknown tenant {tenant!r}: publish a catalog first (`rec publish --tenant {tenant}`)")
        with self._lock:
            down = self._unavailable.get(tenant)
            if down is not None and down[0] == stamp:
                raise TenantUnavailable(down[1])
            future = self._loading.get(tenant)
            owner = future is None
            if owner:
                future = self._loading[tenant] = Future()
                entry = self._cache.get(tenant)
        if not owner:
            return future.result()  # another thread is loading this tenant: share its result
        try:
            served = self._load(tenant, entry, stamp, now)
        except BaseException as e:
            future.set_exception(e)
            raise
        else:
            future.set_result(served)
            return served
        finally:
            with self._lock:
                self._loading.pop(tenant, None)

    def cached(self, tenants: Iterable[str]) -> dict[str, ServedTenant] | None:
        """What :meth:`get` returns for each of ``tenants``, but only when no tenant needs a load:
        each is held, and its pointer is unchanged (at most one ``stat`` each, as ``get``).

        Never loads: returns None when some tenant is not held, was republished, or has no
        pointer. The serving loop then resolves on a worker thread with :meth:`get`, which loads
        and reports errors. Loads of other tenants in progress do not delay it (they run outside
        the lock).
        """
        now, out = self._clock(), {}
        for tenant in tenants:
            served, _ = self._held(tenant, now, held_only=True)
            if served is None:
                return None
            out[tenant] = served
        return out

    def status(self, tenant: str) -> dict[str, Any]:
        """What a replica serves for ``tenant`` (loads it if needed). Raises like :meth:`get`."""
        served = self.get(tenant)
        with self._lock:
            entry = self._cache.get(tenant)
            failed = dict(entry.failed) if entry else {}
        try:
            published = self.store.current_version(tenant)
        except ArtifactError:
            published = None  # unreadable pointer: fallback_reason says so
        return {
            "tenant": tenant,
            "version": served.version,
            "published_version": published,
            "fallback_reason": served.fallback_reason,
            "failed_versions": {f"v{v}": msg for v, msg in sorted(failed.items())},
        }

    def loaded(self) -> dict[str, int]:
        """Tenant -> bytes of the bundles held now."""
        with self._lock:
            return {t: e.served.nbytes for t, e in self._cache.items()}

    @property
    def nbytes(self) -> int:
        return sum(self.loaded().values())

    def evict(self, tenant: str) -> None:
        """Drop ``tenant``'s bundle now (requests already holding it finish on it)."""
        with self._lock:
            self._drop(tenant)

    # --- internals -----------------------------------------------------------------------------
    def _held(self, tenant: str, now: float, held_only: bool = False) -> tuple[ServedTenant | None, tuple[int, int] | None]:
        """``(served, pointer stamp)``: ``served`` is the held version when it is still current
        (checked within ``poll_interval_s``, or its pointer unchanged), else None. The stamp is
        None when it was not read (fresh, or ``held_only`` and nothing held) or the pointer is gone.
        The pointer ``stat`` runs outside the lock."""
        with self._lock:
            entry = self._cache.get(tenant)
            if entry is not None and now - entry.checked_at < self.poll_interval_s:
                self._cache.move_to_end(tenant)
                return entry.served, None
        if entry is None and held_only:
            return None, None
        stamp = self.store.pointer_stamp(tenant)
        with self._lock:
            entry = self._cache.get(tenant)
            if entry is not None and stamp is not None and entry.stamp == stamp:
                entry.checked_at = now
                self._cache.move_to_end(tenant)
                return entry.served, stamp
        return None, stamp

    def _load(self, tenant: str, entry: _Entry | None, stamp: tuple[int, int], now: float) -> ServedTenant:
        """Resolve and load the version to serve (no lock held), then install it under the lock."""
        try:
            new = self._refresh(tenant, entry, stamp, now)
        except TenantUnavailable as e:
            with self._lock:
                self._unavailable[tenant] = (stamp, str(e))
                self._drop(tenant)
            raise
        with self._lock:
            self._unavailable.pop(tenant, None)
            self._cache[tenant] = new
            self._cache.move_to_end(tenant)
            self._evict(keep=tenant)
        return new.served

    def _drop(self, tenant: str) -> None:
        if self._cache.pop(tenant, None) is not None:
            self.evictions += 1

    def _evict(self, keep: str) -> None:
        """Drop least recently used tenants beyond the byte and count budgets. Lock held by caller."""
        total = sum(e.served.nbytes for e in self._cache.values())
        for name in list(self._cache):
            over_count = self.max_tenants is not None and len(self._cache) > self.max_tenants
            if total <= self.max_bytes and not over_count:
                break
            if name != keep:
                total -= self._cache[name].served.nbytes
                self._drop(name)

    def _describe(self, e: Exception) -> str:
        """An error for a client's eyes: one line, the artifact root's path shown as ``<root>`` (a
        tenant must not learn where the server keeps its files)."""
        text = " ".join(str(e).split())
        for root in {str(self.store.root), str(Path(self.store.root).resolve())}:
            text = text.replace(root, "<root>")
        return f"{type(e).__name__}: {text[:300]}"

    def _try_load(self, tenant: str, version: int) -> TenantBundle:
        bundle = self._load_bundle(self.store.version_dir(tenant, version))
        if bundle.tenant != tenant:
            raise ArtifactError(f"bundle v{version} belongs to tenant {bundle.tenant!r}, not {tenant!r}")
        if self._validate is not None:
            self._validate(bundle)
        with self._lock:
            self.loads += 1
        return bundle

    def _refresh(self, tenant: str, entry: _Entry | None, stamp: tuple[int, int], now: float) -> _Entry:
        """The entry to hold for the pointer at ``stamp``: the target version, or a fallback (no lock held)."""
        failed = dict(entry.failed) if entry else {}
        current = entry.served if entry else None
        try:
            target = self.store.current_version(tenant)
        except ArtifactError as e:
            target, pointer_error = None, str(e)
        else:
            pointer_error = None
        if target is not None and current is not None and current.version == target and current.fallback_reason is None:
            return _Entry(current, stamp, now, failed)
        if target is not None and target not in failed:
            try:
                return _Entry(ServedTenant(tenant, target, self._try_load(tenant, target)), stamp, now, failed)
            except Exception as e:  # noqa: BLE001 - any load failure must fall back, never crash the replica
                failed[target] = self._describe(e)
        reason = pointer_error or f"v{target} does not load ({failed.get(target)})"
        if current is not None and current.version != target:
            return _Entry(ServedTenant(tenant, current.version, current.bundle, reason), stamp, now, failed)
        ceiling = target if target is not None else 1 << 62
        for version in reversed(self.store.versions(tenant)):
            if version >= ceiling or version in failed:
                continue
            try:
                bundle = self._try_load(tenant, version)
            except Exception as e:  # noqa: BLE001
                failed[version] = self._describe(e)
                continue
            return _Entry(ServedTenant(tenant, version, bundle, reason), stamp, now, failed)
        raise TenantUnavailable(f"tenant {tenant!r}: no version loads ({reason}); publish a new version or roll back")
