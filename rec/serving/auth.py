"""Per-tenant API keys, stored as scrypt hashes next to the tenant's bundles.

A key looks like ``rk_<key id>_<secret>``. Only ``{id, salt, scrypt(secret)}`` is stored, in
``<root>/tenants/<tenant>/api_keys.json``; a key is checked against its own tenant's file only, so
tenant A's key can never read tenant B. Verified keys are cached (by a sha256 of the key and the
key file's stamp) because scrypt is deliberately slow.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from pathlib import Path

from rec.io.artifacts import atomic_write_json

__all__ = ["create_api_key", "revoke_api_keys", "ApiKeyChecker"]

# RFC 7914 interactive parameters: ~50 ms and 16 MiB per check, cached afterwards.
_N, _R, _P = 2**14, 8, 1


def _scrypt(secret: str, salt: bytes) -> bytes:
    return hashlib.scrypt(secret.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)


def _read(path: Path) -> list[dict]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    return list(data.get("keys", [])) if isinstance(data, dict) else []


def create_api_key(keys_path: str | Path) -> str:
    """Add a new key to a tenant's key file and return it (the only time it is visible)."""
    keys_path = Path(keys_path)
    key_id, secret = secrets.token_hex(4), secrets.token_urlsafe(32)
    salt = secrets.token_bytes(16)
    keys = _read(keys_path)
    keys.append({"id": key_id, "salt": salt.hex(), "scrypt": _scrypt(secret, salt).hex(), "created_unix": time.time(),
                 "n": _N, "r": _R, "p": _P})
    atomic_write_json(keys_path, {"keys": keys})
    return f"rk_{key_id}_{secret}"


def revoke_api_keys(keys_path: str | Path) -> int:
    """Remove every key of a tenant (it becomes open again unless the server requires keys)."""
    keys_path = Path(keys_path)
    n = len(_read(keys_path))
    keys_path.unlink(missing_ok=True)
    return n


class ApiKeyChecker:
    """Check presented keys against one tenant's stored hashes.

    Args:
        keys_path: Callable mapping a tenant id to its ``api_keys.json`` path.
        require_keys: If True, a tenant without keys rejects every request; if False, such a
            tenant is open (keys are per-tenant and optional).
    """

    def __init__(self, keys_path, require_keys: bool = False) -> None:  # noqa: ANN001
        self._path = keys_path
        self.require_keys = require_keys
        self._ok: dict[tuple[str, str], tuple[int, int]] = {}
        self._lock = threading.Lock()

    def _stamp(self, path: Path) -> tuple[int, int] | None:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns

    def _precheck(self, tenant: str, presented: str | None) -> tuple[bool, str | None, Path, tuple[int, int] | None, tuple[str, str] | None]:
        """``(decided, reason, keys path, its stamp, cache key)`` from one ``stat``, without scrypt."""
        path = Path(self._path(tenant))
        stamp = self._stamp(path)
        if stamp is None:
            reason = f"tenant {tenant!r} has no API keys and this server requires one" if self.require_keys else None
            return True, reason, path, None, None
        if not presented:
            reason = f"tenant {tenant!r} requires an API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
            return True, reason, path, stamp, None
        cache_key = (tenant, hashlib.sha256(presented.encode()).hexdigest())
        with self._lock:
            cached = self._ok.get(cache_key) == stamp
        return cached, None, path, stamp, cache_key

    def quick_check(self, tenant: str, presented: str | None) -> tuple[bool, str | None]:
        """The decision when it needs no scrypt (open tenant, missing key, cached key), else
        ``(False, None)``: call :meth:`check` (~50 ms, off the event loop). Returns
        ``(decided, reason)``; one ``stat`` call."""
        decided, reason, *_ = self._precheck(tenant, presented)
        return decided, reason

    def check(self, tenant: str, presented: str | None) -> str | None:
        """Return None when access is allowed, else the reason (for a 401/403 message)."""
        decided, reason, path, stamp, cache_key = self._precheck(tenant, presented)
        if decided:
            return reason
        parts = str(presented).split("_", 2)
        if len(parts) == 3 and parts[0] == "rk":
            for entry in _read(path):
                if entry.get("id") == parts[1] and hmac.compare_digest(
                    _scrypt(parts[2], bytes.fromhex(entry["salt"])).hex(), entry["scrypt"]
                ):
                    with self._lock:
                        self._ok[cache_key] = stamp
                    return None
        return f"the API key is not valid for tenant {tenant!r}"
