"""Domain errors carry their HTTP status; :func:`install_handlers` renders every error as ``{"error", "detail"}``.

Services raise these, never ``HTTPException``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match


class DomainError(Exception):
    status_code = 400
    error = "bad_request"

    def __init__(self, detail: str, *, errors: Sequence[dict[str, Any]] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = list(errors) if errors is not None else None


class NotFound(DomainError):
    status_code = 404
    error = "not_found"


class Conflict(DomainError):
    status_code = 409
    error = "conflict"


class InvalidSpec(DomainError):
    status_code = 422
    error = "invalid_spec"


class Unauthorized(DomainError):
    status_code = 401
    error = "unauthorized"


class Forbidden(DomainError):
    status_code = 403
    error = "forbidden"


class QueueUnavailable(DomainError):
    status_code = 503
    error = "queue_unavailable"


class RateLimited(DomainError):
    status_code = 429
    error = "rate_limited"

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail)
        self.headers = {"Retry-After": str(retry_after)}


class ErrorBody(BaseModel):
    """Every error response: a machine-readable ``error``, a sentence saying what to fix, and for invalid
    requests the pydantic ``errors`` (each with ``loc``, ``msg``, ``type``)."""

    error: str
    detail: str
    errors: list[dict[str, Any]] | None = None


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in [
        (400, "the body is not JSON"), (401, "missing or unknown API key"),
        (403, ("the API has no keys and serves only loopback, or a POST or DELETE came from another site or "
                "without a JSON content type or an X-Requested-With header")), (404, "no such run, artifact or route"),
        (409, "the run's state does not allow it"), (413, "request body too large"),
        (422, "invalid request or spec"),
        (429, "too many runs created, or too many streams held; retry after Retry-After seconds"),
        (500, "an unexpected error (logged by the server)"),
        (503, ("the store cannot write (disk full, read-only, locked too long), or the queue refused the run (it is "
               "stored and queued when a worker starts)")),
    ]
}
"""Documented on every ``/api/v1`` operation, so the OpenAPI contract lists every status the API answers."""


def error_body(error: str, detail: str, errors: Sequence[dict[str, Any]] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"error": error, "detail": detail}
    if errors is not None:
        body["errors"] = list(errors)
    return body


def describe_errors(errors: Sequence[Any]) -> tuple[str, list[dict[str, Any]]]:
    """One line naming every bad field (``spec.ode.steps: …``) and the JSON-safe list of pydantic errors."""
    clean = [{"loc": [str(part) for part in e["loc"]], "msg": str(e["msg"]), "type": str(e["type"])} for e in errors]
    parts = []
    for e in clean:
        loc = [part for part in e["loc"] if part != "body"]
        parts.append(f"{'.'.join(loc) or 'body'}: {e['msg']}")
    return "; ".join(parts), clean


STORE_RETRY_AFTER_S = 30
STORE_FAILURES = [
    (("full", "no space"), ("disk full: the store cannot write; free disk space where ANODE_DATA_DIR (or the "
                            "database server) keeps it")),
    (("readonly", "read-only", "read only"), "the store is read-only: make its file and folder writable"),
    (("locked", "busy", "lock timeout", "lock not available"),
     "the store stayed locked too long by another process; retry"),
    (("disk i/o", "i/o error"), "the store's disk failed to read or write (I/O error); check the disk"),
]


def store_failure(exc: OperationalError) -> str:
    """One sentence saying why the store refused, without the driver's message (it may name tables and SQL)."""
    text = str(getattr(exc, "orig", exc)).lower()
    for needles, reason in STORE_FAILURES:
        if any(needle in text for needle in needles):
            return reason
    return "the store cannot be reached or cannot write; see the server's log"


def allowed_methods(request: Request) -> str:
    """Every method some route serves at this path (Starlette's 405 names only the first route's)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches({**request.scope, "method": "GET"})
        if match != Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods))


def install_handlers(app: FastAPI) -> None:
    from backend.security import json_error_headers

    log = logging.getLogger("anode.api")

    async def store(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, OperationalError)
        reason = store_failure(exc)
        log.error("store error on %s %s: %s", request.method, request.url.path, reason, exc_info=exc)
        return JSONResponse(error_body("store_unavailable", reason), status_code=503,
                            headers={"Retry-After": str(STORE_RETRY_AFTER_S)})

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        """Starlette's outermost middleware renders this, outside every other middleware: it carries the
        security headers itself."""
        log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        if isinstance(exc, OperationalError):
            return JSONResponse(error_body("store_unavailable", store_failure(exc)), status_code=503,
                                headers={"Retry-After": str(STORE_RETRY_AFTER_S), **json_error_headers()})
        return JSONResponse(error_body("internal_error", "an unexpected error; the server's log has the details"),
                            status_code=500, headers=json_error_headers())

    async def domain(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, DomainError)
        return JSONResponse(error_body(exc.error, exc.detail, exc.errors), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    async def validation(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        detail, errors = describe_errors(exc.errors())
        return JSONResponse(error_body("invalid_request", detail, errors), status_code=422)

    async def http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        name = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(exc.status_code, "http_error")
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            headers["Allow"] = allowed_methods(request)
        return JSONResponse(error_body(name, str(exc.detail)), status_code=exc.status_code, headers=headers or None)

    app.add_exception_handler(DomainError, domain)
    app.add_exception_handler(RequestValidationError, validation)
    app.add_exception_handler(StarletteHTTPException, http)
    app.add_exception_handler(OperationalError, store)
    app.add_exception_handler(Exception, unexpected)
