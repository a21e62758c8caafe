"""The API's connections: a request must arrive whole within ``ANODE_REQUEST_TIMEOUT_SECONDS``, and one peer
address may hold at most ``ANODE_MAX_CONNECTIONS_PER_PEER`` connections. ``anode-lab api`` serves with it.

uvicorn (0.55) has neither. ``timeout_keep_alive`` covers only the idle time between two requests and is
cancelled by the first byte of the next one, nothing times the request line, headers or body, and
``limit_concurrency`` answers 503 only once a request's headers are complete (uvicorn issue #157 lists
``--timeout-request-start`` as still to do). So a client that sends a header byte every few seconds holds its
connection, and a file descriptor, for as long as it likes, before any API key is looked at; ASGI middleware
cannot help, since it runs only after the headers are parsed. This is uvicorn's own httptools protocol with one
timer per connection, armed when the connection opens and when a request's first byte arrives, disarmed when the
request's last byte has arrived (a long response, such as an event stream, is never cut), and a count of open
connections per peer address. A connection whose request timed out half-way gets a 408 and is closed; one that sent
nothing is closed without an answer (as nginx does: a client's pooled or pre-opened connection must not read a
408 as the answer to the request it sends just then); a connection past its peer's cap gets a 429 and is closed
at once. Peers in ``ANODE_TRUSTED_PROXIES`` are not capped (every client behind a
proxy shares its address).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import resource
from collections import Counter
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from backend.errors import error_body
from backend.settings import Settings


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a request deadline and a per-peer connection cap; :func:`guarded_protocol`
    makes one subclass per server, holding that server's settings and its count of connections per peer."""

    request_timeout: ClassVar[float]
    per_peer: ClassVar[int]
    uncapped: ClassVar[frozenset[str] | None]
    """Peer addresses exempt from the cap (None: every peer is exempt)."""
    uncapped_networks: ClassVar[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]]
    open_by_peer: ClassVar[Counter[str]]

    _deadline: asyncio.TimerHandle | None = None
    _counted: str | None = None
    _partial = False
    """A request has begun and not yet arrived whole."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        peer = self.client[0] if self.client else None
        if peer is not None and self._capped(peer):
            if self.open_by_peer[peer] >= self.per_peer:
                self._answer_and_close(429, "too_many_connections",
                                       f"this address already holds {self.per_peer} connections "
                                       "(ANODE_MAX_CONNECTIONS_PER_PEER); reuse one (HTTP keep-alive) or close some")
                return
            self.open_by_peer[peer] += 1
            self._counted = peer
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._counted is not None:
            self.open_by_peer[self._counted] -= 1
            if self.open_by_peer[self._counted] <= 0:
                del self.open_by_peer[self._counted]
            self._counted = None
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._partial = True
        self._arm()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._partial = False
        self._disarm()

    def _capped(self, peer: str) -> bool:
        if self.uncapped is None or peer in self.uncapped:
            return False
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return True
        return not any(address in network for network in self.uncapped_networks)

    def _arm(self) -> None:
        if self._deadline is None:
            self._deadline = self.loop.call_later(self.request_timeout, self._timed_out)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _timed_out(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self._partial and (self.cycle is None or self.cycle.response_complete):  # never into a response
            self._answer_and_close(408, "request_timeout",
                                   f"the request did not arrive whole within {self.request_timeout:g} s "
                                   "(ANODE_REQUEST_TIMEOUT_SECONDS)")
        else:
            self.transport.close()

    def _answer_and_close(self, status: int, error: str, detail: str) -> None:
        body = json.dumps(error_body(error, detail)).encode()
        head = [STATUS_LINE[status], *(name + b": " + value + b"\r\n" for name, value in
                                       self.server_state.default_headers),
                b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body)]
        self.transport.write(b"".join(head) + body)
        self.transport.close()


def _uncapped(settings: Settings) -> tuple[frozenset[str] | None, tuple[Any, ...]]:
    if "*" in settings.trusted_proxies:
        return None, ()
    literals, networks = set(), []
    for entry in settings.trusted_proxies:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            literals.add(entry)
    return frozenset(literals), tuple(networks)


def guarded_protocol(settings: Settings) -> type[GuardedHttpToolsProtocol]:
    """The protocol class for one server: pass it to uvicorn as ``http=``."""
    uncapped, networks = _uncapped(settings)
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,),
                {"request_timeout": settings.request_timeout_seconds, "per_peer": settings.max_connections_per_peer,
                 "uncapped": uncapped, "uncapped_networks": networks, "open_by_peer": Counter()})


def raise_open_files_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit (as Go's runtime does at start) and return
    it: each connection holds a descriptor, and the usual soft limit of 1024 is reached long before memory is."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft
