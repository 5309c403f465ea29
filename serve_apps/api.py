"""HTTP ingress (FastAPI, API v1): validation, per-tenant API keys, body limits, feedback log.

The same class serves both layouts of ``serve_apps.recommender.build_app``: with a Ranker handle it
is the ``Ingress`` of the sharded layout (each call is a Serve hop to a Ranker replica); without one
it holds a :class:`serve_apps.ranker.TenantRanker` itself (the ``Recommender`` deployment), so a
request costs one hop: proxy -> replica.

Routes (OpenAPI at /docs and /openapi.json):

- ``POST /v1/tenants/{tenant_id}/recommendations`` -> top-K for one user's history
- ``POST /v1/tenants/{tenant_id}/events`` -> feedback, fsynced to the tenant's log before 2xx
- ``GET  /v1/tenants/{tenant_id}`` -> served version, catalog size, zero-shot or adapted
- ``GET  /healthz`` (process alive), ``GET /readyz`` (the Ranker answers)

Bad input is always a 4xx with a message: invalid tenant id or body 422, body not UTF-8 JSON 400,
unknown tenant 404, missing/wrong API key 401/403, body over ``limits.max_body_bytes`` 413, a
tenant over its quota 429. A 503 (with ``Retry-After``) means retry later: no Ranker replica left
within the retry budget (``serve_apps.retry``), or the event log cannot write durably (full or
failing disk). /openapi.json states exactly this, with the replica's limits
(``serve_apps.contract``).
"""

# No `from __future__ import annotations`: Serve rebuilds the routes of a class ingress, and
# string annotations of the body models would no longer resolve there.
import asyncio
import contextlib
import time
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI, Header, HTTPException, Security
from fastapi.openapi.utils import get_openapi
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from ray import serve
from ray.serve.exceptions import RayServeException
from ray.serve.handle import DeploymentHandle
from starlette.responses import JSONResponse

from rec.data.schema import validate_tenant_id
from rec.serving.auth import ApiKeyChecker
from rec.serving.events import EventLog, GroupCommitWriter
from rec.serving.ranking import IMPRESSION_KEY
from rec.serving.store import ArtifactRoot
from serve_apps.args import Limits, RecommenderArgs
from serve_apps.contract import error_responses, tenant_id_path, with_deployment_bounds
from serve_apps.metrics import RequestMetrics, TenantMetrics
from serve_apps.quota import TenantQuota
from serve_apps.ranker import TenantRanker
from serve_apps.schemas import (
    EventsRequest,
    EventsResponse,
    RecommendRequest,
    RecommendResponse,
    TenantStatus,
)
from serve_apps.retry import Unavailable, call_with_retry
from serve_apps.timing import Timings

__all__ = ["Ingress", "app", "serve_in_process"]

API_TITLE = "fewshot-rec recommendations"


_DEFAULT_LIMITS = Limits()


def _serving_ingress() -> "Ingress | None":
    """The :class:`Ingress` instance of this replica (Serve's public replica context; also set by
    :func:`serve_in_process`), or None outside a replica (e.g. rendering the OpenAPI document)."""
    try:
        return serve.get_replica_context().servable_object
    except RayServeException:
        return None


class BodyLimit:
    """ASGI middleware: 413 for bodies over ``limits.max_body_bytes`` of the replica's ingress, by
    Content-Length or by counting (chunked); records the ``asgi`` stage when the ingress records
    timings. The app is module-level (routes are declared on it), so the per-replica settings are
    read from the replica's ingress instance, not from module state."""

    def __init__(self, app) -> None:  # noqa: ANN001
        self.app = app

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ingress = _serving_ingress()
        limit = ingress.limits.max_body_bytes if ingress is not None else _DEFAULT_LIMITS.max_body_bytes
        timings = ingress.timings if ingress is not None else None
        if timings is None:
            await self._limited(scope, receive, send, limit)
            return
        t0 = time.perf_counter()
        try:
            await self._limited(scope, receive, send, limit)
        finally:
            timings.add("asgi", time.perf_counter() - t0)

    async def _limited(self, scope, receive, send, limit: int) -> None:  # noqa: ANN001
        too_big = JSONResponse(
            {"detail": f"request body exceeds limits.max_body_bytes={limit} bytes; send fewer ids or raise the limit"}, 413
        )
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    if int(value) > limit:
                        await too_big(scope, receive, send)
                        return
                except ValueError:
                    await JSONResponse({"detail": "invalid Content-Length header"}, 400)(scope, receive, send)
                    return
        # Count what actually arrives too (chunked uploads have no Content-Length): buffer up to
        # the limit, then replay. Raising from receive() instead would surface as FastAPI's 400.
        chunks, seen, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                chunks.append(message)
                break
            seen += len(message.get("body", b""))
            if seen > limit:
                await too_big(scope, receive, send)
                return
            chunks.append(message)
            more = message.get("more_body", False)

        async def replay():  # noqa: ANN202
            return chunks.pop(0) if chunks else await receive()

        await self.app(scope, replay, send)


