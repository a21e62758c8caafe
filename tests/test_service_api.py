"""The API in-process (FastAPI's TestClient) on a temporary SQLite store, without a worker: validation, errors,
keys, limits, listing, cancel/rerun/delete of queued runs, metrics shaping and artifact paths."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from service_helpers import NOT_A_FORM

from anode_lab.specs.common import DEFAULT_ATOL, DEFAULT_RTOL, DEFAULT_STEP_LIMIT
from backend.app import create_app
from backend.db import Database
from backend.errors import NotFound
from backend.runs import repository as runs
from backend.runs.reads import decimate
from backend.runs.service import artifact_download
from backend.settings import Settings

API = "/api/v1"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, max_body_bytes=4096)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), base_url=f"http://localhost{API}") as test_client:
        yield test_client


def make_run(client: TestClient, **overrides: object) -> dict[str, object]:
    body = {"kind": "train", "spec": {"dataset": "moons", "epochs": 1, "device": "cpu"}, **overrides}
    response = client.post("/runs", json=body)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def test_api_process_does_not_import_torch() -> None:
    code = ("import sys, backend.app, backend.runs.service, backend.catalog.service as c; c.catalog(); "
            "assert 'torch' not in sys.modules and 'anode_lab.experiments' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_created_run_is_queued_with_normalised_spec_and_says_no_worker(client: TestClient) -> None:
    run = make_run(client, name="first", tags=["b", "a", "b"])
    assert run["status"] == "queued" and run["attempt"] == 0 and run["device"] == "cpu"
    assert run["tags"] == ["a", "b"]
    assert run["spec"]["ode"]["steps"] == 2  # defaults filled in: the stored spec says exactly what runs
    assert "no live cpu worker" in run["status_detail"]


def test_cuda_run_waits_for_gpu_worker(client: TestClient) -> None:
    run = make_run(client, spec={"dataset": "moons", "device": "cuda"})
    assert run["device"] == "cuda"
    assert "no live gpu worker" in run["status_detail"]


@pytest.mark.parametrize(
    ("kind", "spec", "loc"),
    [
        ("train", {"ode": {"steps": 100000}}, ["spec", "ode", "steps"]),
        ("train", {"epochs": 0}, ["spec", "epochs"]),
        ("train", {"optimiser": "adam"}, ["spec", "optimiser"]),
        ("compare", {"batch": -1}, ["spec", "batch"]),
        ("demo", {"name": "no-such-demo"}, ["spec", "name"]),
    ],
)
def test_invalid_spec_is_422_naming_the_field(client: TestClient, kind: str, spec: dict[str, object],
                                               loc: list[str]) -> None:
    response = client.post("/runs", json={"kind": kind, "spec": spec})
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "invalid_spec"
    assert loc in [e["loc"] for e in body["errors"]]
    assert ".".join(loc) in body["detail"]


def test_invalid_request_is_422_in_the_same_shape(client: TestClient) -> None:
    response = client.post("/runs", json={"kind": "juggle"})
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request" and "kind" in response.json()["detail"]


@pytest.mark.parametrize("path", ["/runs/999", "/runs/999/metrics", "/runs/999/artifacts", "/runs/999/events"])
def test_unknown_run_is_404(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert response.json() == {"error": "not_found", "detail": "run 999 does not exist"}


def test_body_over_the_limit_is_413(client: TestClient) -> None:
    response = client.post("/runs", json={"kind": "train", "spec": {}, "name": "x" * 5000})
    assert response.status_code == 413 and response.json()["error"] == "body_too_large"


def test_list_filters_and_pages(client: TestClient) -> None:
    ids = [make_run(client, tags=["even"] if i % 2 == 0 else [])["id"] for i in range(5)]
    make_run(client, kind="demo", spec={"name": "wrong-sign"})
    page = client.get("/runs", params={"kind": "train", "limit": 2, "offset": 1}).json()
    assert page["count"] == 5 and [r["id"] for r in page["data"]] == ids[::-1][1:3]
    assert client.get("/runs", params={"tag": "even"}).json()["count"] == 3
    assert client.get("/runs", params={"status": "succeeded"}).json()["count"] == 0


def test_cancel_rerun_delete_of_a_queued_run(client: TestClient, settings: Settings) -> None:
    run = make_run(client, name="n", tags=["t"])
    cancelled = client.post(f"/runs/{run['id']}/cancel", headers=NOT_A_FORM).json()
    assert cancelled["status"] == "cancelled" and cancelled["finished_at"] is not None
    assert client.post(f"/runs/{run['id']}/cancel", headers=NOT_A_FORM).status_code == 409
    again = client.post(f"/runs/{run['id']}/rerun", headers=NOT_A_FORM)
    assert again.status_code == 201
    same = ("kind", "spec", "name", "tags")
    assert {k: again.json()[k] for k in same} == {k: run[k] for k in same}
    settings.run_dir(run["id"]).mkdir(parents=True)
    assert client.delete(f"/runs/{run['id']}").status_code == 204
    assert client.get(f"/runs/{run['id']}").status_code == 404
    assert not settings.run_dir(run["id"]).exists()


def test_running_run_cannot_be_deleted(client: TestClient, settings: Settings) -> None:
    run = make_run(client)
    db = Database(settings.db_url)
    with db.session(write=True) as session:
        assert runs.claim(session, run["id"], "w", "cpu")
    assert client.delete(f"/runs/{run['id']}").status_code == 409
    flagged = client.post(f"/runs/{run['id']}/cancel", headers=NOT_A_FORM).json()
    assert flagged["status"] == "running" and flagged["cancel_requested"]
    db.dispose()


def test_metrics_incremental_decimated_and_csv(client: TestClient, settings: Settings) -> None:
    run = make_run(client)
    db = Database(settings.db_url)
    with db.session(write=True) as session:
        runs.upsert_metrics(session, run["id"], [("loss", s, 1.0 / s) for s in range(1, 101)])
        runs.upsert_metrics(session, run["id"], [("acc", s, s / 100) for s in range(10, 101, 10)])
        runs.upsert_metrics(session, run["id"], [("loss", 50, 7.0)])  # a re-reported step replaces its value
    db.dispose()
    full = client.get(f"/runs/{run['id']}/metrics").json()
    assert full["last_step"] == 100 and not full["decimated"]
    assert full["series"]["loss"]["steps"] == list(range(1, 101))
    assert full["series"]["loss"]["values"][49] == 7.0
    newer = client.get(f"/runs/{run['id']}/metrics", params={"after_step": 95, "series": "loss"}).json()
    assert list(newer["series"]) == ["loss"] and newer["series"]["loss"]["steps"] == [96, 97, 98, 99, 100]
    small = client.get(f"/runs/{run['id']}/metrics", params={"points": 10}).json()
    assert small["decimated"] and len(small["series"]["loss"]["steps"]) <= 10
    assert 7.0 in small["series"]["loss"]["values"]  # the spike survives
    csv = client.get(f"/runs/{run['id']}/metrics", params={"format": "csv"})
    assert csv.headers["content-type"].startswith("text/csv")
    lines = csv.text.splitlines()
    assert lines[0] == "step,acc,loss" and len(lines) == 101 and lines[10].startswith("10,0.1,")


@pytest.mark.parametrize(("n", "points"), [(10, 20), (1000, 100), (1001, 7), (5, 2)])
def test_decimate_keeps_each_bucket_extremes(n: int, points: int) -> None:
    steps = list(range(n))
    values = [float((i * 37) % 101) for i in range(n)]
    out_steps, out_values = decimate(steps, values, points)
    assert len(out_steps) <= max(points, 2)
    assert out_steps == sorted(out_steps)
    assert max(values) in out_values and min(values) in out_values
    if n <= points:
        assert out_steps == steps


def test_decimate_keeps_non_finite_buckets() -> None:
    values: list[float | None] = [1.0] * 50 + [None] * 50
    _, out = decimate(list(range(100)), values, 10)
    assert None in out and 1.0 in out


@pytest.mark.parametrize("name", ["..", ".", "../../anode.db", "../secret.txt", "a/b", "/etc/passwd", "missing.csv"])
def test_artifact_names_cannot_leave_the_run_folder(client: TestClient, settings: Settings, name: str) -> None:
    run = make_run(client)
    (settings.data_dir / "secret.txt").write_text("no")
    encoded = name.replace(".", "%2E").replace("/", "%2F")
    response = client.get(f"/runs/{run['id']}/artifacts/{encoded}")
    assert response.status_code == 404
    db = Database(settings.db_url)
    with db.session() as session, pytest.raises(NotFound):
        artifact_download(session, run["id"], name)
    db.dispose()


def test_catalog_lists_names_defaults_and_bounds(client: TestClient) -> None:
    catalog = client.get("/catalog").json()
    assert set(catalog["kinds"]) == {"train", "compare", "demo"}
    from anode_lab.specs.common import SOLVERS

    assert [s["name"] for s in catalog["solvers"]] == list(SOLVERS)
    assert [s["name"] for s in catalog["solvers"]][:9] == [
        "euler", "midpoint", "heun", "heun3", "rk4", "dopri5", "bosh3", "reversible_heun", "alf"]
    solvers = {s["name"]: s for s in catalog["solvers"]}
    assert [(solvers[n]["order"], solvers[n]["stages"], solvers[n]["kind"]) for n in (
        "euler", "heun3", "rk4", "dopri5", "reversible_heun", "implicit_adams", "gl4")] == [
        (1, 1, "fixed"), (3, 3, "fixed"), (4, 4, "fixed"), (5, 7, "adaptive"), (2, 1, "reversible"),
        (4, 1, "multistep"), (4, 2, "implicit")]
    assert solvers["rk4"]["description"] == "classic Runge-Kutta: order 4, 4 field evaluations per step"
    assert solvers["dopri5"]["description"].endswith("order 5, 7 stages, 6 new field evaluations per accepted "
                                                     "or rejected step")
    assert solvers["gl4"]["description"].endswith("order 4, 2 field evaluations per Broyden iteration")
    assert {m["name"] for m in catalog["gradient_methods"]} == {"direct", "anode", "adjoint", "reversible"}
    assert solvers["rk4"]["methods"] == ["direct", "anode", "adjoint"]
    assert solvers["explicit_adams"]["methods"] == ["direct", "anode"] and not solvers["explicit_adams"]["checkpoints"]
    assert solvers["trbdf2"]["methods"] == ["direct", "anode", "adjoint"] and solvers["trbdf2"]["stored_states"]
    assert solvers["dopri5"]["methods"] == ["direct", "anode", "adjoint"] and not solvers["dopri5"]["stored_states"]
    assert solvers["reversible_heun"]["methods"] == ["direct", "anode", "reversible"]
    assert not solvers["reversible_heun"]["checkpoints"] and solvers["euler"]["checkpoints"]
    assert solvers["euler"]["knobs"] == {"steps": 2}  # what a spec that names the solver alone runs
    assert solvers["bosh3"]["knobs"] == {"rtol": DEFAULT_RTOL, "atol": DEFAULT_ATOL, "step_limit": DEFAULT_STEP_LIMIT}
    assert all(m["description"] for m in catalog["gradient_methods"])
    assert catalog["bounds"]["train"]["ode.steps"] == {"minimum": 1, "maximum": 256}
    assert catalog["kinds"]["train"]["schema"]["type"] == "object"
    assert any(p["name"] == "moons-adjoint" for p in catalog["presets"]["train"])
    assert {d["name"] for d in catalog["demos"]} >= {"wrong-sign", "non-invertible"}
    for kind, entry in catalog["kinds"].items():  # every default spec is accepted as is
        assert client.post("/runs", json={"kind": kind, "spec": entry["default"]}).status_code == 201


def test_keys_required_when_configured(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, api_keys="k1, k2")
    with TestClient(create_app(settings), base_url=f"http://localhost{API}") as client:
        assert client.get("/runs").status_code == 401
        assert client.get("/runs").json()["error"] == "unauthorized"
        assert client.get("/runs", headers={"X-API-Key": "nope"}).status_code == 401
        assert client.get("/runs", headers={"X-API-Key": "k2"}).status_code == 200


@pytest.mark.parametrize(("host", "keys", "ok"), [("127.0.0.1", "", True), ("localhost", "", True), ("::1", "", True),
                                                   ("0.0.0.0", "", False), ("192.0.2.7", "", False),
                                                   ("0.0.0.0", "secret", True)])
def test_non_loopback_bind_needs_keys(tmp_path: Path, host: str, keys: str, ok: bool) -> None:
    settings = Settings(data_dir=tmp_path, host=host, api_keys=keys)
    if ok:
        settings.check_bind()
    else:
        with pytest.raises(ValueError, match="ANODE_API_KEYS"):
            settings.check_bind()


def test_migrations_match_the_models(tmp_path: Path) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from backend.db import make_engine, migrate
    from backend.models import Base

    url = f"sqlite:///{tmp_path / 'm.db'}"
    migrate(url, tmp_path)
    migrate(url, tmp_path)  # idempotent
    engine = make_engine(url)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    engine.dispose()


def test_the_contracts_run_statuses_are_the_enum(client: TestClient) -> None:
    from anode_lab.status import RunStatus

    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    assert schemas["RunStatus"]["enum"] == [status.value for status in RunStatus]
    bad = client.get("/runs", params={"status": "done"})
    assert bad.status_code == 422 and "queued" in bad.text


def test_openapi_documents_every_endpoint(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    expected = {"/runs", "/runs/{run_id}", "/runs/{run_id}/metrics", "/runs/{run_id}/events", "/runs/{run_id}/cancel",
                "/runs/{run_id}/rerun", "/runs/{run_id}/artifacts", "/runs/{run_id}/artifacts/{name}", "/catalog",
                "/health", "/groups", "/groups/{group_id}"}
    assert {p.removeprefix(API) for p in paths} >= expected


def test_a_running_run_without_heartbeat_says_its_worker_is_gone(client: TestClient, settings: Settings) -> None:
    from datetime import timedelta

    from backend.db import utcnow
    from backend.models import Run

    run = make_run(client)
    db = Database(settings.db_url)
    with db.session(write=True) as session:
        assert runs.claim(session, run["id"], "host:1:cpu:x", "cpu")
    assert client.get(f"/runs/{run['id']}").json()["status_detail"] == "attempt 1 on host:1:cpu:x"
    with db.session(write=True) as session:
        session.get(Run, run["id"]).heartbeat = utcnow() - timedelta(hours=1)  # type: ignore[union-attr]
    assert "its worker is gone" in client.get(f"/runs/{run['id']}").json()["status_detail"]
    db.dispose()
