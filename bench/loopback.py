"""Loopback helpers shared by the service benchmarks: a free port, and waiting for a server to answer."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait(probe: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> Any:
    """The first truthy value of ``probe()`` (connection errors count as not yet), or exit after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = probe()
        except httpx.TransportError:
            value = None
        if value:
            return value
        time.sleep(interval)
    raise SystemExit(f"timed out waiting for {what}")
