"""Hardening that is not a route: security headers on every response, the rate limit on run creation, the cap on
concurrent streams, loopback-only service without keys, cross-site requests refused, and key-like query parameters
kept out of the access log.

The limit is a token bucket per client (its validated API key, else its peer address) held in the API process:
``create_burst`` runs at once, then ``create_rate_per_minute``. About thirty lines, where ``limits``/``slowapi``
would add two dependencies and a storage abstraction for one counter. With several API processes each keeps its
own buckets, so the limit is per process; it bounds a flood, it is not a quota.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import math
import re
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from urllib.parse import unquote_plus, urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend.errors import RateLimited, error_body
from backend.settings import Settings, is_loopback

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"frame-ancestors 'none'"),
    (b"referrer-policy", b"no-referrer"),
]
def json_error_headers() -> dict[str, str]:
    """What :class:`SecurityHeaders` adds to a JSON response, for responses rendered outside it (500s)."""
    return {**{name.decode(): value.decode() for name, value in SECURITY_HEADERS}, "Cache-Control": "no-store"}


DOCS_SUFFIXES = ("/docs", "/docs/oauth2-redirect")
"""Swagger UI's page starts it with an inline script: it gets no ``Content-Security-Policy``."""


class SecurityHeaders:
    """Add ``SECURITY_HEADERS`` to every HTTP response, and ``Cache-Control: no-store`` to JSON ones (runs change
    under a client; a shared cache must never keep them, nor an error with a key in its context)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        docs = scope["path"].endswith(DOCS_SUFFIXES)

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                for name, value in SECURITY_HEADERS:
                    if name not in present and not (docs and name == b"content-security-policy"):
                        headers.append((name, value))
                content_type = next((v for n, v in headers if n.lower() == b"content-type"), b"")
                if content_type.startswith(b"application/json") and b"cache-control" not in present:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


class TokenBuckets:
    """One bucket of ``burst`` tokens per client, refilled at ``per_minute / 60`` tokens a second."""

    MAX_CLIENTS = 10_000

    def __init__(self, per_minute: float, burst: int) -> None:
        self.rate, self.burst = per_minute / 60.0, float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, client: str, count: int = 1) -> float:
        """Take ``count`` tokens (at most ``burst``) for ``client``: 0 if granted, else the seconds until they are
        available."""
        now = time.monotonic()
        with self._lock:
            tokens, at = self._buckets.get(client, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            if tokens >= count:
                if len(self._buckets) >= self.MAX_CLIENTS and client not in self._buckets:
                    self._forget_full(now)
                self._buckets[client] = (tokens - count, now)
                return 0.0
            self._buckets[client] = (tokens, now)
            return (count - tokens) / self.rate

    def _forget_full(self, now: float) -> None:
        """Drop buckets that have refilled (they hold nothing a new bucket would not)."""
        full = [c for c, (tokens, at) in self._buckets.items() if tokens + (now - at) * self.rate >= self.burst]
        for client in full:
            del self._buckets[client]

    def check(self, client: str, runs: int = 1) -> None:
        """One token per run created (a group of 8 methods takes 8); 429 with the wait when they are not there."""
        if runs > self.burst:
            raise RateLimited(f"this request creates {runs} runs, more than the {self.burst:.0f} one client may create "
                              "at once (ANODE_CREATE_BURST): send fewer methods per group, or ask the operator to "
                              "raise it", retry_after=math.ceil(runs / self.rate))
        wait = self.take(client, runs)
        if wait:
            raise RateLimited(f"too many runs created: at most {self.burst:.0f} at once, then "
                              f"{self.rate * 60:g} a minute (ANODE_CREATE_BURST, ANODE_CREATE_RATE_PER_MINUTE); "
                              f"retry in {math.ceil(wait)} s", retry_after=math.ceil(wait))


def valid_key(settings: Settings, offered: str | None) -> bool:
    """``offered`` is one of the configured API keys (compared in constant time)."""
    matched = False
    for known in settings.api_keys:
        matched |= hmac.compare_digest((offered or "").encode(), known.encode())
    return matched


def client_key(settings: Settings, api_key: str | None, address: str | None) -> str:
    """Who is limited: a digest of a *valid* API key (the key itself is kept nowhere), else the peer address
    (the proxy's client only from ``ANODE_TRUSTED_PROXIES``). A made-up key is not a new client."""
    if api_key and valid_key(settings, api_key):
        return "key:" + hashlib.sha256(api_key.encode()).hexdigest()[:16]
    return f"addr:{address or 'unknown'}"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            text: str = value.decode("latin-1")
            return text
    return None


async def _refuse(send: Send, status: int, error: str, detail: str, headers: list[tuple[bytes, bytes]]) -> None:
    body = json.dumps(error_body(error, detail)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


class StreamSlots:
    """Counts the event streams and metric reads being served, in all and per client."""

    RETRY_AFTER_S = 5

    def __init__(self, total: int, per_client: int) -> None:
        self.total, self.per_client = total, per_client
        self.held: Counter[str] = Counter()
        self._lock = threading.Lock()

    @property
    def active(self) -> int:
        return sum(self.held.values())

    def take(self, client: str) -> str | None:
        """Hold a slot for ``client``; else the sentence saying which limit refused it."""
        with self._lock:
            if self.held[client] >= self.per_client:
                return (f"this client already holds {self.per_client} event streams or metric reads "
                        "(ANODE_MAX_STREAMS_PER_CLIENT): close one, or retry later")
            if self.active >= self.total:
                return f"the API serves {self.total} event streams and metric reads at most (ANODE_MAX_STREAMS)"
            self.held[client] += 1
            return None

    def give(self, client: str) -> None:
        with self._lock:
            self.held[client] -= 1
            if self.held[client] <= 0:
                del self.held[client]


STREAM_PATH = re.compile(r"/runs/[^/]+/(events|metrics)$")


class StreamLimit:
    """Hold a :class:`StreamSlots` slot for as long as an event stream or a metrics read is served, ended or
    broken; 429 with ``Retry-After`` beyond the limits."""

    def __init__(self, app: ASGIApp, settings: Settings, slots: StreamSlots) -> None:
        self.app, self.settings, self.slots = app, settings, slots

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET" or not STREAM_PATH.search(scope["path"]):
            await self.app(scope, receive, send)
            return
        client = client_key(self.settings, _header(scope, b"x-api-key"), (scope.get("client") or (None,))[0])
        refusal = self.slots.take(client)
        if refusal is not None:
            await _refuse(send, 429, "too_many_streams", refusal,
                          [(b"retry-after", str(self.slots.RETRY_AFTER_S).encode())])
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.slots.give(client)


def _is_ip_beyond_loopback(host: str | None) -> bool:
    """True only for an IP address that is not loopback (in-process test clients and Unix sockets have none)."""
    if not host:
        return False
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return not is_loopback(host)


class LoopbackOnlyWithoutKeys:
    """Without API keys the API serves only loopback: whatever started it (``anode-lab api`` refuses the bind
    itself; ``uvicorn --factory backend.app:create_app --host 0.0.0.0`` does not), a request that arrived on or
    from an address beyond loopback gets a 403 saying to set ``ANODE_API_KEYS``."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app, self.settings = app, settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and not self.settings.api_keys:
            server = (scope.get("server") or (None,))[0]
            client = (scope.get("client") or (None,))[0]
            if _is_ip_beyond_loopback(server) or _is_ip_beyond_loopback(client):
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008})
                    return
                await _refuse(send, 403, "keys_required",
                              "this API has no API keys, so it serves only this machine (loopback): set "
                              "ANODE_API_KEYS (comma-separated) to serve other hosts, or bind 127.0.0.1", [])
                return
        await self.app(scope, receive, send)


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
NOT_A_FORM_HEADERS = ("x-requested-with", "x-api-key")
"""Headers a browser sends to another origin only after a CORS preflight (which this API refuses unless the
origin is in ``ANODE_CORS_ORIGINS``): a request that carries one was not sent by a page of another site."""


def cross_site_refusal(method: str, headers: Mapping[str, str], allowed_origins: Sequence[str]) -> str | None:
    """Why a state-changing request may have come from a page of another site, or None when it cannot have.

    A browser sends a "simple" POST (a form, or ``fetch`` with ``mode: "no-cors"``) to any site without asking
    first, with the user's network position: on loopback, or after DNS rebinding, that is enough to cancel or
    queue runs. Such a POST has no JSON content type and no custom header, so one of them is required; and a
    request that says where it came from (``Origin``, ``Sec-Fetch-Site``) must come from this API's own origin
    or one of ``ANODE_CORS_ORIGINS``. Other methods (DELETE) cannot be sent across sites without a preflight;
    they get the origin check too."""
    if method.upper() in SAFE_METHODS:
        return None
    origin = headers.get("origin")
    trusted = origin is not None and origin in allowed_origins
    if origin is not None and not trusted and _netloc(origin) != headers.get("host", "").lower():
        return (f"{method} from another site (Origin {origin[:100]!r}) is refused: the API changes state only "
                "for requests from its own origin or one listed in ANODE_CORS_ORIGINS")
    fetch_site = headers.get("sec-fetch-site", "").lower()
    if fetch_site in ("cross-site", "same-site") and not trusted:
        return (f"{method} sent by a page of another site (Sec-Fetch-Site: {fetch_site}) is refused: list that "
                "page's origin in ANODE_CORS_ORIGINS if it may change runs")
    media_type = headers.get("content-type", "").partition(";")[0].strip().lower()
    if method.upper() == "POST" and media_type != "application/json" and not any(
            name in headers for name in NOT_A_FORM_HEADERS):
        return ("a POST must show it is not a browser form: send `Content-Type: application/json` (curl: -H "
                "'Content-Type: application/json') or an `X-Requested-With` header; "
                + (f"got Content-Type {media_type!r}" if media_type else "got no Content-Type"))
    return None


def _netloc(origin: str) -> str:
    """``host:port`` of an ``Origin`` (``null`` and anything unparsable give ``""``, which matches no Host)."""
    return urlsplit(origin).netloc.lower() if "://" in origin else ""


KEY_LIKE = re.compile(r"key|token|secret|passw|auth|credential|signature|session|^sig$", re.IGNORECASE)
REDACTED = "[redacted]"


def redact_query(target: str) -> str:
    """``target`` (a path with its query) with the value of every key-like query parameter replaced."""
    path, mark, query = target.partition("?")
    if not mark:
        return target
    items = []
    for item in query.split("&"):
        name = item.partition("=")[0]
        items.append(f"{name}={REDACTED}" if KEY_LIKE.search(unquote_plus(name)) else item)
    return f"{path}?{'&'.join(items)}"


class RedactQuery(logging.Filter):
    """On uvicorn's access log: no key-like query parameter value is ever written (a key sent as ``?api_key=``
    by mistake stays out of the logs)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact_query(a) if isinstance(a, str) and "?" in a else a for a in record.args)
        return True


def redact_access_log() -> None:
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactQuery) for f in access.filters):
        access.addFilter(RedactQuery())
