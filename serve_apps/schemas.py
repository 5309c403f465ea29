"""Request and response bodies of the recommender HTTP API (v1). They generate /openapi.json.

Types are strict (``"10"`` is not a valid ``k``); item ids are strings, and JSON integers within
+-(2**53 - 1) (exact in every JSON parser; ``12.0`` is an integer to JSON Schema too) are accepted
as ids and turned into strings (``"12"``). Bounds that depend on the deployment
(``limits`` in the app args) are checked by the ingress, with a message naming the limit, and
written into /openapi.json by ``serve_apps.contract``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    WithJsonSchema,
)

__all__ = [
    "RecommendRequest",
    "RecommendResponse",
    "ScoredItem",
    "FeedbackEvent",
    "EventsRequest",
    "EventsResponse",
    "TenantStatus",
    "ErrorBody",
]


MAX_INT_ID = 2**53 - 1  # JSON's interoperable integer range (RFC 8259 section 6)


def _item_id(v: object) -> object:
    # JSON numbers are common as item ids; bools are ints in Python but never ids.
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, int) and not isinstance(v, bool):
        if not -MAX_INT_ID <= v <= MAX_INT_ID:
            raise ValueError(f"an integer item id must be within +-{MAX_INT_ID}; send longer ids as strings")
        return str(v)
    return v


def _whole(v: object) -> object:
    # JSON Schema's "integer" is any number with a zero fraction (8.0 included); "8" and true are not.
    return int(v) if isinstance(v, float) and v.is_integer() else v


WholeNumber = Annotated[StrictInt, BeforeValidator(_whole)]

# The schema says what is accepted: a non-empty string, or an integer within JSON's exact range.
ItemId = Annotated[
    StrictStr,
    BeforeValidator(_item_id),
    Field(min_length=1),
    WithJsonSchema({"anyOf": [{"type": "string", "minLength": 1},
                              {"type": "integer", "minimum": -MAX_INT_ID, "maximum": MAX_INT_ID}]}),
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RecommendRequest(_Body):
    history: list[ItemId] = Field(
        default_factory=list,
        description="the user's interactions as the tenant's own item ids, oldest first; empty = cold start",
    )
    k: WholeNumber = Field(10, ge=1, description="how many items to return (at most limits.max_k)")
    exclude_history: StrictBool = Field(True, description="never recommend an item already in the history")
    candidates: list[ItemId] | None = Field(
        None, description="optional filter: rank only these item ids (unknown ones are ignored with a warning)"
    )
    user_id: StrictStr | None = Field(None, min_length=1, max_length=128, description="logged with the impression record")


class ScoredItem(BaseModel):
    item_id: str
    score: float
    position: int = Field(description="1-based position shown")
    propensity: float = Field(description="probability the policy shows this item at this position (1.0 = deterministic)")


class RecommendResponse(BaseModel):
    tenant: str
    request_id: str = Field(description="quote it in feedback events (request_id) to attribute them to this answer")
    policy: str = Field(description="exploration policy that picked the items: greedy, epsilon, thompson, lints or linucb")
    items: list[ScoredItem]
    adapter_version: str = Field(description="tenant bundle version that answered, e.g. v3")
    method: str = Field(description="adaptation method of that version; 'zero-shot' = base model")
    zero_shot: bool
    cold_start: bool = Field(description="no known history item: catalog-centroid ranking")
    model_version: str = Field(description="shared ONNX model that answered (checksum prefix)")
    unknown_items: list[str] = Field(description="history ids not in the catalog; they were ignored")
    warnings: list[str]


class FeedbackEvent(_Body):
    type: Literal["impression", "click", "purchase"]
    item_id: ItemId
    user_id: StrictStr | None = Field(None, min_length=1, max_length=128)
    timestamp: Annotated[float, Field(strict=True, ge=0, allow_inf_nan=False)] | None = Field(
        None, description="unix seconds (an integer or a number); default: time received")
    request_id: StrictStr | None = Field(
        None, min_length=1, max_length=64, description="request_id of the recommendation answer this event is feedback on")


class EventsRequest(_Body):
    events: list[FeedbackEvent] = Field(min_length=1)


class EventsResponse(BaseModel):
    tenant: str
    accepted: int = Field(description="events durably appended (fsynced) before this response")
    duplicate: bool = Field(False, description="the Idempotency-Key was seen before: nothing new was written")


class TenantStatus(BaseModel):
    tenant: str
    adapter_version: str
    published_version: str | None
    method: str
    zero_shot: bool
    catalog_size: int
    model_version: str
    fallback_reason: str | None = Field(description="set when the published version does not load and an older one serves")
    failed_versions: dict[str, str]
    api_key_required: bool


class ErrorBody(BaseModel):
    detail: str | list | dict
