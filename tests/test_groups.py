"""Side-by-side groups (``POST /groups``, ``GET /groups/{id}``) in-process on a temporary SQLite store; the
did-you-mean for unknown spec fields in the API and the CLI; media types of the artifacts runs write."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from backend.app import create_app
from backend.runs import service as runs_service
from backend.runs.service import guess_media_type
from backend.settings import Settings

API = "/api/v1"
SPEC = {"dataset": "moons", "epochs": 1, "device": "cpu", "seed": 7}
METHODS = [{"method": "direct"}, {"method": "anode"}, {"method": "adjoint"}]


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(data_dir=tmp_path)), base_url=f"http://localhost{API}") as test_client:
        yield test_client


def run_count(client: TestClient) -> int:
    return int(client.get("/runs").json()["count"])


def test_group_makes_one_run_per_method_identical_but_for_the_gradient(client: TestClient) -> None:
    response = client.post("/groups", json={"kind": "train", "spec": SPEC, "methods": METHODS, "name": "cmp",
                                            "tags": ["side"]})
    assert response.status_code == 201, response.text
    group = response.json()
    runs = group["runs"]
    assert [r["spec"]["ode"]["gradient"]["method"] for r in runs] == ["direct", "anode", "adjoint"]
    assert [r["name"] for r in runs] == ["cmp · direct", "cmp · anode", "cmp · adjoint"]
    assert {r["group_id"] for r in runs} == {group["id"]} and all(r["tags"] == ["side"] for r in runs)
    without_gradient = [{**r["spec"], "ode": {**r["spec"]["ode"], "gradient": None}} for r in runs]
    assert without_gradient[0] == without_gradient[1] == without_gradient[2]
    assert runs[0]["spec"]["seed"] == 7
    again = client.get(f"/groups/{group['id']}").json()
    assert [r["id"] for r in again["runs"]] == [r["id"] for r in runs]
    assert [r["status"] for r in again["runs"]] == ["queued"] * 3 and again["name"] == "cmp"
    assert client.get(f"/runs/{runs[0]['id']}").json()["group_id"] == group["id"]


@pytest.mark.parametrize(("body", "named"), [
    ({"spec": SPEC, "methods": [{"method": "direct"}, {"method": "direct", "checkpoints": 2}]}, "methods.1"),
    ({"spec": SPEC, "methods": [{"method": "direct"}, {"method": "nope"}]}, "methods.1.method"),
    ({"spec": {**SPEC, "epochs": 0}, "methods": METHODS}, "spec.epochs"),
    ({"spec": SPEC, "methods": [{"method": "anode"}, {"method": "anode", "checkpoints": None}]}, "methods.1"),
    ({"spec": SPEC, "methods": []}, "methods"),
    ({"kind": "compare", "spec": {}, "methods": METHODS}, "kind"),
])
def test_an_invalid_group_creates_nothing_and_names_the_entry(client: TestClient, body: dict[str, Any],
                                                             named: str) -> None:
    response = client.post("/groups", json=body)
    assert response.status_code == 422, response.text
    assert named + ":" in response.json()["detail"] or named + " " in response.json()["detail"], response.json()
    assert response.json()["detail"].count(named + ":") <= 1  # a shared fault is said once, not per method
    assert run_count(client) == 0


def test_a_refusal_of_a_later_run_rolls_back_the_earlier_ones(client: TestClient,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Run creation may refuse a run after validation (cost limits): the group is created whole or not at all."""
    from backend.errors import InvalidSpec

    create = runs_service.create_run
    calls = []

    def refuse_the_third(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs.get("group_id"))
        if len(calls) == 3:
            raise InvalidSpec("spec: over the cost limit")
        return create(*args, **kwargs)

    monkeypatch.setattr(runs_service, "create_run", refuse_the_third)
    response = client.post("/groups", json={"spec": SPEC, "methods": METHODS})
    assert response.status_code == 422 and len(calls) == 3 and calls[0] is not None
    monkeypatch.setattr(runs_service, "create_run", create)
    assert run_count(client) == 0
    assert client.get(f"/groups/{calls[0]}").status_code == 404


def test_unknown_group_is_404(client: TestClient) -> None:
    response = client.get("/groups/12345")
    assert response.status_code == 404 and "group 12345" in response.json()["detail"]


@pytest.mark.parametrize(("spec", "said"), [
    ({"epochz": 3}, "spec.epochz: unknown field; did you mean epochs?"),
    ({"ode": {"stepz": 3}}, "spec.ode.stepz: unknown field; did you mean steps?"),
    ({"ode": {"gradient": {"methd": "anode"}}}, "spec.ode.gradient.methd: unknown field; did you mean method?"),
    ({"zzzzzz": 1}, "spec.zzzzzz: unknown field; remove it or check its spelling"),
])
def test_unknown_spec_field_suggests_the_near_name_in_the_api(client: TestClient, spec: dict[str, Any],
                                                              said: str) -> None:
    response = client.post("/runs", json={"kind": "train", "spec": spec})
    assert response.status_code == 422
    assert said in response.json()["detail"]


def test_unknown_spec_field_suggests_the_near_name_in_the_cli(tmp_path: Path) -> None:
    from anode_lab.specfile import SpecFileError, load_spec_file

    path = tmp_path / "spec.yaml"
    path.write_text("kind: train\nspec:\n  epochz: 3\n")
    with pytest.raises(SpecFileError) as info:
        load_spec_file(path)
    assert "spec.epochz: unknown field; did you mean epochs?" in str(info.value.lines)


@pytest.mark.parametrize(("name", "media_type"), [
    ("model.pt", "application/octet-stream"), ("checkpoint.pth", "application/octet-stream"),
    ("metrics.csv", "text/csv"), ("summary.json", "application/json"), ("loss.png", "image/png"),
    ("loss.svg", "image/svg+xml"), ("spec.yaml", "application/yaml"), ("notes.txt", "text/plain"),
    ("blob.unknownext", "application/octet-stream"),
])
def test_each_artifact_kind_has_a_sensible_media_type(name: str, media_type: str) -> None:
    assert guess_media_type(name) == media_type


def test_catalog_texts_carry_no_developer_markup() -> None:
    """What the dashboard shows from the catalog reads as prose: no Sphinx roles, no double backticks."""
    import json
    import re

    from backend.catalog.service import catalog, plain

    assert plain("a preset of :data:`DEMOS` and ``x``") == "a preset of DEMOS and x"
    text = json.dumps(catalog())
    assert not re.search(r":(data|class|func|meth|attr|mod):`", text)


def test_a_group_over_the_operators_cost_limit_is_refused_whole(tmp_path: Path) -> None:
    """The same cost rules as ``POST /runs``: checked for every run of the group before any is stored."""
    with TestClient(create_app(Settings(data_dir=tmp_path, max_run_steps=10)),
                    base_url=f"http://localhost{API}") as client:
        single = client.post("/runs", json={"kind": "train", "spec": SPEC})
        group = client.post("/groups", json={"spec": SPEC, "methods": METHODS})
        assert single.status_code == group.status_code == 422
        assert {e["type"] for e in group.json()["errors"]} == {"cost_limit"}
        assert run_count(client) == 0
