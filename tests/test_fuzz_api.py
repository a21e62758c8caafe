"""Bad input over HTTP: the API fuzzed from its own OpenAPI schema (schemathesis), then hostile bodies by hand.

Every response must be a status the schema documents, with the documented body; never a 5xx, never a traceback.
After the fuzzing every stored run is whole: a spec its kind accepts, a status, a queue message carrying its id.
The API runs in process (ASGI) on a temporary SQLite, lifespan included; derandomized, so a run is reproducible.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from service_helpers import NOT_A_FORM

from anode_lab.specs import parse_spec
from backend.app import API_PREFIX, create_app
from backend.db import Database
from backend.models import Run
from backend.settings import Settings

EXAMPLES = 100
"""Per operation and generation mode (positive, negative): about 2 000 requests in all, some 30 s on two cores."""
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
LEAKS = re.compile(r"Traceback \(most recent call last\)|File \"/|sqlalchemy\.|sqlite3\.")
STATUSES = {"queued", "running", "succeeded", "failed", "cancelled", "diverged"}
BODY_LIMIT = 65_536


def fuzz_settings(data_dir: Path) -> Settings:
    # schemathesis's in-process client calls itself "testserver"; the API answers only the Host names it is told
    return Settings(data_dir=data_dir, max_body_bytes=BODY_LIMIT, create_burst=100_000,
                    allowed_hosts=["testserver", "localhost"])


def operations() -> list[tuple[str, str]]:
    """``(label, mode)`` of the operations to fuzz, read from the schema (no server needed): positive for each,
    negative for each that takes something to get wrong (without keys, /health and /catalog take nothing). The
    event stream of a queued run never ends without a worker, so it is fuzzed by hand below instead."""
    schema = schemathesis.openapi.from_dict(create_app(fuzz_settings(Path("/nonexistent"))).openapi())
    cases = []
    for result in schema.get_all_operations():
        op = result.ok()
        if op.label.endswith("/events"):
            continue
        cases.append((op.label, "positive"))
        if op.definition.raw.get("parameters") or op.definition.raw.get("requestBody"):
            cases.append((op.label, "negative"))
    return cases


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FastAPI, Any, Settings]]:
    config = fuzz_settings(tmp_path_factory.mktemp("fuzz-api"))
    app = create_app(config)
    with TestClient(app):  # runs the lifespan: store migrated, queues open
        schema = schemathesis.openapi.from_asgi(f"{API_PREFIX}/openapi.json", app)
        yield app, schema, config


def assert_no_leak(text: str) -> None:
    found = LEAKS.search(text)
    assert found is None, f"internal detail leaked in a response: {text[max(0, found.start() - 80):found.end() + 200]}"


@pytest.mark.parametrize(("label", "mode"), operations())
def test_api_answers_fuzzed_requests_as_documented(served: tuple[FastAPI, Any, Settings], label: str,
                                                   mode: str) -> None:
    app, schema, _ = served
    method, path = label.split(" ", 1)
    operation = schema[path][method].ok() if hasattr(schema[path][method], "ok") else schema[path][method]
    strategy = operation.as_strategy(generation_mode=schemathesis.GenerationMode(mode))

    @given(case=strategy)
    @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    def fuzz(case: Any) -> None:
        response = case.call(app=app)
        case.validate_response(response, checks=CHECKS)
        assert_no_leak(response.text)

    fuzz()


def test_every_stored_run_is_whole_after_fuzzing(served: tuple[FastAPI, Any, Settings]) -> None:
    """Runs the fuzzing created (the positive POSTs succeed now and then): each has a valid spec and a status,
    and each queued one has its id in the queue. An external run (``POST /external``) is no worker's: its spec is
    what the tracker said of itself, and it is never queued."""
    app, _, config = served
    db = Database(config.db_url)
    try:
        with db.session() as session:
            rows = session.query(Run).all()
            stored = [(run.id, run.kind, run.spec, run.status) for run in rows]
    finally:
        db.dispose()
    queued_ids = set()
    for huey in app.state.queues.hueys.values():
        for payload in huey.storage.enqueued_items():
            task = huey.deserialize_task(payload)
            queued_ids.add(task.args[0])
    for run_id, kind, spec, status in stored:
        assert status in STATUSES
        if kind == "external":
            assert status != "queued" and set(spec) == {"gradient", "methods", "probe_every", "description"}
            continue
        parse_spec(kind, spec)  # what was stored is exactly what a worker can run
        if status == "queued":
            assert run_id in queued_ids, f"run {run_id} is queued but no message carries it"


# ------------------------------------------------------------------------ the CLI, every check, a real server
CONTRACT_SEED = 20261129
CONTRACT_CONFIG = r"""
[[operations]]
include-path-regex = '/runs(/\{{run_id\}}/rerun)?$'
include-method = "POST"
# a spec's schema depends on its kind and has cross-field rules OpenAPI cannot state: the 422 names the field
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "422", "429"]

