"""Schemathesis against the API's own /openapi.json: no 5xx, no answer outside the schema;
without tokens, and with tokens (an admin's; schemathesis also checks that a request
without the token is refused)."""

import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings

from remsim_api.app import create_app
from remsim_api.security import ApiSecurity, TokenFile
from remsim_common.pki import token_line
from remsim_control import MemoryBus, MemoryStore

ADMIN = "admin-token-of-the-schemathesis-run"
_TOKENS = tempfile.TemporaryDirectory()  # removed when the test process ends
_tokens_file = Path(_TOKENS.name) / "api-tokens"
_tokens_file.write_text(token_line("ada", "admin", ADMIN) + "\n")

app = create_app(MemoryStore(), MemoryBus())
schema = schemathesis.openapi.from_asgi("/openapi.json", app)
guarded = create_app(
    MemoryStore(), MemoryBus(), security=ApiSecurity(tokens=TokenFile(_tokens_file))
)
guarded_schema = schemathesis.openapi.from_asgi("/openapi.json", guarded)


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_api_keeps_to_its_schema(case: schemathesis.Case) -> None:
    case.call_and_validate()


@guarded_schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_api_with_tokens_keeps_to_its_schema(case: schemathesis.Case) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {ADMIN}"})
