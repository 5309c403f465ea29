"""The published HTTP contract equals the validation, fuzzed by schemathesis in process.

The app is the real FastAPI ingress over a real in-process Ingress (registry, ONNX Runtime, event
log) on a copy of the session's artifact root; ``from_asgi`` loads its /openapi.json.
"""

from __future__ import annotations

import shutil

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import Field, TypeAdapter
from starlette.testclient import TestClient
from typing_extensions import Annotated

from bench.contract_fuzz import fuzz_contract
from rec.data.schema import validate_tenant_id

LIMITS = {"max_history": 30, "max_k": 20, "max_candidates": 50, "max_events": 10, "max_item_id_length": 64}


@pytest.fixture(scope="module")
def contract_app(serving_world, tmp_path_factory):
    from serve_apps.api import serve_in_process

    root = tmp_path_factory.mktemp("contract") / "root"
    shutil.copytree(serving_world.root, root)
    with serve_in_process({"artifact_root": str(root), "limits": LIMITS, "poll_interval_s": 60}) as (app, _):
        yield app


@pytest.fixture(scope="module")
def spec(contract_app):
    return TestClient(contract_app).get("/openapi.json").json()


def _tenant_param(spec: dict) -> dict:
    op = spec["paths"]["/v1/tenants/{tenant_id}/recommendations"]["post"]
    return next(p for p in op["parameters"] if p["name"] == "tenant_id")["schema"]


def test_published_tenant_id_is_the_validation(spec):
    schema = _tenant_param(spec)
    assert schema == {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]*$", "minLength": 1, "maxLength": 64,
                      "title": "Tenant Id", "description": schema["description"]}
    # Every route names the same parameter the same way.
    for path, ops in spec["paths"].items():
        for op in ops.values():
            for p in op.get("parameters", []):
                if p["name"] == "tenant_id":
                    assert p["schema"] == schema, path


def _accepts(schema: dict):
    # pydantic's regex engine is what FastAPI validates the path with; like JSON Schema's (ECMA 262)
    # its `$` never matches before a trailing newline.
    adapter = TypeAdapter(Annotated[str, Field(pattern=schema["pattern"], min_length=schema["minLength"],
                                               max_length=schema["maxLength"])])

    def ok(s: str) -> bool:
        try:
            adapter.validate_python(s)
        except ValueError:
            return False
        return True
    return ok


def _valid(s: str) -> bool:
    try:
        validate_tenant_id(s)
    except ValueError:
        return False
    return True


@given(st.one_of(st.text(max_size=70), st.from_regex(r"[a-z0-9][a-z0-9_-]{0,70}\n?", fullmatch=True)))
@settings(max_examples=400, deadline=None)
def test_the_document_accepts_exactly_the_tenant_ids_the_service_accepts(spec, s):
    assert _accepts(_tenant_param(spec))(s) == _valid(s)


@pytest.mark.parametrize("s,ok", [("a", True), ("a" * 64, True), ("a" * 65, False), ("shop\n", False), ("Shop", False),
                                  ("-shop", False), ("sh%op", False), ("é", False), ("", False)])
def test_tenant_id_edges(spec, s, ok):
    assert _valid(s) is ok and _accepts(_tenant_param(spec))(s) is ok


def test_limits_and_statuses_are_published(spec, contract_app):
    req = spec["components"]["schemas"]["RecommendRequest"]["properties"]
    assert req["k"]["maximum"] == LIMITS["max_k"] and req["history"]["maxItems"] == LIMITS["max_history"]
    assert req["history"]["items"]["anyOf"][0]["maxLength"] == LIMITS["max_item_id_length"]
    events = spec["components"]["schemas"]["EventsRequest"]["properties"]["events"]
    assert events["maxItems"] == LIMITS["max_events"] and events["minItems"] == 1
    for path in ("/v1/tenants/{tenant_id}/recommendations", "/v1/tenants/{tenant_id}/events"):
        responses = spec["paths"][path]["post"]["responses"]
        assert {"400", "401", "403", "404", "413", "422", "429", "503"} <= set(responses)
        assert "Retry-After" in responses["503"]["headers"] and "Retry-After" in responses["429"]["headers"]
        assert {} in spec["paths"][path]["post"]["security"]  # tenants without keys are open
    c = TestClient(contract_app)
    bad = c.post("/v1/tenants/podcasts/recommendations", content=b'{"history": ["\xff"]}',
                 headers={"content-type": "application/json"})
    assert bad.status_code == 400 and bad.json()["detail"]  # not UTF-8: the documented 400


def test_schemathesis_finds_no_failure(contract_app):
    """Every default check, positive and negative data for each operation, then a stateful run."""
    result = fuzz_contract(contract_app, examples_per_mode=40, stateful_examples=10,
                           tenants=["podcasts", "books", "courses"])
    assert not result.failures, f"{len(result.failures)} failures:\n\n" + "\n\n".join(result.failures[:5])
    assert result.cases >= 300, result
    codes = {int(k.rsplit(" ", 1)[1]) for k in result.statuses}
    assert any(200 <= s < 300 for s in codes) and any(400 <= s < 500 for s in codes), result.statuses
    assert result.statuses.get("POST /v1/tenants/{tenant_id}/recommendations 200", 0) >= 10, result.statuses
    assert result.statuses.get("POST /v1/tenants/{tenant_id}/events 201", 0) >= 10, result.statuses
