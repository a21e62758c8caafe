"""Access: API keys off loopback and never logged, the run-creation rate limit, CORS closed unless configured,
security headers, and queue messages that carry a run id and nothing else."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from service_helpers import NOT_A_FORM, Service

from backend.app import API_PREFIX, create_app
from backend.settings import Settings

KEY = "k3y-that-must-never-be-logged-8f2c"
SAMPLE_PATHS = {"run_id": "1", "name": "results.csv", "group_id": "1"}


def make_client(tmp_path: Path, **overrides: object) -> TestClient:
    return TestClient(create_app(Settings(data_dir=tmp_path, **overrides)),  # type: ignore[arg-type]
                      base_url=f"http://localhost{API_PREFIX}")


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with make_client(tmp_path) as test_client:
        yield test_client


# ------------------------------------------------------------------------------------------------- API keys
@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "example.org"])
def test_a_bind_beyond_loopback_needs_keys(host: str) -> None:
    with pytest.raises(ValueError, match="ANODE_API_KEYS"):
        Settings(host=host).check_bind()
    Settings(host=host, api_keys=[KEY]).check_bind()


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "localhost"])
def test_loopback_binds_need_no_keys(host: str) -> None:
    Settings(host=host).check_bind()


def test_every_operation_refuses_a_request_without_the_key(tmp_path: Path) -> None:
    with make_client(tmp_path, api_keys=[KEY]) as client:
        operations = [(method.upper(), path) for path, item in client.app.openapi()["paths"].items()  # type: ignore[attr-defined]
                      for method in item]
        assert len(operations) >= 11
        for method, path in operations:
            url = path.removeprefix(API_PREFIX).format(**SAMPLE_PATHS)
            for headers in ({}, {"X-API-Key": "wrong"}, {"X-API-Key": KEY[:-1]}, {"Authorization": f"Bearer {KEY}"}):
                response = client.request(method, url, headers=headers, params={"api_key": KEY})
                assert response.status_code == 401, (method, url, headers, response.text)
                assert KEY not in response.text and "wrong" not in response.text
        assert client.get("/health", headers={"X-API-Key": KEY}).status_code == 200


@pytest.mark.parametrize("processes", [1, 2])
def test_keys_never_reach_the_logs(tmp_path: Path, processes: int) -> None:
    """A real server (uvicorn access log on) with a key, serving from one process or from two
    (``ANODE_API_PROCESSES``): requests with right and wrong keys, a 401, a 422 and a created run; the key appears
    in no log line and no response."""
    service = Service(tmp_path, {"ANODE_API_KEYS": f"other-key,{KEY}", "ANODE_API_PROCESSES": str(processes)})
    try:
        service.start_api(headers={"X-API-Key": KEY})
        with httpx.Client(base_url=service.url, timeout=10) as http:
            assert http.get("/runs").status_code == 401
            assert http.get("/runs", headers={"X-API-Key": KEY + "x"}).status_code == 401
            ok = http.post("/runs", json={"kind": "demo", "spec": {"name": "wrong-sign"}}, headers={"X-API-Key": KEY})
            assert ok.status_code == 201 and KEY not in ok.text
            bad = http.post("/runs", json={"kind": "train", "spec": {"lr": KEY}}, headers={"X-API-Key": KEY})
            assert bad.status_code == 422
    finally:
        service.stop()
    logs = service.logs("api")
    assert '"GET /api/v1/runs HTTP/1.1" 401' in logs  # the access log is on, and says nothing of the key
    assert KEY not in logs and "other-key" not in logs


# --------------------------------------------------------------------------------------------- rate limit
def test_run_creation_is_rate_limited_per_client_with_retry_after(tmp_path: Path) -> None:
    body = {"kind": "demo", "spec": {"name": "wrong-sign"}}
    with make_client(tmp_path, create_burst=3, create_rate_per_minute=30) as client:
        assert [client.post("/runs", json=body).status_code for _ in range(3)] == [201, 201, 201]
        refused = client.post("/runs", json=body)
        assert refused.status_code == 429
        assert refused.json()["error"] == "rate_limited" and "ANODE_CREATE_BURST" in refused.json()["detail"]
        assert 1 <= int(refused.headers["Retry-After"]) <= 2  # one token every 2 s
        assert client.post("/runs/1/rerun", headers=NOT_A_FORM).status_code == 429  # a rerun creates a run too
        assert client.get("/runs").status_code == 200  # reads are not limited
        assert client.get("/runs").json()["count"] == 3  # the refused creations stored nothing


def test_the_bucket_refills(tmp_path: Path) -> None:
    body = {"kind": "demo", "spec": {"name": "wrong-sign"}}
    with make_client(tmp_path, create_burst=1, create_rate_per_minute=60) as client:
        assert client.post("/runs", json=body).status_code == 201
        assert client.post("/runs", json=body).status_code == 429  # within a second, even on a loaded machine
        time.sleep(1.05)  # one token a second
        assert client.post("/runs", json=body).status_code == 201


def test_each_api_key_has_its_own_bucket(tmp_path: Path) -> None:
    body = {"kind": "demo", "spec": {"name": "wrong-sign"}}
    with make_client(tmp_path, api_keys=["a-key", "b-key"], create_burst=1) as client:
        assert client.post("/runs", json=body, headers={"X-API-Key": "a-key"}).status_code == 201
        assert client.post("/runs", json=body, headers={"X-API-Key": "a-key"}).status_code == 429
        assert client.post("/runs", json=body, headers={"X-API-Key": "b-key"}).status_code == 201
        # an unknown key is refused before it could fill the table with buckets
        assert client.post("/runs", json=body, headers={"X-API-Key": "c-key"}).status_code == 401


# -------------------------------------------------------------------------------------------------- CORS
def test_cors_is_closed_by_default(client: TestClient) -> None:
    response = client.get("/runs", headers={"Origin": "https://evil.example"})
    assert response.status_code == 200 and "access-control-allow-origin" not in response.headers
    preflight = client.options("/runs", headers={"Origin": "https://evil.example",
                                                 "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in preflight.headers


def test_cors_allows_only_the_configured_origins(tmp_path: Path) -> None:
    with make_client(tmp_path, cors_origins="https://lab.example, http://localhost:8501") as client:
        allowed = client.get("/runs", headers={"Origin": "https://lab.example"})
        assert allowed.headers["access-control-allow-origin"] == "https://lab.example"
        preflight = client.options("/runs", headers={"Origin": "http://localhost:8501",
                                                     "Access-Control-Request-Method": "POST",
                                                     "Access-Control-Request-Headers": "x-api-key,content-type"})
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "http://localhost:8501"
        other = client.get("/runs", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


# ---------------------------------------------------------------------------------------- security headers
def assert_security_headers(response: httpx.Response) -> None:
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"


@pytest.mark.parametrize(("method", "path", "kwargs", "status"), [
    ("GET", "/runs", {}, 200),
    ("GET", "/catalog", {}, 200),
    ("GET", "/health", {}, 200),
    ("GET", "/runs/999", {}, 404),
    ("GET", "/nowhere", {}, 404),
    ("POST", "/runs", {"json": {"kind": "nope"}}, 422),
    ("POST", "/runs", {"content": b"x" * 2_000_000}, 413),
    ("POST", "/runs", {"content": b"{", "headers": {"Content-Type": "application/json"}}, 422),
    ("DELETE", "/catalog", {}, 405),
])
def test_json_responses_carry_security_headers_and_no_store(client: TestClient, method: str, path: str,
                                                            kwargs: dict[str, object], status: int) -> None:
    response = client.request(method, path, **kwargs)  # type: ignore[arg-type]
    assert response.status_code == status, response.text
    assert_security_headers(response)
    assert response.headers["content-security-policy"] == "frame-ancestors 'none'"
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["cache-control"] == "no-store"


def test_csv_stream_and_docs_carry_security_headers(client: TestClient) -> None:
    run_id = client.post("/runs", json={"kind": "demo", "spec": {"name": "wrong-sign"}}).json()["id"]
    assert_security_headers(client.get(f"/runs/{run_id}/metrics", params={"format": "csv"}))
    client.post(f"/runs/{run_id}/cancel", headers=NOT_A_FORM)
    with client.stream("GET", f"/runs/{run_id}/events") as stream:
        assert_security_headers(stream)  # type: ignore[arg-type]
        assert stream.headers["cache-control"] == "no-store"  # sse-starlette's own, kept
        stream.read()
    docs = client.get("/docs")
    assert docs.status_code == 200 and "content-security-policy" not in docs.headers  # Swagger runs inline
    assert docs.headers["x-frame-options"] == "DENY"


# ---------------------------------------------------------------------------------------- queue payloads
def test_the_queue_carries_only_run_ids(client: TestClient) -> None:
    marker = "MARKER-ʕ•ᴥ•ʔ"
    created = [client.post("/runs", json={"kind": "train", "name": marker, "tags": ["secret-tag"],
                                          "spec": {"dataset": "moons", "seed": 424242, "device": "cpu"}}).json(),
               client.post("/runs", json={"kind": "demo", "name": marker, "spec": {"name": "wrong-sign"}}).json(),
               client.post("/runs", json={"kind": "train", "spec": {"device": "cuda"}}).json()]
    created.append(client.post(f"/runs/{created[0]['id']}/rerun", headers=NOT_A_FORM).json())
    queues = client.app.state.queues  # type: ignore[attr-defined]
    messages = []
    for device, huey in queues.hueys.items():
        for payload in huey.storage.enqueued_items():
            body = json.loads(payload)  # JSON, not a pickle: no ORM object, tensor or spec class
            assert list(body) == ["run_id"] and payload == json.dumps(body).encode()
            assert marker.encode() not in payload and b"secret-tag" not in payload and b"424242" not in payload
            task = huey.deserialize_task(payload)
            assert task.name == "runs.execute" and task.kwargs == {}
            assert len(task.args) == 1 and type(task.args[0]) is int
            messages.append((device, task.args[0]))
    expected = sorted(("gpu" if run["device"] == "cuda" else "cpu", run["id"]) for run in created)
    assert sorted(messages) == expected
