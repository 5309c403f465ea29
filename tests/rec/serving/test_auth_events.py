"""API keys (scrypt hashes, per tenant) and the durable feedback log."""

from __future__ import annotations

import json
import threading

from rec.serving.auth import ApiKeyChecker, create_api_key, revoke_api_keys
from rec.serving.events import EventLog


def test_keys_are_hashed_and_tenant_scoped(tmp_path):
    path = {t: tmp_path / t / "api_keys.json" for t in ("a", "b", "c")}
    key_a, key_b = create_api_key(path["a"]), create_api_key(path["b"])
    stored = json.loads(path["a"].read_text())["keys"][0]
    assert key_a.split("_", 2)[2] not in path["a"].read_text() and len(stored["scrypt"]) == 64
    check = ApiKeyChecker(lambda t: path[t])
    assert check.quick_check("a", key_a) == (False, None)  # undecided until scrypt has run once
    assert check.check("a", key_a) is None
    assert check.quick_check("a", key_a) == (True, None)  # then decided from the cache, no scrypt
    assert check.quick_check("a", key_b) == (False, None)  # a key never accepted is never cached
    assert check.quick_check("a", None)[0] and "requires an API key" in check.quick_check("a", None)[1]
    assert "not valid for tenant 'a'" in check.check("a", key_b)
    assert "requires an API key" in check.check("a", None)
    assert check.check("a", "rk_" + stored["id"] + "_wrong") is not None
    assert check.check("a", "garbage") is not None
    assert check.check("c", None) is None  # no keys: open
    assert "requires one" in ApiKeyChecker(lambda t: path[t], require_keys=True).check("c", None)
    key_a2 = create_api_key(path["a"])
    assert check.quick_check("a", key_a) == (False, None)  # the keys file changed: the cache no longer holds
    assert check.check("a", key_a) is None and check.check("a", key_a2) is None
    assert revoke_api_keys(path["a"]) == 2
    assert check.check("a", key_a) is None  # open again once revoked (cache follows the file)
    create_api_key(path["a"])
    assert check.check("a", key_a) is not None  # a revoked key stays revoked


def test_event_log_appends_whole_lines_from_many_threads(tmp_path):
    log = EventLog(lambda t: tmp_path / t)
    threads = [threading.Thread(target=log.append, args=("a", [{"i": i, "j": j} for j in range(5)])) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    events = log.read("a")
    assert len(events) == 40 and sorted((e["i"], e["j"]) for e in events) == [(i, j) for i in range(8) for j in range(5)]
    with open(log.files("a")[-1], "ab") as f:
        f.write(b'{"torn": ')  # a crash mid-line
    assert len(log.read("a")) == 40
    assert log.read("nobody") == [] and log.append("a", []).accepted == 0
