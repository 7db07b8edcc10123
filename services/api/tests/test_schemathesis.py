"""Schemathesis against the API's own /openapi.json: no 5xx, no answer outside the schema."""

import schemathesis
from hypothesis import HealthCheck, settings

from remsim_api.app import create_app
from remsim_control import MemoryBus, MemoryStore

app = create_app(MemoryStore(), MemoryBus())
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_api_keeps_to_its_schema(case: schemathesis.Case) -> None:
    case.call_and_validate()
