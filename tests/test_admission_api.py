"""What the API admits, the same on every store (issue 20, findings 5 and 8; issue 24, item 8), in-process
(FastAPI's TestClient) on a real SQLite file and on a real PostgreSQL server: text the stores or the filesystem
would refuse is a 422 naming the field, never a 500; a data ``root`` is refused, with an error type that says
why, when it is outside the data folders, too long for the filesystem, or does not hold the data set's files; a
group takes one creation token per run.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from service_helpers import NOT_A_FORM

from anode_lab.specs.train import DATA_FILES
from backend.app import create_app
from backend.runs.schemas import PRINTABLE_PATTERN
from backend.settings import Settings

API = "/api/v1"
MNIST = {"model": "conv_ode", "dataset": "mnist", "epochs": 1, "device": "cpu"}
TRAIN = {"dataset": "moons", "epochs": 1, "device": "cpu"}


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    url = request.getfixturevalue("postgres_server").new_url() if request.param == "postgresql" else None
    return Settings(data_dir=tmp_path, database_url=url, create_burst=20, create_rate_per_minute=1)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), base_url=f"http://localhost{API}") as test_client:
        yield test_client


def lay_out(root: Path, dataset: str) -> Path:
    """Empty files where ``dataset``'s files go: enough to be admitted (the worker checks their MD5s)."""
    for rel in DATA_FILES[dataset]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).touch()
    return root


def refused(response: Any, loc: list[str], error_type: str) -> str:
    """The 422's message about ``loc``, checked to be the only error and of ``error_type``."""
    assert response.status_code == 422, response.text
    errors = response.json()["errors"]
    assert [(e["loc"][-len(loc):], e["type"]) for e in errors] == [(loc, error_type)], errors
    return str(errors[0]["msg"])


# ------------------------------------------------------------------------ 20.8: text the stores refuse
def post_json(client: TestClient, path: str, body: dict[str, Any]) -> Any:
    """``body`` as JSON with every non-ASCII character escaped, so that a lone surrogate travels as ``\\ud800``."""
    return client.post(path, content=json.dumps(body).encode(), headers={"content-type": "application/json"})


@pytest.mark.parametrize("bad", ["a\x00b", "tab\there", "esc\x1b[31m", "line\nbreak", "del\x7f", "c1\x85",
                                 "lone \ud800 surrogate"],
                         ids=["nul", "tab", "escape", "newline", "del", "c1", "surrogate"])
def test_a_name_with_a_control_character_is_a_422_naming_it(client: TestClient, bad: str) -> None:
    """A NUL in a run or group name was a 500 (DataError) on PostgreSQL; every store now gets the same 422."""
    if "\ud800" not in bad:  # the OpenAPI schema says what the server refuses (JSON itself has no surrogates)
        assert re.match(PRINTABLE_PATTERN, bad) is None
    run = post_json(client, "/runs", {"kind": "train", "spec": TRAIN, "name": bad})
    group = post_json(client, "/groups", {"spec": TRAIN, "methods": [{"method": "anode"}], "name": bad})
    for response in (run, group):
        if "\ud800" in bad:  # pydantic refuses it itself, as "not a unicode string"
            refused(response, ["name"], "string_unicode")
            continue
        message = refused(response, ["name"], "value_error")
        assert "holds a control character (U+" in message and "remove it" in message, message
    assert client.get("/runs").json()["count"] == 0


def test_a_root_with_a_nul_byte_is_a_422_naming_root(client: TestClient) -> None:
    response = client.post("/runs", json={"kind": "train", "spec": {**MNIST, "root": "data\x00/x"}})
    assert "`root` holds a control character (U+0000) at position 4" in refused(response, ["spec", "root"],
                                                                                  "value_error")


@pytest.mark.parametrize(("root", "words"), [
    pytest.param("x" * 4096, "longest folder name has 4096", id="one-4096-character-name"),
    pytest.param("/".join(["y" * 200] * 20), "a path of", id="4020-character-relative-path"),
])
def test_a_root_the_filesystem_cannot_open_is_refused_at_the_api(client: TestClient, root: str, words: str) -> None:
    """A relative root of 4,096 characters was accepted and stored, then refused by the worker and by rerun."""
    message = refused(client.post("/runs", json={"kind": "train", "spec": {**MNIST, "root": root}}), ["spec", "root"],
                      "root_too_long")
    assert words in message and "set `root` to a shorter folder" in message


