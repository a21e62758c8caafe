"""Typed dependencies of the routes: settings, the unit-of-work session, the queues, the API key check.

Plain ``def``, like the routes (see ``backend/runs/routes.py``): FastAPI runs them on its thread pool, so the
session is opened, used and committed off the event loop.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader
from sqlalchemy.orm import Session

from backend.db import Database
from backend.errors import Forbidden, Unauthorized
from backend.queue import RunQueues
from backend.security import client_key, cross_site_refusal, valid_key
from backend.settings import Settings

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def get_queues(request: Request) -> RunQueues:
    queues: RunQueues = request.app.state.queues
    return queues


def get_session(request: Request) -> Iterator[Session]:
    """One unit of work per request, committed before the response is sent (scope "function"); a write session
    may wait for SQLite's write lock, on its worker thread."""
    db: Database = request.app.state.db
    with db.session(write=request.method not in READ_METHODS) as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings)]
DatabaseDep = Annotated[Database, Depends(get_db)]
QueuesDep = Annotated[RunQueues, Depends(get_queues)]
SessionDep = Annotated[Session, Depends(get_session, scope="function")]

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                              description="required when the server has ANODE_API_KEYS")


def require_api_key(settings: SettingsDep, key: Annotated[str | None, Security(api_key_header)]) -> None:
    """With keys configured, the request must carry one of them (compared in constant time)."""
    if settings.api_keys and not valid_key(settings, key):
        raise Unauthorized("missing or unknown API key: send it in the X-API-Key header")


async def refuse_cross_site(request: Request, settings: SettingsDep) -> None:
    """A POST or DELETE a page of another site could have sent is refused (403) before anything happens; after
    the key check, so a request without a key still hears 401 (see ``backend.security.cross_site_refusal``)."""
    refusal = cross_site_refusal(request.method, request.headers, settings.cors_origins)
    if refusal is not None:
        raise Forbidden(refusal)


def limit_creation(request: Request, settings: SettingsDep) -> None:
    """Run creation is rate limited per client, its valid API key else its peer address: 429 with ``Retry-After``
    past the burst (see backend.security). The key is read as is: ``require_api_key`` declares and checks it."""
    take_creation_tokens(request, settings, 1)


def take_creation_tokens(request: Request, settings: Settings, runs: int) -> None:
    """:func:`limit_creation` for a request that creates ``runs`` runs: one token each."""
    key = request.headers.get("X-API-Key")
    client = client_key(settings, key, request.client.host if request.client else None)
    request.app.state.create_limit.check(client, runs)
