"""Typed dependencies of the routes: settings, the unit-of-work session, the queues, the API key check.

No dependency blocks the event loop, and none costs a trip to the thread pool it does not need: the ones that
only read the app's state are ``async def`` (FastAPI runs a plain ``def`` dependency on its thread pool, a hop of
about 0.1 ms of CPU and a wait in the loop's queue each); the session is created on the loop, where creating it
does no I/O (it connects on its first query, in the route's thread), and committed and closed on the thread pool.
So a request makes three hops (its route, FastAPI's check of the route's answer, its commit) instead of five
or more.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial
from typing import Annotated

from anyio import CapacityLimiter, to_thread
from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader
from sqlalchemy.orm import Session

from backend.db import Database
from backend.errors import Forbidden, Unauthorized
from backend.queue import RunQueues
from backend.security import client_key, cross_site_refusal, valid_key
from backend.settings import Settings

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


async def get_queues(request: Request) -> RunQueues:
    queues: RunQueues = request.app.state.queues
    return queues


async def get_session(request: Request) -> AsyncIterator[Session]:
    """One unit of work per request, committed before the response is sent (scope "function"). The session is
    made here without I/O; its queries run in the plain ``def`` route, on the thread pool, and so do its commit
    (a write session may wait for SQLite's write lock there) and its close, with threads of their own
    (``app.state.session_ends``): a session holds its connection until it ends, so if ending waited for the
    routes' threads, routes waiting for a connection could hold every thread while the sessions that hold the
    connections wait to end (the pool's 30 s timeout, then 500s). FastAPI's check of a plain ``def`` route's
    answer still takes a pool thread while the session holds its connection, so more requests in flight than
    threads plus connections (80) could still stall that way."""
    db: Database = request.app.state.db
    session = db.open(write=request.method not in READ_METHODS)
    ending: CapacityLimiter = request.app.state.session_ends
    try:
        yield session
    except BaseException:
        await to_thread.run_sync(partial(db.end, session, ok=False), limiter=ending)
        raise
    await to_thread.run_sync(partial(db.end, session, ok=True), limiter=ending)


SettingsDep = Annotated[Settings, Depends(get_settings)]
DatabaseDep = Annotated[Database, Depends(get_db)]
QueuesDep = Annotated[RunQueues, Depends(get_queues)]
SessionDep = Annotated[Session, Depends(get_session, scope="function")]

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                              description="required when the server has ANODE_API_KEYS")


async def require_api_key(settings: SettingsDep, key: Annotated[str | None, Security(api_key_header)]) -> None:
    """With keys configured, the request must carry one of them (compared in constant time)."""
    if settings.api_keys and not valid_key(settings, key):
        raise Unauthorized("missing or unknown API key: send it in the X-API-Key header")


async def refuse_cross_site(request: Request, settings: SettingsDep) -> None:
    """A POST or DELETE a page of another site could have sent is refused (403) before anything happens; after
    the key check, so a request without a key still hears 401 (see ``backend.security.cross_site_refusal``)."""
    refusal = cross_site_refusal(request.method, request.headers, settings.cors_origins)
    if refusal is not None:
        raise Forbidden(refusal)


async def limit_creation(request: Request, settings: SettingsDep) -> None:
    """Run creation is rate limited per client, its valid API key else its peer address: 429 with ``Retry-After``
    past the burst (see backend.security). The key is read as is: ``require_api_key`` declares and checks it."""
    take_creation_tokens(request, settings, 1)


def take_creation_tokens(request: Request, settings: Settings, runs: int) -> None:
    """:func:`limit_creation` for a request that creates ``runs`` runs: one token each."""
    key = request.headers.get("X-API-Key")
    client = client_key(settings, key, request.client.host if request.client else None)
    request.app.state.create_limit.check(client, runs)