def test_an_admitted_root_is_stored_resolved_and_a_rerun_is_admitted_again(client: TestClient,
                                                                         settings: Settings) -> None:
    folder = lay_out(settings.allowed_data_roots[0] / ("z" * 250) / "mnist", "mnist")
    run = client.post("/runs", json={"kind": "train", "spec": {**MNIST, "root": f"{'z' * 250}/mnist"},
                                     "name": "plain · text ✓"})
    assert run.status_code == 201, run.text
    assert run.json()["spec"]["root"] == str(folder) and run.json()["name"] == "plain · text ✓"
    again = client.post(f"/runs/{run.json()['id']}/rerun", headers=NOT_A_FORM)
    assert again.status_code == 201, again.text
    assert again.json()["spec"] == run.json()["spec"]


# ------------------------------------------------------------------------ 24.8: roots of local data sets
def test_a_root_without_the_data_sets_files_is_refused_naming_them(client: TestClient, settings: Settings) -> None:
    """The form's ``./data`` resolved under the data folder and was accepted; the worker failed 0.1 s later."""
    where = settings.allowed_data_roots[0] / "data"
    message = refused(client.post("/runs", json={"kind": "train", "spec": {**MNIST, "root": "./data"}}),
                      ["spec", "root"], "data_missing")
    assert f"({where})" in message and str(where / "MNIST/raw/train-images-idx3-ubyte.gz") in message
    assert "4 of its 4 files are missing" in message
    lay_out(where, "cifar10")
    (where / DATA_FILES["cifar10"][0]).unlink()
    cifar = client.post("/runs", json={"kind": "train", "spec": {**MNIST, "dataset": "cifar10", "root": "./data"}})
    assert "1 of its 7 files are missing, e.g. " + str(where / DATA_FILES["cifar10"][0]) in refused(
        cifar, ["spec", "root"], "data_missing")
    assert client.get("/runs").json()["count"] == 0


def test_a_root_outside_the_data_folders_says_so_in_its_type(client: TestClient, tmp_path: Path) -> None:
    message = refused(client.post("/runs", json={"kind": "train", "spec": {**MNIST, "root": str(tmp_path)}}),
                      ["spec", "root"], "outside_data_roots")
    assert "outside the data folders of this service" in message


def test_the_catalog_lists_the_data_folders_and_the_files_each_set_needs(client: TestClient,
                                                                        settings: Settings) -> None:
    catalog = client.get("/catalog").json()
    assert catalog["data_roots"] == [str(root) for root in settings.allowed_data_roots]
    files = {d["name"]: d["files"] for d in catalog["datasets"]}
    assert files["mnist"] == list(DATA_FILES["mnist"]) and files["cifar100"] == list(DATA_FILES["cifar100"])
    assert files["moons"] == [] and files["digits"] == []


# ------------------------------------------------------------------------ 20.5: a group's creation tokens
def test_a_group_takes_one_creation_token_per_run(client: TestClient) -> None:
    """66 groups of 8 methods queued 528 runs under a limit of 60 runs at once: each run now takes a token."""
    methods = [{"method": "direct"}, {"method": "anode"}, {"method": "adjoint"}, {"method": "anode", "checkpoints": 1},
               {"method": "anode", "checkpoints": 2}, {"method": "adjoint", "reconstruct": False}]
    first = client.post("/groups", json={"spec": TRAIN, "methods": methods})
    second = client.post("/groups", json={"spec": TRAIN, "methods": methods})
    third = client.post("/groups", json={"spec": TRAIN, "methods": methods})  # 18 of 20 tokens taken
    assert [first.status_code, second.status_code, third.status_code] == [201, 201, 201], third.text
    fourth = client.post("/groups", json={"spec": TRAIN, "methods": methods})
    assert fourth.status_code == 429 and fourth.json()["error"] == "rate_limited", fourth.text
    assert int(fourth.headers["retry-after"]) >= 4 * 60 - 5  # 4 tokens short, at one a minute
    assert [client.post("/runs", json={"kind": "train", "spec": TRAIN}).status_code for _ in range(3)] == [201, 201,
                                                                                                          429]
    assert client.get("/runs").json()["count"] == 20
