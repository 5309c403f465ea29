"""Retry of idempotent Ranker calls whose replica died or is going away, with a bounded budget.

Ray Serve does not retry a request whose replica died (ray#52365): the router only drops the dead
replica for later requests, and the in-flight one fails. The ingress of the ``Ingress -> Ranker``
layout therefore retries its *idempotent* calls (recommendations, tenant status) itself: the next
attempt is routed to a live replica. Attempts and time are bounded by ``RetryPolicy``; when none
is left the request is answered 503 with ``Retry-After``, never 500. Writes are never retried here
(the event log is written by the ingress itself, not over a hop).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError

from serve_apps.args import RetryPolicy

__all__ = ["Unavailable", "call_with_retry", "RETRYABLE"]

# A replica that died (ActorDiedError), is unreachable (ActorUnavailableError: also what callers
# see while the GCS recovers) or was removed while the call was routed.
RETRYABLE: tuple[type[BaseException], ...] = (RayActorError, ReplicaUnavailableError, DeploymentUnavailableError)


class Unavailable(Exception):
    """No attempt left (or the Ranker is overloaded): answer 503 with ``Retry-After``."""

    def __init__(self, detail: str, retry_after_s: int) -> None:
        super().__init__(detail)
        self.detail, self.retry_after_s = detail, retry_after_s


async def call_with_retry(
    call: Callable[[], Awaitable[Any]],
    policy: RetryPolicy,
    idempotent: bool,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[Any, int]:
    """``(result of call(), retries used)``; retries an idempotent call on :data:`RETRYABLE` errors.

    Raises:
        Unavailable: The Ranker is overloaded (``BackPressureError``, not retried: retrying an
            overload amplifies it), or every attempt failed, or the budget ran out, or a
            non-idempotent call failed on a dead replica.
    """
    start, wait = clock(), policy.backoff_s
    for attempt in range(policy.attempts):
        try:
            return await call(), attempt
        except BackPressureError:
            raise Unavailable("the ranker is overloaded: retry later", policy.retry_after_s) from None
        except RETRYABLE as e:
            last = e
            if not idempotent or attempt + 1 >= policy.attempts or clock() - start + wait > policy.budget_s:
                break
        await asyncio.sleep(wait)
        wait *= 2
    raise Unavailable(
        f"no ranker replica answered ({type(last).__name__}) after {attempt + 1} attempt(s): retry later",
        policy.retry_after_s,
    ) from None
