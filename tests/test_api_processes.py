"""``ANODE_API_PROCESSES``: ``anode-lab api`` serves one port from several processes, each of which answers,
a dead one is replaced, and SIGTERM ends them all."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
from service_helpers import Service, descendants, wait_for


def serving(api_pid: int) -> list[int]:
    """The processes under the API's that serve requests (uvicorn's supervisor spawns them)."""
    found = []
    for pid in descendants(api_pid):
        try:
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            pass
    return found


def two_serving(api_pid: int, gone: int | None = None) -> list[int] | None:
    found = serving(api_pid)
    return found if len(found) == 2 and gone not in found else None


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_the_api_serves_its_port_from_each_of_its_processes(tmp_path: Path) -> None:
    """Two processes: with either one stopped (SIGSTOP), the other answers new connections, reads and a created run
    alike; one killed is replaced and the port keeps answering; SIGTERM to the API ends every one of them."""
    service = Service(tmp_path, {"ANODE_API_PROCESSES": "2"})
    try:
        service.start_api()
        api = service.api
        assert api is not None
        first = wait_for(lambda: two_serving(api.pid), 60, "two serving processes")
        for stopped in first:
            os.kill(stopped, signal.SIGSTOP)
            try:
                with httpx.Client(base_url=service.url, timeout=10) as http:  # a new connection
                    assert http.get("/health").status_code == 200
                    created = http.post("/runs", json={"kind": "demo", "spec": {"name": "wrong-sign"}})
                    assert created.status_code == 201
                    assert http.get(f"/runs/{created.json()['id']}").json()["status"] == "queued"
            finally:
                os.kill(stopped, signal.SIGCONT)
        os.kill(first[0], signal.SIGKILL)
        now = wait_for(lambda: two_serving(api.pid, gone=first[0]), 60, "the killed process's replacement")
        assert first[1] in now
        with httpx.Client(base_url=service.url, timeout=10) as http:
            assert http.get("/runs").json()["count"] == 2  # one store behind both: each process's run is there
    finally:
        service.stop()
    assert api.returncode == 0, service.logs("api")
    assert not any(alive(pid) for pid in now), "a serving process outlived the API"