app = FastAPI(
    title=API_TITLE,
    version="1",
    description="Multi-tenant few-shot recommendations: one shared model, one adapter per tenant.",
    docs_url="/docs",
    openapi_url="/openapi.json",
)
app.add_middleware(BodyLimit)
app.add_middleware(RequestMetrics, metrics_of=lambda: getattr(_serving_ingress(), "metrics", None))

_bearer = HTTPBearer(auto_error=False, description="tenant API key as a bearer token")
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="tenant API key")
_TenantId = tenant_id_path()
_TENANT_ERRORS = error_responses(400, 401, 403, 404, 413, 422, 429, 503)  # every route under /v1/tenants


def _openapi() -> dict[str, Any]:
    """/openapi.json with the serving replica's limits and auth rule (``serve_apps.contract``)."""
    if app.openapi_schema is None:  # FastAPI's document, rendered once per process
        app.openapi_schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                         routes=app.routes)
    ingress = _serving_ingress()
    if ingress is None:
        return with_deployment_bounds(app.openapi_schema, _DEFAULT_LIMITS, require_keys=False)
    return with_deployment_bounds(app.openapi_schema, ingress.limits, ingress.args.require_api_keys)


app.openapi = _openapi


def _unavailable(detail: str, retry_after_s: int) -> HTTPException:
    return HTTPException(503, detail, headers={"Retry-After": str(retry_after_s)})


def _presented(bearer: HTTPAuthorizationCredentials | None, key: str | None) -> str | None:
    return bearer.credentials if bearer is not None else key


def _raise_if_error(result: dict[str, Any], retry_after_s: int) -> dict[str, Any]:
    err = result.get("error")
    if err is not None:
        status = int(err["status"])
        if status == 503:  # no version of the tenant loads: a publish or rollback fixes it
            raise _unavailable(err["detail"], retry_after_s)
        raise HTTPException(status_code=status, detail=err["detail"])
    return result


