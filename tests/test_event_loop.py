"""No SQL on the event loop (issue 23, item 4): every route of the API is called once, in process, with a listener
on the store's engine that notes each statement, commit and connection checkout made from a thread that is running
an event loop. Routes are plain ``def`` (FastAPI's thread pool); dependencies are ``async def`` that do no I/O
(the session is made on the loop, unconnected, and committed on the pool); the event stream, the one ``async def``
route, reads the store on worker threads. The test fails on an ``async def`` route or dependency
that opens or uses a session, and on a route it does not call (so a new route is checked too)."""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import event

from backend.app import API_PREFIX, create_app
from backend.settings import Settings

SPEC = {"dataset": "moons", "n_samples": 64, "batch_size": 32, "epochs": 1, "device": "cpu"}
JSON = {"Content-Type": "application/json"}


def on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


@pytest.fixture
def app_and_client(tmp_path: Path) -> Iterator[tuple[Any, TestClient]]:
    app = create_app(Settings(data_dir=tmp_path))
    with TestClient(app, base_url=f"http://localhost{API_PREFIX}") as client:
        yield app, client


def test_no_route_runs_sql_on_the_event_loop(app_and_client: tuple[Any, TestClient]) -> None:
    app, client = app_and_client
    on_loop: list[str] = []
    called: set[tuple[str, str]] = set()
    engine = app.state.db.engine

    def note(what: str) -> Any:
        def listener(*args: Any, **kwargs: Any) -> None:
            if on_event_loop():
                on_loop.append(f"{what} in {threading.current_thread().name}: {called_now}")
        return listener

    called_now = ""
    for name in ("before_cursor_execute", "commit", "checkout"):
        event.listen(engine, name, note(name))

    def call(method: str, template: str, path: str, **kwargs: Any) -> Any:
        nonlocal called_now
        called_now = f"{method} {template}"
        called.add((method, template))
        response = client.request(method, path, **kwargs)
        assert response.status_code < 500, (called_now, response.text)
        return response

    created = call("POST", "/runs", "/runs", json={"kind": "train", "spec": SPEC}).json()
    run_id = created["id"]
    call("GET", "/runs", "/runs")
    call("GET", "/runs/{run_id}", f"/runs/{run_id}")
    for params in ({}, {"after_step": 0}, {"points": 10}, {"format": "csv"}):
        call("GET", "/runs/{run_id}/metrics", f"/runs/{run_id}/metrics", params=params)
    call("GET", "/runs/{run_id}/artifacts", f"/runs/{run_id}/artifacts")
    call("GET", "/runs/{run_id}/artifacts/{name}", f"/runs/{run_id}/artifacts/loss.png")
    call("POST", "/runs/{run_id}/cancel", f"/runs/{run_id}/cancel", headers=JSON)
    events = call("GET", "/runs/{run_id}/events", f"/runs/{run_id}/events")  # cancelled: the stream ends
    assert "event: end" in events.text
    call("POST", "/runs/{run_id}/rerun", f"/runs/{run_id}/rerun", headers=JSON)
    call("DELETE", "/runs/{run_id}", f"/runs/{run_id}")
    group = call("POST", "/groups", "/groups", json={"kind": "train", "spec": SPEC,
                                                      "methods": [{"method": "direct"}, {"method": "anode"}]}).json()
    call("GET", "/groups/{group_id}", f"/groups/{group['id']}")
    call("GET", "/catalog", "/catalog")
    call("GET", "/health", "/health")
    call("GET", "/docs", "/docs")
    tracked = call("POST", "/external", "/external", json={"name": "own loop"}).json()
    call("POST", "/external/{run_id}/points", f"/external/{tracked['id']}/points",
         json={"points": [{"step": 0, "values": {"train_loss": 1.0}}]})
    call("POST", "/external/{run_id}/end", f"/external/{tracked['id']}/end", json={"status": "succeeded"})

    routes = {(method, route.path.removeprefix(API_PREFIX)) for route in app.routes
              if isinstance(route, APIRoute) and route.path.startswith(API_PREFIX) for method in route.methods}
    assert routes - called == set(), "call every route here, so that each is checked"
    assert on_loop == []


def test_the_only_async_route_takes_no_session() -> None:
    """An ``async def`` route (the event stream) may not depend on a session: FastAPI would open it, and run its
    queries if any, on the loop."""
    from backend.deps import get_session

    app = create_app(Settings())

    def needs_session(dependant: Any) -> bool:
        return any(dep.call is get_session or needs_session(dep) for dep in dependant.dependencies)

    for route in app.routes:
        if isinstance(route, APIRoute) and inspect.iscoroutinefunction(route.endpoint):
            assert not needs_session(route.dependant), f"{route.path}: async def with a session; make it def"
