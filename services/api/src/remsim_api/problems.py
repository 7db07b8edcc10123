"""RFC 9457 problem responses for every error the API answers (the original sends empty
bodies)."""

from __future__ import annotations

import http
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from remsim_api import audit
from remsim_control import BackendUnavailable

PROBLEM_JSON = "application/problem+json"


class ApiError(Exception):
    """Base of remsim_api's errors: an HTTP status with an explanation for the caller."""

    def __init__(self, status: int, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.extra = extra


def problem(
    status: int,
    detail: str | None = None,
    *,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": http.HTTPStatus(status).phrase,
        "status": status,
    }
    if detail is not None:
        body["detail"] = detail
    if instance is not None:
        body["instance"] = instance
    body.update(extra)
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    errors = []
    for error in exc.errors():
        invalid_json = error.get("type") == "json_invalid"
        errors.append(
            {
                "loc": ["body"] if invalid_json else [str(part) for part in error.get("loc", ())],
                "msg": "not valid JSON" if invalid_json else error.get("msg", ""),
            }
        )
    return errors


async def _on_api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    audit.note(request.scope, detail=exc.detail)
    return problem(exc.status, exc.detail, instance=request.url.path, **exc.extra)


async def _on_backend_unavailable(request: Request, exc: Exception) -> JSONResponse:
    detail = f"shared state unavailable: {exc}"
    audit.note(request.scope, detail=detail)
    return problem(503, detail, instance=request.url.path)


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = _validation_errors(exc)
    detail = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors) or "invalid request"
    audit.note(request.scope, detail=detail)
    return problem(400, detail, instance=request.url.path, errors=errors)


async def _on_http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if exc.detail != http.HTTPStatus(exc.status_code).phrase else None
    audit.note(request.scope, detail=detail)
    headers = dict(exc.headers) if exc.headers else {}
    if exc.status_code == 405:
        # Starlette names only the first route matching the path; list them all.
        headers["Allow"] = ", ".join(_allowed_methods(request))
    return problem(exc.status_code, detail, instance=request.url.path, headers=headers or None)


def _allowed_methods(request: Request) -> list[str]:
    routes: list[tuple[re.Pattern[str], set[str]]] = getattr(request.app.state, "routes", [])
    path = request.scope["path"]
    return sorted({m for regex, methods in routes if regex.match(path) for m in methods})


def install(app: FastAPI, routes: list[tuple[re.Pattern[str], set[str]]]) -> None:
    """Answer every error with a problem; ``routes`` (path pattern, methods) for ``Allow``."""
    app.state.routes = routes
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(BackendUnavailable, _on_backend_unavailable)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
