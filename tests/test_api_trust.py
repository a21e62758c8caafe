"""What a client cannot make the API do (issue 11, findings 4, 5, 7, 9, 10), replayed against real processes:
bypass the creation rate limit with made-up keys or forwarded-for headers, reach a keyless API bound beyond
loopback, get a text/plain 500 when the store cannot write or is damaged, or have a key written to the log.
"""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from service_helpers import NOT_A_FORM, Service, free_port, tmpfs, wait_for
from sqlalchemy import event

from backend.app import API_PREFIX, create_app
from backend.db import DamagedStore, check_integrity, migrate
from backend.security import redact_query
from backend.settings import Settings

DEMO = {"kind": "demo", "spec": {"name": "wrong-sign"}}
SECRET = "s3cret-query-value-91ac"


def assert_json_error(response: httpx.Response, status: int, error: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["x-content-type-options"] == "nosniff" and response.headers["x-frame-options"] == "DENY"
    assert response.headers["cache-control"] == "no-store"
    body: dict[str, Any] = response.json()
    assert body["error"] == error and body["detail"], body
    return body


# ------------------------------------------------------------------------------------ finding 4: rate limit
def test_made_up_keys_and_forwarded_for_do_not_bypass_the_rate_limit(tmp_path: Path) -> None:
    service = Service(tmp_path, {"ANODE_CREATE_BURST": "3", "ANODE_CREATE_RATE_PER_MINUTE": "1"})
    try:
        service.start_api()
        with httpx.Client(base_url=service.url, timeout=10) as http:
            codes = [http.post("/runs", json=DEMO, headers={"X-API-Key": f"made-up-{i}",
                                                            "X-Forwarded-For": f"127.0.0.{i + 2}"}).status_code
                     for i in range(6)]
    finally:
        service.stop()
    assert codes == [201, 201, 201, 429, 429, 429]


def test_forwarded_for_names_the_client_only_from_a_trusted_proxy(tmp_path: Path) -> None:
    service = Service(tmp_path, {"ANODE_CREATE_BURST": "1", "ANODE_CREATE_RATE_PER_MINUTE": "1",
                                 "ANODE_TRUSTED_PROXIES": "127.0.0.1"})
    try:
        service.start_api()
        with httpx.Client(base_url=service.url, timeout=10) as http:
            first = [http.post("/runs", json=DEMO, headers={"X-Forwarded-For": f"127.0.0.{i + 2}"}).status_code
                     for i in range(3)]  # the proxy (loopback) is trusted: three clients behind it, one run each
            again = http.post("/runs", json=DEMO, headers={"X-Forwarded-For": "127.0.0.2"}).status_code
            public = http.get("/runs", headers={"X-Forwarded-For": "203.0.113.9"})
    finally:
        service.stop()
    assert first == [201, 201, 201] and again == 429
    assert_json_error(public, 403, "keys_required")  # no keys: a client beyond loopback, even behind a proxy


# --------------------------------------------------------------------- finding 7: keyless bind through uvicorn
def outward_address() -> str:
    """This machine's address on its first non-loopback interface (the kernel picks it for a route; no packet)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))
        address = str(probe.getsockname()[0])
    assert not address.startswith("127."), "this test needs a non-loopback interface"
    return address


def test_uvicorn_factory_on_all_interfaces_without_keys_serves_loopback_only(tmp_path: Path) -> None:
    port = free_port()
    env = {**dict(__import__("os").environ), "ANODE_DATA_DIR": str(tmp_path)}
    log = (tmp_path / "uvicorn.log").open("wb")
    server = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "backend.app:create_app",
                               "--host", "0.0.0.0", "--port", str(port)], env=env, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        local = f"http://127.0.0.1:{port}{API_PREFIX}"

        def up() -> bool:
            assert server.poll() is None, (tmp_path / "uvicorn.log").read_text()
            with contextlib.suppress(httpx.TransportError):
                return httpx.get(f"{local}/health", timeout=2).status_code == 200
            return False

        wait_for(up, 60, "uvicorn to serve")
        outside = f"http://{outward_address()}:{port}{API_PREFIX}"
        for path in ("/runs", "/health", "/catalog"):
            body = assert_json_error(httpx.get(f"{outside}{path}", timeout=5), 403, "keys_required")
            assert "ANODE_API_KEYS" in body["detail"]
        assert_json_error(httpx.post(f"{outside}/runs", json=DEMO, timeout=5), 403, "keys_required")
        assert httpx.get(f"{local}/runs", timeout=5).status_code == 200  # loopback is still served
    finally:
        server.terminate()
        server.wait(20)
        log.close()


# --------------------------------------------------------------------------- finding 5: the store cannot write
def test_a_store_that_refuses_writes_gets_a_json_503_with_the_reason(tmp_path: Path) -> None:
    """ENOSPC injected into the store's writes (SQLite's own error), where no small filesystem can be mounted."""
    app = create_app(Settings(data_dir=tmp_path))
    with TestClient(app, base_url=f"http://localhost{API_PREFIX}") as client:
        assert client.post("/runs", json=DEMO).status_code == 201
        failure = {"message": "database or disk is full"}

        def refuse(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            if statement.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE")):
                raise sqlite3.OperationalError(failure["message"])

        event.listen(app.state.db.engine, "before_cursor_execute", refuse)
        try:
            body = assert_json_error(client.post("/runs", json=DEMO), 503, "store_unavailable")
            assert body["detail"].startswith("disk full") and "sqlite" not in body["detail"].lower()
            failure["message"] = "attempt to write a readonly database"
            body = assert_json_error(client.post("/runs/1/cancel", headers=NOT_A_FORM), 503, "store_unavailable")
            assert "read-only" in body["detail"]
            failure["message"] = "database is locked"
            assert "locked too long" in client.delete("/runs/1").json()["detail"]
            assert client.get("/runs").status_code == 200  # reads go on
        finally:
            event.remove(app.state.db.engine, "before_cursor_execute", refuse)
        assert client.post("/runs", json=DEMO).status_code == 201


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 2 MiB tmpfs (where this process may mount one; the ENOSPC-injection test above covers the rest)."""
    with tmpfs(tmp_path / "small-disk", "2m") as mount:
        yield mount


