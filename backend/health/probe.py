"""``anode-lab health``: the probe a container health check runs. Exit status 0 when healthy, 1 when not.

* API: ``GET /api/v1/health`` on this host's API port answers ``status: ok`` (with the first API key).
* ``--worker``: a worker on this host (a container has its own host name) renewed its heartbeat within
  ``ANODE_HEARTBEAT_TIMEOUT_SECONDS``; it reads the store, never the API, so a worker host needs no API.
"""

from __future__ import annotations

import json
import socket
import urllib.request
from datetime import timedelta

from sqlalchemy.exc import SQLAlchemyError

from backend.settings import API_PREFIX, Settings

TIMEOUT_S = 5.0


def local_api_url(settings: Settings) -> str:
    """Where this host reaches its own API: a wildcard bind is reached on loopback."""
    host = settings.host
    if host in {"0.0.0.0", "::", ""}:
        host = "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{settings.port}{API_PREFIX}"


def api_problem(settings: Settings) -> str | None:
    headers = {"X-API-Key": settings.api_keys[0]} if settings.api_keys else {}
    request = urllib.request.Request(f"{local_api_url(settings)}/health", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            body = json.load(response)
    except (OSError, ValueError) as exc:
        return f"the API at {local_api_url(settings)} did not answer: {exc}"
    if body.get("status") != "ok":
        return f"the API is {body.get('status')!r}: database {body.get('database')}, queue {body.get('queue')}"
    return None


def worker_problem(settings: Settings, hostname: str | None = None) -> str | None:
    from backend.db import Database, utcnow
    from backend.workers import repository as workers

    hostname = hostname or socket.gethostname()
    cutoff = utcnow() - timedelta(seconds=settings.heartbeat_timeout_seconds)
    db = Database(settings.db_url)
    try:
        with db.session() as session:
            mine = [w for w in workers.live(session, cutoff) if w.hostname == hostname]
    except SQLAlchemyError as exc:
        return f"the store cannot be read: {exc}"
    finally:
        db.dispose()
    return None if mine else f"no worker on {hostname} renewed its heartbeat in the last " \
                             f"{settings.heartbeat_timeout_seconds:g} s"


def probe(worker: bool = False, settings: Settings | None = None) -> int:
    settings = settings or Settings()
    problem = worker_problem(settings) if worker else api_problem(settings)
    if problem:
        print(f"unhealthy: {problem}")
        return 1
    print("healthy")
    return 0
