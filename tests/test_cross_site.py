"""A hostile web page against a real API process (``anode-lab api`` on loopback, no worker): a page of another
site whose name resolves to 127.0.0.1 (DNS rebinding) is answered 400 before anything happens, and the "simple"
requests a page may send to any site without asking (a form POST, a ``text/plain`` body, no body at all, a
foreign ``Origin`` or ``Sec-Fetch-Site``) change nothing: 403 in the API's error shape. curl with a JSON content
type, the dashboard's client and the README's lines keep working."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from service_helpers import NOT_A_FORM, Service

from backend.app import API_PREFIX, create_app
from backend.settings import Settings

DEMO = {"kind": "demo", "spec": {"name": "wrong-sign"}}
TRUSTED_PAGE = "https://lab.example"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = Service(tmp_path_factory.mktemp("cross-site"), {"ANODE_CORS_ORIGINS": TRUSTED_PAGE})
    svc.start_api()
    try:
        yield svc
    finally:
        svc.stop()


@pytest.fixture
def http(service: Service) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.url, timeout=10) as client:
        yield client


def stored(http: httpx.Client) -> list[dict[str, object]]:
    return list(http.get("/runs", params={"limit": 100}).json()["data"])


def assert_forbidden(response: httpx.Response, *words: str) -> None:
    assert response.status_code == 403, response.text
    body = response.json()
    assert body["error"] == "forbidden" and set(body) == {"error", "detail"}
    for word in words:
        assert word in body["detail"], body["detail"]


# ----------------------------------------------------------------------------------------- DNS rebinding
@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "127.0.0.1.evil.example", "localhost.",
                                  "attacker.localhost"])
def test_a_foreign_host_name_is_refused_before_anything_happens(service: Service, http: httpx.Client,
                                                                host: str) -> None:
    before = len(stored(http))
    rebound = {"Host": host.format(port=service.port)}
    assert http.get("/runs", headers=rebound).status_code == 400
    assert http.get("/health", headers=rebound).status_code == 400
    created = http.post("/runs", json=DEMO, headers=rebound)
    assert created.status_code == 400 and "invalid host" in created.text.lower()
    assert len(stored(http)) == before  # nothing was created


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "[::1]:{port}", "LOCALHOST"])
def test_the_loopback_names_are_served_by_default(service: Service, http: httpx.Client, host: str) -> None:
    assert http.get("/runs", headers={"Host": host.format(port=service.port)}).status_code == 200


def test_allowed_hosts_names_the_deployments_hosts(tmp_path: Path) -> None:
    service = Service(tmp_path, {"ANODE_ALLOWED_HOSTS": "lab.example, *.cluster.example, 127.0.0.1"})
    service.start_api()
    try:
        with httpx.Client(base_url=service.url, timeout=10) as http:
            for host in ("lab.example", "lab.example:8000", "node3.cluster.example", "127.0.0.1"):
                assert http.get("/runs", headers={"Host": host}).status_code == 200, host
            for host in ("localhost", "evil.example", "cluster.example.evil.example"):  # the list replaces loopback
                assert http.get("/runs", headers={"Host": host}).status_code == 400, host
    finally:
        service.stop()


def test_allowed_hosts_settings() -> None:
    assert Settings().served_hosts == ["localhost", "127.0.0.1", "[::1]"]
    assert Settings(host="10.0.0.5", api_keys=["k"]).served_hosts == ["localhost", "127.0.0.1", "[::1]", "10.0.0.5"]
    assert "0.0.0.0" not in Settings(host="0.0.0.0", api_keys=["k"]).served_hosts
    assert Settings(allowed_hosts="Lab.Example, *.b.example").served_hosts == ["lab.example", "*.b.example"]
    for bad in ("lab.*", "*lab.example", "a.*.example"):
        with pytest.raises(ValueError, match=r"ANODE_ALLOWED_HOSTS.*wildcard"):
            Settings(allowed_hosts=bad)


# -------------------------------------------------------------------------------------------------- CSRF
def test_a_form_post_changes_nothing(http: httpx.Client) -> None:
    run = http.post("/runs", json=DEMO).json()
    form = http.post(f"/runs/{run['id']}/cancel", content=b"x=1",
                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert_forbidden(form, "Content-Type: application/json", "X-Requested-With", "application/x-www-form-urlencoded")
    assert http.get(f"/runs/{run['id']}").json()["cancel_requested"] is False
    before = len(stored(http))
    # the classic way around a JSON API: a JSON body sent as text/plain (no preflight), and multipart
    plain = http.post("/runs", content=json.dumps(DEMO).encode(), headers={"Content-Type": "text/plain"})
    assert_forbidden(plain, "text/plain")
    multipart = http.post("/groups", files={"kind": (None, "train")})
    assert_forbidden(multipart, "multipart/form-data")
    assert_forbidden(http.post(f"/runs/{run['id']}/rerun"), "no Content-Type")  # fetch(..., {mode: "no-cors"})
    assert len(stored(http)) == before


@pytest.mark.parametrize(("headers", "words"), [
    ({"Origin": "http://evil.example"}, ["http://evil.example", "ANODE_CORS_ORIGINS"]),
    ({"Origin": "null"}, ["'null'"]),  # a sandboxed frame or a file
    ({"Origin": "http://127.0.0.1:1"}, ["127.0.0.1:1"]),  # another port of this machine is another origin
    ({"Sec-Fetch-Site": "cross-site"}, ["cross-site"]),
    ({"Sec-Fetch-Site": "same-site"}, ["same-site"]),  # e.g. a dev server on localhost:3000
])
def test_a_request_from_another_site_changes_nothing(http: httpx.Client, headers: dict[str, str],
                                                     words: list[str]) -> None:
    run = http.post("/runs", json=DEMO).json()
    before = len(stored(http))
    assert_forbidden(http.post("/runs", json=DEMO, headers=headers), *words)
    assert_forbidden(http.post(f"/runs/{run['id']}/cancel", headers={**NOT_A_FORM, **headers}), *words)
    assert_forbidden(http.delete(f"/runs/{run['id']}", headers=headers), *words)
    assert len(stored(http)) == before and http.get(f"/runs/{run['id']}").json()["cancel_requested"] is False
    assert http.get("/runs", headers=headers).status_code == 200  # reads stay open (CORS keeps their answers)


def test_curl_the_clients_and_the_configured_origin_keep_working(service: Service, http: httpx.Client) -> None:
    # the README's line, run by curl itself
    done = subprocess.run(["curl", "-s", "-X", "POST", f"{service.url}/runs", "-H", "Content-Type: application/json",
                           "-d", json.dumps({**DEMO, "name": "from curl"})],
                          capture_output=True, text=True, timeout=30, check=True)
    run = json.loads(done.stdout)
    assert run["name"] == "from curl" and run["status"] == "queued"
    cancel = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
                             f"{service.url}/runs/{run['id']}/cancel", "-H", "Content-Type: application/json"],
                            capture_output=True, text=True, timeout=30, check=True)
    assert cancel.stdout == "200"
    again = http.post(f"/runs/{run['id']}/rerun", headers={"X-Requested-With": "XMLHttpRequest"})
    assert again.status_code == 201
    assert http.delete(f"/runs/{again.json()['id']}").status_code == 204  # a DELETE needs no header
    own = {"Origin": f"http://127.0.0.1:{service.port}", "Sec-Fetch-Site": "same-origin"}
    assert http.post("/runs", json=DEMO, headers=own).status_code == 201
    trusted = {"Origin": TRUSTED_PAGE, "Sec-Fetch-Site": "cross-site"}  # listed in ANODE_CORS_ORIGINS
    assert http.post("/runs", json=DEMO, headers=trusted).status_code == 201


def test_a_keyed_client_needs_no_other_header(tmp_path: Path) -> None:
    """``X-API-Key`` is a header no page of another site can send without a preflight: it is enough."""
    with TestClient(create_app(Settings(data_dir=tmp_path, api_keys=["k"])),
                    base_url=f"http://localhost{API_PREFIX}") as client:
        run = client.post("/runs", json=DEMO, headers={"X-API-Key": "k"}).json()
        assert client.post(f"/runs/{run['id']}/cancel", headers={"X-API-Key": "k"}).status_code == 200
        assert client.post(f"/runs/{run['id']}/rerun").status_code == 401  # no key: 401 first, as before