@serve.deployment(name="Ingress", ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=128)
@serve.ingress(app)
class Ingress:
    """The HTTP front of the recommender (see module doc).

    Args:
        args: :class:`serve_apps.args.RecommenderArgs` as a dict.
        ranker: Handle of the Ranker deployment, or None to rank in this replica.
    """

    def __init__(self, args: dict[str, Any], ranker: DeploymentHandle | None = None) -> None:
        self.args = RecommenderArgs.model_validate(args)
        self.limits = self.args.limits  # read by BodyLimit for every request of this replica
        self.timings = Timings() if self.args.record_timings else None
        self.store = ArtifactRoot(self.args.artifact_root)
        self.keys = ApiKeyChecker(self.store.keys_path, require_keys=self.args.require_api_keys)
        self.events = EventLog(self.store.events_dir)
        self.impressions = GroupCommitWriter(self.events) if self.args.log_impressions else None
        self.metrics = TenantMetrics() if self.args.export_metrics else None
        q = self.args.quota
        self.quota = TenantQuota(q.requests_per_s, q.burst) if q.requests_per_s is not None else None
        self.retries = 0  # idempotent calls retried on another replica (stats())
        self.ranker = ranker
        # single-hop: the local Ranker records into the same Timings, so stats() has every stage
        self.local = TenantRanker(args, timings=self.timings) if ranker is None else None

    # --- helpers -------------------------------------------------------------------------------
    async def _authorize(self, tenant_id: str, presented: str | None) -> None:
        try:
            validate_tenant_id(tenant_id)
        except ValueError as e:
            raise HTTPException(422, str(e)) from None
        wait = self.quota.take(tenant_id) if self.quota is not None else None
        if wait is not None:
            raise HTTPException(429, f"tenant {tenant_id!r} is over its request quota "
                                     f"({self.args.quota.requests_per_s:g}/s, burst {self.args.quota.burst}): "
                                     f"retry after {wait} s", headers={"Retry-After": str(wait)})
        decided, reason = self.keys.quick_check(tenant_id, presented)  # no thread hop unless scrypt is needed
        if not decided:
            reason = await asyncio.to_thread(self.keys.check, tenant_id, presented)
        if reason is not None:
            raise HTTPException(401 if not presented else 403, reason)

    async def _call(self, method: str, tenant_id: str | None, *args: Any) -> Any:
        """``method`` of the Ranker: in this replica, or over a Serve hop (multiplexed by tenant).
        Every Ranker method is a read, so a hop whose replica dies is retried on another one
        (``serve_apps.retry``); when no attempt is left the answer is 503 + Retry-After."""
        t0 = time.perf_counter() if self.timings is not None else 0.0
        if self.local is not None:
            out = await getattr(self.local, method)(*args)
        else:
            handle = self.ranker
            if self.args.multiplex and tenant_id is not None:
                handle = handle.options(multiplexed_model_id=tenant_id)
            try:
                out, retried = await call_with_retry(lambda: getattr(handle, method).remote(*args), self.args.retry,
                                                     idempotent=True)
            except Unavailable as e:
                raise _unavailable(e.detail, e.retry_after_s) from None
            self.retries += retried
        if self.timings is not None:
            self.timings.add("call", time.perf_counter() - t0)
        return out

    def _check_ids(self, what: str, ids: list[str], most: int, limit_name: str) -> None:
        if len(ids) > most:
            raise HTTPException(422, f"{what} has {len(ids)} ids; at most limits.{limit_name}={most} are allowed")
        long = next((i for i in ids if len(i) > self.limits.max_item_id_length), None)
        if long is not None:
            raise HTTPException(422, f"{what}: item id {long[:40]!r}... is longer than limits.max_item_id_length={self.limits.max_item_id_length}")

    # --- routes --------------------------------------------------------------------------------
    @app.post(
        "/v1/tenants/{tenant_id}/recommendations",
        response_model=RecommendResponse,
        responses=_TENANT_ERRORS,
        summary="Top-K items for one user of a tenant",
        operation_id="recommend",
    )
    async def recommend(
        self,
        body: RecommendRequest,
        tenant_id: str = _TenantId,
        bearer: HTTPAuthorizationCredentials | None = Security(_bearer),
        api_key: str | None = Security(_api_key),
    ) -> JSONResponse:
        """Rank the tenant's catalog for a user given their history (the tenant's own item ids).

        Unknown history ids are dropped and listed in ``unknown_items``; with no known id left the
        answer is a cold-start ranking (``cold_start: true``).
        """
        t0 = time.perf_counter() if self.timings is not None else 0.0
        await self._authorize(tenant_id, _presented(bearer, api_key))
        if body.k > self.limits.max_k:
            raise HTTPException(422, f"k={body.k} exceeds limits.max_k={self.limits.max_k}")
        self._check_ids("history", body.history, self.limits.max_history, "max_history")
        if body.candidates is not None:
            self._check_ids("candidates", body.candidates, self.limits.max_candidates, "max_candidates")
        request = {"tenant": tenant_id, **body.model_dump()}
        out = _raise_if_error(await self._call("recommend", tenant_id, request), self.args.retry.retry_after_s)
        impression = out.pop(IMPRESSION_KEY, None)
        if self.metrics is not None:
            self.metrics.answered(tenant_id, out["policy"], out["adapter_version"])
        if self.impressions is not None and impression is not None:
            impression["received_unix"] = time.time()
            try:  # durable before the answer: group-committed with concurrent requests' impressions
                await asyncio.wrap_future(self.impressions.submit(tenant_id, [impression]))
            except OSError as e:
                raise _unavailable(f"the impression log cannot write durably now ({e.strerror or type(e).__name__}); "
                                   "ask again later", self.args.retry.retry_after_s) from None
        if self.timings is not None:
            self.timings.add("handler", time.perf_counter() - t0)
        # The Ranker builds exactly RecommendResponse's fields: skip re-validating ~10 nested items
        # per request (response_model still documents the body in /openapi.json).
        return JSONResponse(out)

    @app.post(
        "/v1/tenants/{tenant_id}/events",
        response_model=EventsResponse,
        status_code=201,
        responses=_TENANT_ERRORS,
        summary="Record feedback events (durable before the response)",
        operation_id="record_events",
    )
    async def events_(
        self,
        body: EventsRequest,
        tenant_id: str = _TenantId,
        bearer: HTTPAuthorizationCredentials | None = Security(_bearer),
        api_key: str | None = Security(_api_key),
        idempotency_key: str | None = Header(
            None, alias="Idempotency-Key", min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$",
            description="retry-safe writes: a POST repeated with the same key (within 24 h) is acknowledged again, logged once"),
    ) -> dict[str, Any]:
        """Append impression/click/purchase events to the tenant's log; fsynced before 201.

        A 503 (full or failing disk) means nothing of the request was acknowledged: send it again
        after ``Retry-After``."""
        await self._authorize(tenant_id, _presented(bearer, api_key))
        if len(body.events) > self.limits.max_events:
            raise HTTPException(422, f"{len(body.events)} events exceed limits.max_events={self.limits.max_events}")
        self._check_ids("events", [e.item_id for e in body.events], self.limits.max_events, "max_events")
        if self.store.pointer_stamp(tenant_id) is None:
            raise HTTPException(404, f"unknown tenant {tenant_id!r}: publish a catalog first (`rec publish --tenant {tenant_id}`)")
        now = time.time()
        rows = [{"kind": "event", **e.model_dump(exclude_none=True), "timestamp": e.timestamp if e.timestamp is not None else now,
                 "received_unix": now} for e in body.events]
        try:
            res = await asyncio.to_thread(self.events.append, tenant_id, rows, idempotency_key)
        except OSError as e:  # ENOSPC, EIO, EDQUOT... on write or fsync: not durable, so not acknowledged
            raise _unavailable(f"the event log cannot write durably now ({e.strerror or type(e).__name__}): "
                               "nothing was recorded, send the events again later", self.args.retry.retry_after_s) from None
        if self.metrics is not None and not res.duplicate:
            self.metrics.posted(tenant_id, [e.type for e in body.events])
        return {"tenant": tenant_id, "accepted": res.accepted, "duplicate": res.duplicate}

    @app.get("/v1/tenants/{tenant_id}", response_model=TenantStatus, responses=_TENANT_ERRORS,
             summary="Tenant serving status", operation_id="tenant_status")
    async def tenant_status(
        self,
        tenant_id: str = _TenantId,
        bearer: HTTPAuthorizationCredentials | None = Security(_bearer),
        api_key: str | None = Security(_api_key),
    ) -> dict[str, Any]:
        """Which version serves the tenant, its method (zero-shot or adapted) and catalog size."""
        await self._authorize(tenant_id, _presented(bearer, api_key))
        st = _raise_if_error(await self._call("tenant_status", tenant_id, tenant_id), self.args.retry.retry_after_s)
        return {**st, "api_key_required": self.args.require_api_keys or self.store.keys_path(tenant_id).is_file()}

    @app.get("/healthz", summary="Liveness")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: the Ranker answers", responses=error_responses(503))
    async def readyz(self) -> dict[str, Any]:
        try:
            info = await asyncio.wait_for(self._call("ready", None), timeout=10)
        except Exception as e:  # noqa: BLE001 - not ready, whatever the cause
            raise _unavailable(f"ranker not ready: {type(e).__name__}: {e}", self.args.retry.retry_after_s) from None
        return {"status": "ready", **info}

    # --- for handles (tests, benchmarks): what the Ranker of this layout reports -----------------
    async def ready(self) -> dict[str, Any]:
        return await self._call("ready", None)

    async def stats(self, reset: bool = False) -> dict[str, Any]:
        """The Ranker's stats (``TenantRanker.stats``); in the sharded layout this replica's timings
        (``asgi``, ``handler``, ``call``) are returned as ``ingress_timings``."""
        out = await self._call("stats", None, reset)
        if self.local is None:
            out = {**out, "ingress_timings": self.timings.summary() if self.timings is not None else {},
                   "ingress_retries": self.retries}
            if reset and self.timings is not None:
                self.timings.clear()
        return out


