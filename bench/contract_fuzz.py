"""Schema-driven fuzzing of the recommender's HTTP contract with schemathesis, in process.

The app is the real FastAPI ingress bound to a real in-process Ingress (real registry, ORT, event
log: ``serve_apps.api.serve_in_process``), loaded with ``schemathesis.openapi.from_asgi``. Every
operation is fuzzed with schema-valid (positive) and schema-invalid (negative) data under every
default check (no 5xx, status-code / content-type / header / response-schema conformance,
positive-data acceptance, negative-data rejection, missing headers, ignored auth, unsupported
methods ...), then a stateful run follows the document's links (status -> recommendations ->
events). A failed check is counted and kept, never raised, so one run reports all of them.

Used by tests/serve_apps/test_contract.py (a few hundred cases) and bench/chaos.py (>= 5,000).
"""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["FuzzResult", "fuzz_contract"]


@dataclasses.dataclass
class FuzzResult:
    cases: int = 0
    stateful_steps: int = 0
    failures: list[str] = dataclasses.field(default_factory=list)
    statuses: dict[str, int] = dataclasses.field(default_factory=dict)  # "<operation> <status>" -> count

    def count(self, case, status: int) -> None:  # noqa: ANN001
        key = f"{case.method} {case.path} {status}"
        self.statuses[key] = self.statuses.get(key, 0) + 1


def _record(result: FuzzResult, case: Any) -> None:
    result.cases += 1
    try:
        response = case.call_and_validate()
    except (Exception, BaseExceptionGroup) as e:  # noqa: BLE001 - a failed check: keep its text, go on fuzzing
        result.failures.append(f"{case.method} {case.formatted_path}: {str(e)[:600]}")
        return
    result.count(case, response.status_code)


def _live_tenant(case: Any, tenants: list[str], draw: int) -> Any:
    case.path_parameters = {**(case.path_parameters or {}), "tenant_id": tenants[draw % len(tenants)]}
    return case


def fuzz_contract(app: Any, examples_per_mode: int, stateful_examples: int = 0, seed: int = 0,
                  tenants: list[str] | None = None) -> FuzzResult:
    """Fuzz ``app`` (an ASGI app serving /openapi.json): ``examples_per_mode`` positive and as many
    negative cases per operation, as many positive ones again addressed to the live ``tenants``
    (random ids almost never name a published tenant, so this is what reaches ranking and the
    event log), then ``stateful_examples`` stateful scenarios over the document's links."""
    import hypothesis
    import schemathesis
    from schemathesis.generation.modes import GenerationMode

    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    result = FuzzResult()
    settings = hypothesis.settings(max_examples=examples_per_mode, deadline=None, database=None, derandomize=seed == 0,
                                   suppress_health_check=list(hypothesis.HealthCheck), phases=[hypothesis.Phase.generate])
    st = hypothesis.strategies
    for op in schema.get_all_operations():
        operation = op.ok()
        strategies = [operation.as_strategy(generation_mode=m) for m in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)]
        if tenants and "{tenant_id}" in operation.path:
            strategies.append(st.tuples(operation.as_strategy(), st.integers(0, 1 << 16)).map(
                lambda pair: _live_tenant(pair[0], tenants, pair[1])))
        for strategy in strategies:
            @settings
            @hypothesis.given(case=strategy)
            def one(case: Any) -> None:
                _record(result, case)

            try:
                one()
            except hypothesis.errors.Unsatisfiable:
                continue  # no schema-invalid input exists for it (an operation without parameters)
    if stateful_examples:
        _stateful(schema, result, stateful_examples)
    return result


def _stateful(schema: Any, result: FuzzResult, examples: int) -> None:
    import hypothesis

    machine = schema.as_state_machine()

    class Counting(machine):  # type: ignore[misc, valid-type]
        def validate_response(self, response: Any, case: Any, **kw: Any) -> None:
            result.stateful_steps += 1
            result.count(case, response.status_code)
            try:
                super().validate_response(response, case, **kw)
            except (Exception, BaseExceptionGroup) as e:  # noqa: BLE001
                result.failures.append(f"stateful {case.method} {case.formatted_path}: {str(e)[:600]}")

    settings = hypothesis.settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                                   stateful_step_count=6, suppress_health_check=list(hypothesis.HealthCheck),
                                   phases=[hypothesis.Phase.generate])
    Counting.run(settings=settings)
