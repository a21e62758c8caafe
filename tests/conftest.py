"""Session-wide test settings.

The numerical tests solve tiny problems; torch's intra-op thread pool only adds synchronisation there, and on a
shared CPU it is far slower (a 2-block conv solve: 0.5 ms with one thread, 50 ms with two contended ones).
Torch is not imported here, so suites that must run without it (dashboard, API) are unaffected.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import Any

import pytest


def missing(reason: str) -> None:
    """Skip for a missing server outside CI; under CI, where scripts/test installs them all, fail instead."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must not skip the distributed configuration")
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != 1:
        torch.set_num_threads(1)
    yield


@pytest.fixture(scope="session")
def redis_server() -> Iterator[object]:
    """A password-protected ``redis-server`` on loopback for the session (see ``tests/servers.py``)."""
    import importlib.util
    import shutil

    if importlib.util.find_spec("redis") is None:
        missing("the `redis` extra is not installed (scripts/test installs it)")
    binary = shutil.which("redis-server")
    if binary is None:
        missing("redis-server is not installed (scripts/test installs it)")
    from servers import RedisServer

    server = RedisServer(binary)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[object]:
    """A throw-away PostgreSQL cluster on loopback for the session (see ``tests/servers.py``)."""
    import importlib.util

    if importlib.util.find_spec("psycopg") is None:
        missing("the `postgres` extra is not installed (scripts/test installs it)")
    from servers import PostgresServer, postgres_bin

    bindir = postgres_bin()
    if bindir is None:
        missing("PostgreSQL's server is not installed (scripts/test installs Debian's postgresql)")
    server = PostgresServer(bindir)
    yield server
    server.stop()


@pytest.fixture
def client(service: Any) -> Iterator[Any]:
    """An HTTP client of the module's ``service`` fixture (a ``service_helpers.Service``)."""
    import httpx

    # not a browser form: a bodiless POST (cancel, rerun) carries X-Requested-With, as the dashboard's client does
    with httpx.Client(base_url=service.url, timeout=10, headers={"X-Requested-With": "anode-lab-tests"}) as http:
        yield http