def fill(folder: Path) -> Path:
    ballast = folder / "ballast"
    with ballast.open("wb", buffering=0) as out, contextlib.suppress(OSError):
        while True:
            out.write(b"\0" * 4096)
    return ballast


def test_a_really_full_disk_under_the_store(small_disk: Path) -> None:
    settings = Settings(data_dir=small_disk, min_free_disk_bytes=512 * 1024)
    with TestClient(create_app(settings), base_url=f"http://localhost{API_PREFIX}") as client:
        assert client.post("/runs", json=DEMO).status_code == 201
        assert client.get("/health").json()["disk"]["ok"]
        ballast = fill(small_disk)
        health = client.get("/health").json()
        assert health["status"] == "degraded" and not health["disk"]["ok"]
        assert "low disk" in health["disk"]["detail"] and "ANODE_MIN_FREE_DISK_BYTES" in health["disk"]["detail"]
        answers = [client.post("/runs", json={**DEMO, "name": "x" * 200}) for _ in range(40)]
        refused = [r for r in answers if r.status_code != 201]
        assert refused, "40 runs fitted on a full disk"
        for response in refused:
            body = assert_json_error(response, 503, response.json()["error"])
            assert body["error"] in {"store_unavailable", "queue_unavailable"}
        assert any(r.json()["detail"].startswith("disk full") for r in refused)
        ballast.unlink()
        assert client.post("/runs", json=DEMO).status_code == 201
        assert client.get("/health").json()["disk"]["ok"]


# ----------------------------------------------------------------------------- finding 9: damaged SQLite file
def damaged_store(data_dir: Path, how: str) -> Path:
    settings = Settings(data_dir=data_dir)
    migrate(settings.db_url, data_dir)
    path = data_dir / "anode.db"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(path.read_bytes())
    if how == "pages":
        page = int.from_bytes(data[16:18], "big")
        data[2 * page:] = b"\xa5" * (len(data) - 2 * page)  # every page after the first two: garbage
    else:
        data[:16] = b"not a database!\0"
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("how", ["pages", "header"])
def test_a_damaged_store_stops_the_api_at_start_with_what_to_do(tmp_path: Path, how: str) -> None:
    path = damaged_store(tmp_path, how)
    with pytest.raises(DamagedStore, match="restore it from a backup"):
        check_integrity(f"sqlite:///{path}")
    service = Service(tmp_path)
    process = service._spawn("api", "api")
    assert process.wait(60) == 2
    log = service.logs("api")
    assert str(path) in log and "restore it from a backup" in log and "Traceback" not in log
    uvicorn = subprocess.run([sys.executable, "-m", "uvicorn", "--factory", "backend.app:create_app", "--port",
                              str(free_port())], env=service.env, capture_output=True, text=True, timeout=60)
    assert uvicorn.returncode != 0 and "restore it from a backup" in uvicorn.stdout + uvicorn.stderr


class Boom:
    """A middleware that fails, as a bug in one would."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].endswith("/boom-in-middleware"):
            raise RuntimeError("middleware bug: /etc/secret")
        await self.app(scope, receive, send)


def test_every_5xx_is_json_with_security_headers(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path))

    @app.get(f"{API_PREFIX}/boom")
    def boom() -> None:
        raise ValueError("route bug: /etc/secret")

    app.add_middleware(Boom)
    with TestClient(app, base_url=f"http://localhost{API_PREFIX}", raise_server_exceptions=False) as client:
        for path in ("/boom", "/boom-in-middleware"):
            body = assert_json_error(client.get(path), 500, "internal_error")
            assert "/etc/secret" not in body["detail"]


# ---------------------------------------------------------------------- finding 10: keys in the query string
@pytest.mark.parametrize(("target", "expected"), [
    (f"/runs?api_key={SECRET}", "/runs?api_key=[redacted]"),
    (f"/runs?limit=5&token={SECRET}&kind=train", "/runs?limit=5&token=[redacted]&kind=train"),
    (f"/runs?X-API-Key={SECRET}&access_token={SECRET}", "/runs?X-API-Key=[redacted]&access_token=[redacted]"),
    (f"/runs?api%5Fkey={SECRET}&password={SECRET}", "/runs?api%5Fkey=[redacted]&password=[redacted]"),
    ("/runs?limit=5&status=queued", "/runs?limit=5&status=queued"),
    ("/runs", "/runs"),
])
def test_key_like_query_values_are_redacted(target: str, expected: str) -> None:
    assert redact_query(target) == expected


def test_keys_in_a_query_string_never_reach_the_access_log(tmp_path: Path) -> None:
    service = Service(tmp_path)
    try:
        service.start_api()
        with httpx.Client(base_url=service.url, timeout=10) as http:
            for name in ("api_key", "key", "token", "secret", "apiKey"):
                assert http.get("/runs", params={name: SECRET, "limit": 3}).status_code == 200
    finally:
        service.stop()
    logs = service.logs("api")
    assert "GET /api/v1/runs?api_key=[redacted]&limit=3 HTTP/1.1" in logs  # the access log is on
    assert SECRET not in logs
