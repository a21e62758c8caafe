"""The FastAPI application: ``create_app(settings)`` builds it; nothing happens at import.

``uvicorn --factory backend.app:create_app`` or ``anode-lab api`` serves it. At start-up a SQLite store's
integrity is checked and the schema migrated to the newest revision, then the store and the queues are opened.
Without API keys the app serves only loopback, whatever started it; it answers only the Host names in
``ANODE_ALLOWED_HOSTS`` (default the loopback names), and refuses a POST or DELETE a page of another site could
have sent. Slow clients are cut off by the server, not the app: ``anode-lab api`` serves it with
``backend.connections`` (request deadline, connections per peer), which plain uvicorn lacks. Proxy headers are the
app's own business (``ANODE_TRUSTED_PROXIES``): under plain uvicorn pass ``--no-proxy-headers``, since uvicorn
otherwise trusts ``X-Forwarded-For`` from 127.0.0.1.
"""

from __future__ import annotations

import gc
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import APIRouter, Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from backend.catalog.routes import router as catalog_router
from backend.catalog.service import catalog
from backend.db import DamagedStore, Database, check_integrity, migrate
from backend.deps import refuse_cross_site, require_api_key
from backend.errors import ERROR_RESPONSES, error_body, install_handlers
from backend.external.routes import router as external_router
from backend.groups.routes import router as groups_router
from backend.health.routes import router as health_router
from backend.queue import RunQueues
from backend.runs.routes import router as runs_router
from backend.runs.service import requeue_stored
from backend.security import (
    LoopbackOnlyWithoutKeys,
    SecurityHeaders,
    StreamLimit,
    StreamSlots,
    TokenBuckets,
    redact_access_log,
)
from backend.settings import API_PREFIX, Settings

DOCS_ASSETS = f"{API_PREFIX}/docs-assets"
"""Swagger UI's script, style and icon, from the ``fastapi-offline`` package: ``/docs`` renders with no internet."""


class _TooLarge(StarletteHTTPException):
    """An ``HTTPException`` so that FastAPI's body parser re-raises it (any other exception while reading the
    body becomes a 400 "error parsing the body") and the app's handler renders the 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request bodies are limited to {limit} bytes (ANODE_MAX_BODY_BYTES)")


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413, by Content-Length or while reading a stream."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._reject(send)
            return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge(self.limit)
            return message

        async def tracking(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracking)
        except _TooLarge:
            if not started:
                await self._reject(send)

    async def _reject(self, send: Send) -> None:
        body = json.dumps(error_body("body_too_large", f"request bodies are limited to {self.limit} bytes "
                                     "(ANODE_MAX_BODY_BYTES)")).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def prepare_store(settings: Settings) -> None:
    """What the API does once, before it serves: check a SQLite store's integrity, migrate the schema to the newest
    revision, and re-queue the runs stored as queued (a queue emptied meanwhile lost their messages)."""
    check_integrity(settings.db_url)
    migrate(settings.db_url, settings.data_dir)
    db, queues = Database(settings.db_url), RunQueues(settings)
    try:
        requeue_stored(db, queues)
    except Exception:  # the queue is down: serve anyway (/health says so); a starting worker re-queues them
        logging.getLogger("anode.api").exception("re-queueing stored queued runs failed")
    finally:
        queues.close()
        db.dispose()


def create_app(settings: Settings | None = None, *, prepared: bool = False) -> FastAPI:
    """The app; at start-up it runs :func:`prepare_store` unless ``prepared`` (``anode-lab api`` runs it once before
    it serves, from one process or several)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from anyio import CapacityLimiter, to_thread

        app.state.session_ends = CapacityLimiter(40)  # as many as the routes' threads (see backend.deps.get_session)
        if not prepared:
            await to_thread.run_sync(prepare_store, settings)
        app.state.db = Database(settings.db_url)
        app.state.queues = RunQueues(settings)
        await to_thread.run_sync(catalog)  # built once, off the first request
        gc.collect()
        gc.freeze()  # start-up objects leave the collector's view: full collections stop pausing requests
        try:
            yield
        finally:
            app.state.queues.close()
            app.state.db.dispose()

    app = FastAPIOffline(  # a FastAPI app whose docs page loads Swagger UI from the API, not from a CDN
        title="anode-lab",
        summary="Train neural ODEs and compare how their gradients are computed: runs, metrics, artifacts.",
        version="0.1.0",
        lifespan=lifespan,
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
        static_url=DOCS_ASSETS,
    )
    app.state.settings = settings
    app.state.create_limit = TokenBuckets(settings.create_rate_per_minute, settings.create_burst)
    app.state.streams = StreamSlots(settings.max_streams, settings.max_streams_per_client)
    redact_access_log()
    install_handlers(app)
    # the key check (and its X-API-Key in the OpenAPI contract) only where keys exist: a keyless API asks for none
    keyed = [Depends(require_api_key)] if settings.api_keys else []
    api = APIRouter(prefix=API_PREFIX, dependencies=[*keyed, Depends(refuse_cross_site)], responses=ERROR_RESPONSES)
    for router in (runs_router, external_router, groups_router, catalog_router, health_router):
        api.include_router(router)
    app.include_router(api)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(StreamLimit, settings=settings, slots=app.state.streams)
    if settings.cors_origins:  # closed unless configured: no CORS headers, so browsers keep other origins out
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                           allow_methods=["GET", "POST", "DELETE"], allow_headers=["X-API-Key", "Content-Type"],
                           expose_headers=["Retry-After"], max_age=600)
    # only the operator's Host names: a DNS-rebinding page (its own name resolved to 127.0.0.1) gets 400
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=settings.served_hosts, www_redirect=False)
    app.add_middleware(LoopbackOnlyWithoutKeys, settings=settings)  # outside it: its 403 says what to set
    app.add_middleware(SecurityHeaders)  # 403s, 413s, 429s and preflights get them too
    if settings.trusted_proxies:  # outermost: every check above sees the client the proxy names
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.trusted_proxies)
    return app


