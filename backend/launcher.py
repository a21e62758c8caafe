"""``anode-lab up``: the API, one worker per device class present and the dashboard, as child processes.

Each child gets its own process group, so Ctrl-C in the terminal reaches only this launcher, which then stops
the children: SIGTERM to each part's own process (a worker hands its run back to the queue, checkpointed), then
SIGKILL to the process group of any part still there after ``STOP_TIMEOUT_S``. SIGINT and SIGTERM are both
handled explicitly: a shell that starts a background job (or a supervisor) may hand this process SIGINT ignored,
and Python then never raises ``KeyboardInterrupt``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from backend.settings import API_PREFIX, Settings

STOP_TIMEOUT_S = 20.0
START_TIMEOUT_S = 90.0


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]

    def terminate(self) -> None:
        """SIGTERM to the part's own process only: a worker then stops its run's child between two steps (the run
        checkpoints and goes back to the queue); signalling its whole group would kill that child (and the
        forkserver it came from) mid-step, and the run would end as a process that died."""
        with contextlib.suppress(ProcessLookupError):
            self.process.terminate()

    def kill(self) -> None:
        """SIGKILL to the part's process group: it and everything it started."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "anode_lab.cli", *args]


def _spawn(name: str, command: list[str], env: dict[str, str] | None = None) -> Child:
    return Child(name, subprocess.Popen(command, start_new_session=True, env=env))


def _api_url(settings: Settings) -> str:
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    return f"http://{host}:{settings.port}"


def _wait_healthy(settings: Settings, api: Child) -> None:
    request = urllib.request.Request(f"{_api_url(settings)}{API_PREFIX}/health",
                                     headers={"X-API-Key": settings.api_keys[0]} if settings.api_keys else {})
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if api.process.poll() is not None:
            raise RuntimeError(f"the API exited with code {api.process.returncode}")
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                if json.load(response).get("status") == "ok":
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"the API did not answer on {_api_url(settings)} within {START_TIMEOUT_S:.0f} s")


def _cuda_present() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _dashboard_command(port: int, hosts: list[str]) -> list[str] | None:
    """``streamlit run dashboard/app.py`` when the dashboard and Streamlit are installed, on loopback, answering
    only ``hosts`` (Streamlit refuses the websocket of any other Host; the app refuses to render for one) and
    only websockets from its own origin (CORS and XSRF protection on, whatever a config file says)."""
    if importlib.util.find_spec("streamlit") is None:
        return None
    spec = importlib.util.find_spec("dashboard")
    if spec is None or spec.origin is None:
        return None
    entry = Path(spec.origin).parent / "app.py"
    if not entry.is_file():
        return None
    allowed = [option for host in hosts for option in ("--server.allowedHosts", host.strip("[]"))]
    return [sys.executable, "-m", "streamlit", "run", str(entry), "--server.address", "127.0.0.1",
            "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false",
            "--client.toolbarMode", "minimal",  # no "Deploy" button
            "--server.enableCORS", "true", "--server.enableXsrfProtection", "true", *allowed]


def _stop(children: list[Child]) -> None:
    for child in children:
        child.terminate()
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for child in children:
        try:
            child.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"{child.name} did not stop in time; killing it", flush=True)
            child.kill()
            child.process.wait()


def up(settings: Settings | None = None, *, access_log: bool = False) -> int:
    """Start everything, print the URLs, and stop everything on SIGINT or SIGTERM (exit 0) or when a part exits
    (exit 1). Quiet: the API's access log (a line per dashboard poll) only with ``access_log``."""
    settings = settings or Settings()
    try:
        settings.check_bind()
    except ValueError as exc:
        print(f"anode-lab up: {exc}", file=sys.stderr)
        return 2
    children: list[Child] = []

    def terminate(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, terminate)
    try:
        api = _spawn("api", _cli("api", "--access-log" if access_log else "--no-access-log"))
        children.append(api)
        _wait_healthy(settings, api)
        devices = ["cpu", *(["gpu"] if _cuda_present() else [])]
        for device in devices:
            children.append(_spawn(f"{device} worker", _cli("worker", "--device", device)))
        dashboard = _dashboard_command(settings.dashboard_port, settings.served_hosts)
        if dashboard is not None:  # no key: a person signs in with their own (dashboard.access)
            env = {**os.environ, "ANODE_API_URL": f"{_api_url(settings)}{API_PREFIX}",
                   "ANODE_ALLOWED_HOSTS": ",".join(settings.served_hosts)}
            env.pop("ANODE_API_KEYS", None)
            children.append(_spawn("dashboard", dashboard, env))
        print(f"API        {_api_url(settings)}{API_PREFIX}  (docs: {_api_url(settings)}{API_PREFIX}/docs)")
        print(f"workers    {', '.join(devices)}   data: {settings.data_dir}")
        print(f"dashboard  http://127.0.0.1:{settings.dashboard_port}" if dashboard else "dashboard  not installed")
        print("Ctrl-C stops everything.", flush=True)
        while True:
            for child in children:
                if child.process.poll() is not None:
                    print(f"{child.name} exited with code {child.process.returncode}; stopping", flush=True)
                    return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("stopping…", flush=True)
        return 0
    except RuntimeError as exc:
        print(f"anode-lab up: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not cut the orderly stop short
            signal.signal(signum, signal.SIG_IGN)
        _stop(sorted(children, key=lambda child: child.name == "api"))  # the API last: workers still write
