"""Hardening that is not a route: security headers on every response and the rate limit on run creation.

The limit is a token bucket per client (its API key, else its address) held in the API process: ``create_burst``
runs at once, then ``create_rate_per_minute``. About thirty lines, where ``limits``/``slowapi`` would add two
dependencies and a storage abstraction for one counter. With several API processes each keeps its own buckets,
so the limit is per process; it bounds a flood, it is not a quota.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend.errors import RateLimited

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"frame-ancestors 'none'"),
    (b"referrer-policy", b"no-referrer"),
]
DOCS_SUFFIXES = ("/docs", "/docs/oauth2-redirect")
"""Swagger UI loads its script from a CDN and runs inline: it gets no ``Content-Security-Policy``."""


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

    def take(self, client: str) -> float:
        """Take a token for ``client``: 0 if granted, else the seconds until one is available."""
        now = time.monotonic()
        with self._lock:
            tokens, at = self._buckets.get(client, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            if tokens >= 1.0:
                if len(self._buckets) >= self.MAX_CLIENTS and client not in self._buckets:
                    self._forget_full(now)
                self._buckets[client] = (tokens - 1.0, now)
                return 0.0
            self._buckets[client] = (tokens, now)
            return (1.0 - tokens) / self.rate

    def _forget_full(self, now: float) -> None:
        """Drop buckets that have refilled (they hold nothing a new bucket would not)."""
        full = [c for c, (tokens, at) in self._buckets.items() if tokens + (now - at) * self.rate >= self.burst]
        for client in full:
            del self._buckets[client]

    def check(self, client: str) -> None:
        wait = self.take(client)
        if wait:
            raise RateLimited(f"too many runs created: at most {self.burst:.0f} at once, then "
                              f"{self.rate * 60:g} a minute (ANODE_CREATE_BURST, ANODE_CREATE_RATE_PER_MINUTE); "
                              f"retry in {math.ceil(wait)} s", retry_after=math.ceil(wait))


def client_key(api_key: str | None, address: str | None) -> str:
    """Who is limited: a digest of the API key (the key itself is kept nowhere), else the peer address."""
    if api_key:
        return "key:" + hashlib.sha256(api_key.encode()).hexdigest()[:16]
    return f"addr:{address or 'unknown'}"