def serve(settings: Settings | None = None, **uvicorn_options: Any) -> int:
    """Serve the API (``anode-lab api``) from this process, or from ``settings.api_processes`` children of it that
    share its socket; refuses a non-loopback bind without API keys."""
    import sys

    from backend.connections import guarded_protocol, raise_open_files_limit

    settings = settings or Settings()
    try:
        settings.check_bind()
        prepare_store(settings)  # once, here, whatever the number of processes: the app is made `prepared`
    except (ValueError, DamagedStore) as exc:
        print(f"anode-lab api: {exc}", file=sys.stderr)
        return 2
    uvicorn_options.setdefault("proxy_headers", False)  # the app applies ANODE_TRUSTED_PROXIES itself
    raise_open_files_limit()
    if settings.api_processes == 1:
        uvicorn.run(create_app(settings, prepared=True), host=settings.host, port=settings.port,
                    http=guarded_protocol(settings), ws="none", **uvicorn_options)
        return 0
    from uvicorn.supervisors import Multiprocess

    config = ProcessConfig(settings, host=settings.host, port=settings.port, ws="none",
                           workers=settings.api_processes, **uvicorn_options)
    Multiprocess(config, sockets=[config.bind_socket()]).run()  # restarts a process that dies; SIGTERM ends all
    return 0


class ProcessConfig(uvicorn.Config):
    """uvicorn's config for each of ``settings.api_processes`` processes serving one socket: it is pickled to each,
    where :meth:`load` builds the app (already prepared) and the guarded protocol from ``settings`` (uvicorn's own
    ``--workers`` takes an import string and no settings)."""

    def __init__(self, settings: Settings, **options: Any) -> None:
        super().__init__(f"{__name__}:create_app", **options)
        self.settings = settings

    def load(self) -> None:
        from backend.connections import guarded_protocol

        self.app = create_app(self.settings, prepared=True)
        self.http = guarded_protocol(self.settings)
        super().load()
