"""The published HTTP contract (OpenAPI) of the recommender, equal to what the ingress validates.

FastAPI derives most of /openapi.json from the route signatures and ``serve_apps.schemas``; this
module adds what depends on the deployment and what FastAPI cannot know:

- the tenant-id path parameter as the validation checks it: an explicit ASCII class with the same
  length bounds as ``rec.data.schema.validate_tenant_id`` (``^[a-z0-9][a-z0-9_-]*$``, 1-64
  characters; pydantic's regex engine, like JSON Schema's, never lets ``$`` match before a
  trailing newline, which Python's ``re`` would);
- the bounds of the replica's ``limits`` (``k`` at most ``max_k``, list lengths, item-id length),
  so a request the document calls valid is never refused by a limit;
- every status a route can answer, with its error body, and ``Retry-After`` on 429 and 503;
- optional authentication (``{}`` among the security requirements) unless the server requires
  keys: a tenant without keys is open;
- links between the tenant routes (status -> recommendations -> events -> status), which a
  stateful client or fuzzer follows with the tenant id of the previous answer.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import Path

from serve_apps.args import Limits
from serve_apps.schemas import ErrorBody

__all__ = [
    "TENANT_ID_PATTERN",
    "TENANT_ID_MAX_LENGTH",
    "tenant_id_path",
    "error_responses",
    "with_deployment_bounds",
]

TENANT_ID_PATTERN = "^[a-z0-9][a-z0-9_-]*$"
TENANT_ID_MAX_LENGTH = 64

# What each status means for a client; FastAPI's own 422 (body/path validation) uses the same model.
_MEANING = {
    400: "the body is not UTF-8 JSON, or a header is malformed",
    401: "the tenant requires an API key and none was sent",
    403: "the API key is not valid for this tenant",
    404: "unknown tenant: publish a catalog first",
    413: "the body exceeds limits.max_body_bytes",
    422: "invalid tenant id, body or bound (the detail names it)",
    429: "the tenant's request quota is spent: retry after Retry-After seconds",
    503: "temporarily unavailable (no replica left to retry on, the event log cannot write durably, "
         "or no version of the tenant loads): retry after Retry-After seconds",
}
_RETRY_AFTER = {
    "Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "string", "pattern": "^[0-9]+$"}}
}


def tenant_id_path() -> Any:
    """The ``tenant_id`` path parameter, bounded exactly like ``validate_tenant_id``."""
    return Path(
        description="tenant id: 1-64 characters of a-z 0-9 _ -, starting with a letter or digit",
        pattern=TENANT_ID_PATTERN,
        min_length=1,
        max_length=TENANT_ID_MAX_LENGTH,
    )


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` of a route: the error model for each status, Retry-After on 429/503."""
    out: dict[int | str, dict[str, Any]] = {}
    for s in statuses:
        out[s] = {"model": ErrorBody, "description": _MEANING[s]}
        if s in (429, 503):
            out[s]["headers"] = _RETRY_AFTER
    return out


def _item_id_bounds(schema: dict[str, Any], max_length: int) -> None:
    for branch in schema.get("anyOf", [schema]):
        if branch.get("type") == "string":
            branch["maxLength"] = max_length


def _list_bounds(prop: dict[str, Any], max_items: int, max_id_length: int | None) -> None:
    # An optional list renders as anyOf [array, null]
    for branch in prop.get("anyOf", [prop]):
        if branch.get("type") == "array":
            branch["maxItems"] = max_items
            if max_id_length is not None:
                _item_id_bounds(branch["items"], max_id_length)


# operationId -> (success status, {link name: target operationId}); every link passes the tenant id on.
_LINKS = {
    "tenant_status": ("200", {"Recommend": "recommend", "RecordEvents": "record_events"}),
    "recommend": ("200", {"RecordEvents": "record_events", "Status": "tenant_status"}),
    "record_events": ("201", {"Status": "tenant_status", "Recommend": "recommend"}),
}


def _add_links(doc: dict[str, Any]) -> None:
    for ops in doc.get("paths", {}).values():
        for op in ops.values():
            status, targets = _LINKS.get(op.get("operationId"), (None, {}))
            if status in op.get("responses", {}):
                op["responses"][status]["links"] = {
                    name: {"operationId": target, "parameters": {"tenant_id": "$response.body#/tenant"}}
                    for name, target in targets.items()
                }


def with_deployment_bounds(base: dict[str, Any], limits: Limits, require_keys: bool) -> dict[str, Any]:
    """A copy of FastAPI's OpenAPI document with the replica's ``limits`` and auth rule written in."""
    doc = copy.deepcopy(base)
    schemas = doc.get("components", {}).get("schemas", {})
    rec = schemas.get("RecommendRequest", {}).get("properties", {})
    if rec:
        rec["k"]["maximum"] = limits.max_k
        _list_bounds(rec["history"], limits.max_history, limits.max_item_id_length)
        _list_bounds(rec["candidates"], limits.max_candidates, limits.max_item_id_length)
    event = schemas.get("FeedbackEvent", {}).get("properties", {})
    if event:
        _item_id_bounds(event["item_id"], limits.max_item_id_length)
    events = schemas.get("EventsRequest", {}).get("properties", {})
    if events:
        _list_bounds(events["events"], limits.max_events, None)
    if not require_keys:
        for ops in doc.get("paths", {}).values():
            for op in ops.values():
                if op.get("security") and {} not in op["security"]:
                    op["security"].append({})  # no key needed for a tenant without keys
    _add_links(doc)
    return doc