@contextlib.contextmanager
def serve_in_process(args: dict[str, Any]) -> Iterator[tuple[FastAPI, Ingress]]:
    """This module's ASGI app answering through a new in-process :class:`Ingress` (single-hop
    layout) without Ray Serve running: what the contract fuzzer drives (``schemathesis``
    ``from_asgi`` in tests/serve_apps/test_contract.py and bench/chaos.py). Yields ``(app, ingress)``.

    Serve's class routes and ``@serve.batch`` both read the replica context (the routes get their
    ``self`` from it, the batch queue its ``max_ongoing_requests``), so for the duration of the
    ``with`` block this process is given one naming the new instance, through Serve's internal
    setter (``ray.serve.context``, what a replica does at start); the previous context is put back
    afterwards, so ``serve.run`` and handles work again in the same process. Never use it inside a
    replica.
    """
    from ray.serve import context
    from ray.serve._private.common import DeploymentID, ReplicaID
    from ray.serve._private.config import DeploymentConfig
    from ray.serve.schema import ReplicaRank

    wrapper = Ingress.func_or_class  # serve.ingress's subclass (its async __init__ needs a replica)
    plain = next(c for c in wrapper.__mro__[1:] if c.__name__ == "Ingress")
    previous = context._get_internal_replica_context()

    def replica_context(servable: Any) -> None:
        context._set_internal_replica_context(
            replica_id=ReplicaID("in-process", DeploymentID(name="Recommender", app_name="in-process")),
            servable_object=servable,
            _deployment_config=DeploymentConfig(max_ongoing_requests=128),
            rank=ReplicaRank(rank=0, node_rank=0, local_rank=0),
            world_size=1,
        )

    try:
        replica_context(None)  # the constructor sizes @serve.batch queues, which read the context too
        # no background learners or Ray metrics in a fuzzing harness unless asked for
        args = {"live_feedback": False, "export_metrics": False, **args}
        ingress = plain(RecommenderArgs.model_validate(args).model_dump(mode="json"))
        replica_context(ingress)
        yield app, ingress
    finally:
        context._INTERNAL_REPLICA_CONTEXT = previous