[[operations]]
include-path-regex = '/artifacts/\{{name\}}$'
parameters = {{ run_id = {run_id}, name = "{name}" }}

# deletes go to a run of their own, so the run holding the artifacts above outlives every phase; the stateful
# phase's links would hand DELETE the ids of runs just created instead, so it is left out of that phase alone
[[operations]]
include-name = "DELETE /api/v1/runs/{{run_id}}"
parameters = {{ run_id = {spare_id} }}
phases.stateful.enabled = false
"""
ARTIFACTS = {"results.csv": (b"step,loss\n1,0.5\n", "text/csv"), "curve.png": (b"\x89PNG\r\n\x1a\n", "image/png"),
             "model.pt": (b"\x00" * 16, "application/octet-stream"), "notes.svg": (b"<svg/>", "image/svg+xml")}


def test_schemathesis_checks_all_over_every_operation_pass(tmp_path: Path) -> None:
    """``schemathesis run --checks all`` (coverage, fuzzing and stateful phases; fixed seed) against ``anode-lab
    api``, with a run holding artifacts of several types. The event stream of a queued run never ends, so it is
    fuzzed by hand below."""
    import shutil
    import subprocess

    from service_helpers import Service

    from backend.runs import artifacts
    from backend.runs.artifacts import LocalFile

    service = Service(tmp_path, {"ANODE_CREATE_BURST": "100000"})
    service.start_api()
    try:
        with httpx.Client(base_url=service.url, timeout=10) as http:
            run_id, spare_id = (http.post("/runs", json={"kind": "demo", "spec": {}}).json()["id"] for _ in range(2))
        folder = tmp_path / "files"
        folder.mkdir()
        for name, (content, _) in ARTIFACTS.items():
            (folder / name).write_bytes(content)
        db = Database(Settings(data_dir=tmp_path).db_url)
        with db.session(write=True) as session:
            for name, (_, media_type) in ARTIFACTS.items():
                artifacts.store(session, run_id, LocalFile(name, folder / name, media_type))
        db.dispose()
        config = tmp_path / "schemathesis.toml"
        config.write_text(CONTRACT_CONFIG.format(run_id=run_id, spare_id=spare_id, name="notes.svg"))
        binary = shutil.which("schemathesis")
        assert binary, "schemathesis's command is installed with the test extra"
        done = subprocess.run([binary, "--config-file", str(config), "run", f"{service.url}/openapi.json",
                               "--checks", "all", "--seed", str(CONTRACT_SEED), "--max-examples", "30",
                               "--exclude-path-regex", "/events$", "--no-color",
                               "--header", "X-Requested-With: schemathesis"],
                              capture_output=True, text=True, timeout=600, cwd=tmp_path, check=False)
    finally:
        service.stop()
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "Tested: 16" in done.stdout  # every operation but the event stream (fuzzed by hand below)
    # the artifacts were reached (DELETE's own run is gone after its first call: its 404s are expected)
    missing = done.stdout.partition("Missing test data")[2].partition("💡")[0]
    assert "/artifacts/" not in missing and "GET /api/v1/runs/{run_id}" not in missing, missing


# --------------------------------------------------------------------------------------------- by hand
@pytest.fixture(scope="module")
def client(served: tuple[FastAPI, Any, Settings]) -> Iterator[TestClient]:
    app, _, _ = served
    yield TestClient(app, base_url=f"http://localhost{API_PREFIX}")


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def deep_spec(depth: int) -> str:
    return '{"kind": "train", "spec": {"seed": ' + nested(depth) + "}}"


HOSTILE_BODIES: dict[str, tuple[str, set[int]]] = {
    "not json": ("{kind: train", {400, 422}),
    "json array": ("[1, 2, 3]", {422}),
    "json null": ("null", {422}),
    "deeply nested spec (100k)": (deep_spec(100_000), {400, 413, 422}),
    "nested spec within limits (400)": (deep_spec(400), {422}),
    "NaN learning rate": ('{"kind": "train", "spec": {"lr": NaN}}', {422}),
    "empty demo spec takes defaults": ('{"kind": "demo"}', {201}),
    "infinite learning rate": ('{"kind": "train", "spec": {"lr": Infinity}}', {422}),
    "negative infinite noise": ('{"kind": "train", "spec": {"noise": -Infinity}}', {422}),
    "NaN weight scale": ('{"kind": "compare", "spec": {"weight_scales": [NaN]}}', {422}),
    "NaN seed": ('{"kind": "train", "spec": {"seed": NaN}}', {422}),
    "huge N_t": ('{"kind": "train", "spec": {"ode": {"steps": 10000000000}}}', {422}),
    "huge N_t beyond int64": ('{"kind": "train", "spec": {"ode": {"steps": ' + "9" * 400 + "}}}", {422}),
    "huge grid": ('{"kind": "compare", "spec": {"steps": ' + json.dumps(list(range(1, 257))) + "}}", {422}),
    "huge batch": ('{"kind": "compare", "spec": {"batch": 1000000000}}', {422}),
    "long repeated list": ('{"kind": "compare", "spec": {"steps": ' + json.dumps([1] * 20_000) + "}}", {422}),
    "many methods": ('{"kind": "compare", "spec": {"methods": ' + json.dumps([{}] * 5_000) + "}}", {422}),
    "unknown kind": ('{"kind": "sample", "spec": {}}', {422}),
    "unknown solver": ('{"kind": "train", "spec": {"ode": {"solver": "dopri9"}}}', {422}),
    "unknown demo": ('{"kind": "demo", "spec": {"name": "../../etc/passwd"}}', {422}),
    "unknown field": ('{"kind": "train", "spec": {"__class__": {}}}', {422}),
    "unicode name and tag": ('{"kind": "train", "spec": {}, "name": "ʕ•ᴥ•ʔ 名前", "tags": ["ünï"]}', {201}),
    "NUL in a name": ('{"kind": "train", "spec": {}, "name": "a \\u0000 b"}', {422}),
    "lone surrogate name": ('{"kind": "train", "spec": {}, "name": "\\ud800"}', {201, 422}),
    "tag with slash": ('{"kind": "train", "spec": {}, "tags": ["../x"]}', {422}),
    "too many tags": ('{"kind": "train", "spec": {}, "tags": ' + json.dumps([f"t{i}" for i in range(21)]) + "}",
                      {422}),
    "oversized body": ('{"kind": "train", "spec": {}, "name": "' + "x" * (BODY_LIMIT + 10) + '"}', {413}),
    "root path outside": ('{"kind": "train", "spec": {"model": "conv_ode", "dataset": "mnist", "root": "/"}}',
                          {422}),
    "root escaping by ..": ('{"kind": "train", "spec": {"model": "conv_ode", "dataset": "mnist", "root": "../.."}}',
                            {422}),
}


@pytest.mark.parametrize("body", list(HOSTILE_BODIES), ids=list(HOSTILE_BODIES))
def test_hostile_bodies_get_a_documented_answer(client: TestClient, body: str) -> None:
    text, expected = HOSTILE_BODIES[body]
    response = client.post("/runs", content=text.encode("utf-8", "surrogatepass"),
                           headers={"Content-Type": "application/json"})
    assert response.status_code in expected, response.text[:500]
    assert_no_leak(response.text)
    payload = response.json()  # always JSON, finite numbers only
    if response.status_code >= 400:
        assert set(payload) >= {"error", "detail"}
    else:
        json.dumps(payload, allow_nan=False)
        assert client.get(f"/runs/{payload['id']}").status_code == 200


def test_a_chunked_body_over_the_limit_is_refused(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"kind": "train", "spec": {}, "name": "'
        for _ in range(BODY_LIMIT // 1024 + 2):
            yield b"x" * 1024
        yield b'"}'

    response = client.post("/runs", content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413 and response.json()["error"] == "body_too_large"


@pytest.mark.parametrize("name", ["..", "../../anode.db", "/etc/passwd", "%2e%2e%2fanode.db", "a/../../b",
                                  "..\\anode.db", "\x00", " ", "." * 300, "ü" * 100])
def test_artifact_names_cannot_leave_the_run_folder(client: TestClient, name: str) -> None:
    run_id = client.post("/runs", json={"kind": "demo", "spec": {"name": "wrong-sign"}}).json()["id"]
    response = client.get(f"/runs/{run_id}/artifacts/{quote(name, safe='')}".replace(".", "%2E"))
    assert response.status_code == 404, response.text
    assert_no_leak(response.text)


@pytest.mark.parametrize("path", ["/runs/0", "/runs/-1", f"/runs/{2**63}", "/runs/1e3", "/runs/%00",
                                  f"/runs/1/metrics?after_step={2**64}", "/runs/1/metrics?points=1",
                                  "/runs?limit=0", f"/runs?offset={2**70}", "/runs?status=exploded",
                                  "/runs?kind=%F0%9F%92%A5", f"/runs/1/events?after_step={-(2**64)}"])
def test_bad_paths_and_queries_are_4xx(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert 400 <= response.status_code < 500, response.text
    assert_no_leak(response.text)


@pytest.mark.parametrize("last_event_id", ["9" * 40, "-9" * 30, "abc", "1.5", "", "\u00e9"])
def test_event_stream_shrugs_off_a_bad_last_event_id(client: TestClient, last_event_id: str) -> None:
    run_id = client.post("/runs", json={"kind": "demo", "spec": {"name": "wrong-sign"}}).json()["id"]
    assert client.post(f"/runs/{run_id}/cancel", headers=NOT_A_FORM).status_code == 200  # ended: the stream ends
    with client.stream("GET", f"/runs/{run_id}/events",
                       headers={"Last-Event-ID": last_event_id.encode()}) as response:
        assert response.status_code == 200
        text = "".join(response.iter_text())
    assert "event: end" in text and '"cancelled"' in text
    assert_no_leak(text)


def test_numbers_in_responses_are_finite(client: TestClient) -> None:
    """JSON has no NaN: metrics store NaN/inf as null (see ingest.finite), and specs refuse them."""
    for kind, spec in [("train", {"lr": math.nan}), ("compare", {"fd_epsilon": math.inf})]:
        response = client.post("/runs", content=json.dumps({"kind": kind, "spec": spec}),
                               headers={"Content-Type": "application/json"})
        assert response.status_code == 422
        assert "NaN" not in response.text and "Infinity" not in response.text
        assert "finite number" in response.json()["detail"] and "less than" not in response.json()["detail"]
