"""Reliability figures, in one run on loopback with a temporary data folder (the numbers in RELIABILITY.md):

1. load: for a fixed time, concurrent clients create runs, list runs, poll a run and its metrics incrementally
   and stream events, against ``anode-lab api`` with one ``anode-lab worker``; errors (any non-2xx answer or
   transport failure) and latency percentiles per kind of request;
2. SSE fan-out: 50 clients stream one training run from start to end; each must get every step once and the
   ``end`` event; time to the first event and from the run's end to each stream's ``end``;
3. recovery after a killed worker: a run's worker is killed (-9) mid-run and a replacement started at once (as a
   supervisor would); time until the run is re-queued, running again, and past the step it had reached; every
   step stored once, and how many steps were computed twice (after the checkpoint); with short leases, then
   (unless ``--quick``) at the default settings with a second, idle worker running, twice: the killed worker on
   the idle one's host (which sees its process gone at its next reaper pass) and as if on another host (its row
   is relabelled with another host name right after the kill, so only its lease reveals it);
4. cancel: time from ``POST /runs/{id}/cancel`` to ``cancelled``, and steps run after the flag was set;
5. refusal: time to answer 422 to an over-budget spec (issue 11's 34 GB sweep and 75 M-step training run).
6. reads of a long run: the API's peak memory over idle (``VmHWM`` against ``VmRSS`` at rest) while 3 clients read
   a run with 1 M metric rows whole (JSON, CSV, decimated, in turn) and 50 slow clients follow its event stream.
7. slow clients: 5,000 connections (50 per loopback address) each sending a header byte every 5 s, reconnecting
   whenever the server closes them, for 60 s: ``/health`` latency on a new connection every 0.5 s, how long the
   server held each slow connection, the server's open descriptors (``/proc/PID/fd``) against idle and how soon
   they are back after the attack; then 1,000 connections from one address against the per-peer cap.

    python bench/reliability.py [--seconds 20] [--quick] [--reads-only] [--recovery-only] [--slow-clients-only]

Numbers from a shared machine are noisy: rerun before trusting an absolute.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from loopback import free_port, wait  # noqa: E402

API = "/api/v1"
TINY_DEMO = {"kind": "demo", "spec": {"name": "non-invertible"}}
TRAIN = {"dataset": "moons", "n_samples": 1024, "batch_size": 16, "epochs": 6, "device": "cpu",
         "checkpoint_every": 25}
"""288 steps of a few milliseconds, a checkpoint every 25."""
LONG_TRAIN = {**TRAIN, "n_samples": 8192, "epochs": 2, "checkpoint_every": 50}
"""768 steps, a checkpoint every 50: killed at about step 100, it has a good part left to run."""
FAST_LEASES = {"ANODE_HEARTBEAT_SECONDS": "0.5", "ANODE_HEARTBEAT_TIMEOUT_SECONDS": "3",
               "ANODE_REAPER_SECONDS": "0.5"}
ENDED = {"succeeded", "failed", "cancelled", "diverged"}
PER_STEP = ("train_loss", "train_acc", "step_time")






def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else float("nan")


class Stack:
    """``anode-lab api`` and workers as child processes in their own process groups."""

    def __init__(self, data_dir: Path, env: dict[str, str]) -> None:
        self.data_dir, self.port = data_dir, free_port()
        self.env = {**os.environ, "ANODE_DATA_DIR": str(data_dir), "ANODE_PORT": str(self.port),
                    "ANODE_TORCH_THREADS": "1", "ANODE_METRICS_FLUSH_SECONDS": "0.2", **env}
        self.url = f"http://127.0.0.1:{self.port}{API}"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.log = open(data_dir / "stack.log", "ab")

    def spawn(self, *args: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, "-m", "anode_lab.cli", *args], env=self.env, cwd=ROOT,
                                stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def start(self, client: httpx.Client, workers: int = 1) -> None:
        self.spawn("api")
        for _ in range(workers):
            self.spawn("worker", "--device", "cpu")
        wait(lambda: len(client.get("/health").json()["workers"]) >= workers, 120, "the API and live workers")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def submit(client: httpx.Client, body: dict[str, Any]) -> int:
    response = client.post("/runs", json=body)
    response.raise_for_status()
    return int(response.json()["id"])


def last_step(client: httpx.Client, run_id: int) -> int:
    return int(client.get(f"/runs/{run_id}/metrics", params={"series": "train_loss"}).json()["last_step"] or 0)


def steps_stored_once(client: httpx.Client, run: dict[str, Any]) -> tuple[int, int]:
    """(missing, duplicated) steps over the series a training run reports at every step (others come once an
    epoch or on instrumented steps only)."""
    total = run["summary"]["steps"]
    missing = duplicated = 0
    series = client.get(f"/runs/{run['id']}/metrics").json()["series"]
    for name in PER_STEP:
        counts = Counter(series[name]["steps"])
        duplicated += sum(n - 1 for n in counts.values())
        missing += len(set(range(1, total + 1)) - set(counts))
    return missing, duplicated


# -------------------------------------------------------------------------------------------------- load
async def load(url: str, seconds: float, run_id: int) -> dict[str, list[float]]:
    """Creators, listers, pollers and streamers for ``seconds``; returns latencies per kind, and errors."""
    out: dict[str, list[float]] = {"create": [], "list": [], "poll": [], "metrics": [], "stream": []}
    errors: list[str] = []
    deadline = time.monotonic() + seconds

    async def timed(kind: str, call: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        try:
            response = await call()
        except httpx.HTTPError as exc:
            errors.append(f"{kind}: {type(exc).__name__}")
            return None
        out[kind].append(time.perf_counter() - start)
        if response.status_code >= 300:
            errors.append(f"{kind}: {response.status_code}")
        return response

    async def creator(client: httpx.AsyncClient) -> None:
        while time.monotonic() < deadline:
            await timed("create", lambda: client.post("/runs", json=TINY_DEMO))
            await asyncio.sleep(1.0)

    async def lister(client: httpx.AsyncClient) -> None:
        while time.monotonic() < deadline:
            await timed("list", lambda: client.get("/runs", params={"limit": 20}))
            await asyncio.sleep(0.05)

    async def poller(client: httpx.AsyncClient) -> None:
        cursor = 0
        while time.monotonic() < deadline:
            await timed("poll", lambda: client.get(f"/runs/{run_id}"))
            metrics = partial(client.get, f"/runs/{run_id}/metrics", params={"after_step": cursor})
            response = await timed("metrics", metrics)
            if response is not None and response.status_code == 200:
                cursor = response.json()["last_step"] or cursor
            await asyncio.sleep(0.05)

    async def streamer(client: httpx.AsyncClient) -> None:
        while time.monotonic() < deadline:
            start = time.perf_counter()
            try:
                async with client.stream("GET", f"/runs/{run_id}/events", params={"after_step": 10**6}) as stream:
                    if stream.status_code != 200:
                        errors.append(f"stream: {stream.status_code}")
                    async for line in stream.aiter_lines():
                        if line.startswith("event:"):
                            out["stream"].append(time.perf_counter() - start)  # time to the first event
                            break
            except httpx.HTTPError as exc:
                errors.append(f"stream: {type(exc).__name__}")
            await asyncio.sleep(0.2)

    limits = httpx.Limits(max_connections=4)
    roles = [creator] * 2 + [lister] * 4 + [poller] * 8 + [streamer] * 4
    clients = [httpx.AsyncClient(base_url=url, timeout=30, limits=limits) for _ in roles]
    try:
        await asyncio.gather(*(role(client) for role, client in zip(roles, clients, strict=True)))
    finally:
        for client in clients:
            await client.aclose()
    out["errors"] = errors  # type: ignore[assignment]
    return out


# ---------------------------------------------------------------------------------------------------- SSE
async def sse_fanout(url: str, run_id: int, clients: int) -> dict[str, Any]:
    """``clients`` streams of one run from its start to its end."""
    firsts: list[float] = []
    ends: list[float] = []
    complete = 0
    problems: list[str] = []

    async def one() -> None:
        nonlocal complete
        steps: list[int] = []
        start = time.perf_counter()
        async with httpx.AsyncClient(base_url=url, timeout=120) as client, \
                client.stream("GET", f"/runs/{run_id}/events") as stream:
            if stream.status_code != 200:
                problems.append(str(stream.status_code))
                return
            event, first = "", True
            async for line in stream.aiter_lines():
                if line.startswith("event:"):
                    event = line.split(":", 1)[1].strip()
                    if first:
                        firsts.append(time.perf_counter() - start)
                        first = False
                elif line.startswith("data:") and event == "metrics":
                    series = json.loads(line.split(":", 1)[1])["series"]
                    steps.extend(series.get("train_loss", {}).get("steps", []))
                elif line.startswith("data:") and event == "end":
                    ends.append(time.time())
                    break
        if steps == list(range(1, len(steps) + 1)) and steps:
            complete += 1
        else:
            problems.append(f"steps {steps[:3]}…{steps[-3:]} ({len(steps)})")

    await asyncio.gather(*(one() for _ in range(clients)))
    return {"firsts": firsts, "ends": ends, "complete": complete, "problems": problems}


# ----------------------------------------------------------------------------------------------- recovery
def recovery(stack: Stack, client: httpx.Client, *, remote: bool = False) -> dict[str, float]:
    """``remote``: the killed worker counts as another host's (its row relabelled before the replacement starts)."""
    import sqlite3

    from backend.runs import journal

    run_id = submit(client, {"kind": "train", "spec": LONG_TRAIN})
    wait(lambda: last_step(client, run_id) >= 100, 120, "step 100", interval=0.005)
    victim = client.get(f"/runs/{run_id}").json()
    pid = int(victim["worker"].split(":")[1])
    reached = last_step(client, run_id)
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    if remote:
        with sqlite3.connect(stack.data_dir / "anode.db", timeout=30) as store:
            store.execute("UPDATE workers SET hostname = 'another-host' WHERE id = ?", (victim["worker"],))
    stack.spawn("worker", "--device", "cpu")  # the supervisor's replacement, started at once
    requeued = wait(lambda: ((r := client.get(f"/runs/{run_id}").json())["status"] == "queued" or r["attempt"] > 1)
                    and time.monotonic(), 300, "the run to be re-queued", interval=0.01)  # or already taken again
    running = wait(lambda: client.get(f"/runs/{run_id}").json()["attempt"] == 2 and time.monotonic(), 300,
                   "the run to run again", interval=0.01)
    caught_up = wait(lambda: last_step(client, run_id) > reached and time.monotonic(), 300, "the run to pass "
                     "the step it had reached", interval=0.01)
    run = wait(lambda: (r := client.get(f"/runs/{run_id}").json())["status"] in ENDED and r, 300, "the run to end")
    missing, duplicated = steps_stored_once(client, run)
    reported = Counter(step for step, values in journal.read(stack.data_dir / "runs" / str(run_id))
                       if "train_loss" in values)
    return {"detect": requeued - killed, "running": running - killed, "caught_up": caught_up - killed,
            "status": run["status"] == "succeeded", "missing": missing, "duplicated": duplicated,
            "recomputed": sum(n - 1 for n in reported.values()), "steps": run["summary"]["steps"]}


def default_recoveries(tmp: Path) -> list[str]:
    """Recovery at the default settings: the replacement on the dead worker's host, then as if on another."""
    from backend.settings import Settings

    defaults = Settings()
    lines = []
    for remote in (False, True):
        folder = tmp / ("default-remote" if remote else "default-local")
        folder.mkdir()
        stack = Stack(folder, {})
        with httpx.Client(base_url=stack.url, timeout=30) as client:
            try:
                stack.start(client, workers=2)  # the killed one and an idle one, as in a lab with several
                rec = recovery(stack, client, remote=remote)
            finally:
                stack.stop()
        where = "of another host (lease)" if remote else "of this host (process gone)"
        lines.append(
            f"recovery at default settings (heartbeat {defaults.heartbeat_seconds:g} s, lease "
            f"{defaults.heartbeat_timeout_seconds:g} s, reaper every {defaults.reaper_seconds:g} s), a worker {where} "
            f"killed next to an idle one: "
            f"re-queued {rec['detect']:.1f} s, running again {rec['running']:.1f} s, past its last step "
            f"{rec['caught_up']:.1f} s after kill -9; {'succeeded' if rec['status'] else 'DID NOT SUCCEED'}, "
            f"{rec['missing']:.0f} missing, {rec['duplicated']:.0f} duplicated")
    return lines


def cancel_latency(stack: Stack, client: httpx.Client, repeats: int) -> dict[str, list[float]]:
    """The worker's journal, read once the flag is committed, says which steps had ended when it was set."""
    from backend.runs import journal

    out: dict[str, list[float]] = {"seconds": [], "extra_steps": []}
    for _ in range(repeats):
        run_id = submit(client, {"kind": "train", "spec": TRAIN})
        wait(lambda run_id=run_id: last_step(client, run_id) >= 10, 120, "step 10")
        start = time.monotonic()
        client.post(f"/runs/{run_id}/cancel", headers={"X-Requested-With": "anode-lab"}).raise_for_status()
        at_flag = max(step for step, _ in journal.read(stack.data_dir / "runs" / str(run_id)))
        run = wait(lambda run_id=run_id: (r := client.get(f"/runs/{run_id}").json())["status"] in ENDED and r, 60,
                   "cancelled",
                   interval=0.005)
        out["seconds"].append(time.monotonic() - start)
        assert run["status"] == "cancelled", run
        out["extra_steps"].append(run["summary"]["steps"] - at_flag)
    return out


OVER_BUDGET = [{"kind": "compare", "spec": {"field": "mlp", "hidden": 512, "batch": 1024, "blocks": 8,
                                            "solvers": ["rk4"], "steps": [256], "dtypes": ["float64"]}},
               {"kind": "train", "spec": {"dataset": "moons", "n_samples": 100000, "epochs": 1000, "batch_size": 1}}]


def refusal_latency(client: httpx.Client, repeats: int) -> list[float]:
    """Seconds from sending an over-budget spec to its 422 (the estimate is arithmetic over the spec)."""
    out = []
    for _ in range(repeats):
        for body in OVER_BUDGET:
            start = time.perf_counter()
            response = client.post("/runs", json=body)
            out.append(time.perf_counter() - start)
            assert response.status_code == 422, response.text
    return out


def fill_metrics(data_dir: Path, rows: int) -> int:
    """A queued run with two series of ``rows // 2`` points, inserted by SQLite itself (a few seconds)."""
    import sqlite3

    from backend.db import Database, migrate
    from backend.runs import repository as runs

    url = f"sqlite:///{data_dir / 'anode.db'}"
    migrate(url, data_dir)
    db = Database(url)
    with db.session(write=True) as session:
        run_id = runs.add(session, kind="train", name="long", spec={}, device="cpu", tags=[]).id
    db.dispose()
    with sqlite3.connect(data_dir / "anode.db") as conn:
        for name in ("step_time", "train_loss"):
            conn.execute("WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < ?) "
                         "INSERT INTO metrics (run_id, series, step, value) SELECT ?, ?, i, 1.0 / i FROM c",
                         (rows // 2, run_id, name))
    return run_id


def memory(pid: int) -> dict[str, int]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return {name: int(fields[name].split()[0]) * 1024 for name in ("VmRSS", "VmHWM")}


async def long_reads(url: str, run_id: int, seconds: float, readers: int, followers: int) -> dict[str, Any]:
    """``readers`` clients read the whole run in turn (JSON, CSV, decimated); ``followers`` follow its events
    reading one chunk a second."""
    done: dict[str, list[float]] = {"json": [], "csv": [], "decimated": []}
    errors: list[str] = []
    first_events: list[float] = []
    stop = time.monotonic() + seconds
    reads = [("json", {}), ("csv", {"format": "csv"}), ("decimated", {"points": 1000})]

    async def reader(http: httpx.AsyncClient, offset: int) -> None:
        i = offset
        while time.monotonic() < stop:
            kind, params = reads[i % len(reads)]
            started = time.monotonic()
            try:
                async with http.stream("GET", f"/runs/{run_id}/metrics", params=params) as response:
                    async for _ in response.aiter_bytes():
                        pass
                    if response.status_code != 200:
                        errors.append(f"{kind} {response.status_code}")
                done[kind].append(time.monotonic() - started)
            except httpx.HTTPError as exc:
                errors.append(f"{kind} {type(exc).__name__}")
            i += 1

    async def follower(http: httpx.AsyncClient) -> None:
        started = time.monotonic()
        try:
            async with asyncio.timeout(stop - started), http.stream("GET", f"/runs/{run_id}/events") as response:
                async for _ in response.aiter_bytes(4096):
                    if len(first_events) < followers and started:
                        first_events.append(time.monotonic() - started)
                        started = 0.0
                    await asyncio.sleep(1.0)
        except TimeoutError:
            pass  # followed until the end of the test
        except httpx.HTTPError as exc:
            errors.append(f"events {type(exc).__name__}")

    limits = httpx.Limits(max_connections=readers + followers + 5)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        await asyncio.gather(*(reader(http, i) for i in range(readers)), *(follower(http) for _ in range(followers)))
    return {"done": done, "errors": errors, "first_events": first_events}


def read_memory(tmp: Path, rows: int, seconds: float, readers: int = 3, followers: int = 50) -> str:
    data_dir = tmp / "long"
    data_dir.mkdir()
    run_id = fill_metrics(data_dir, rows)
    stack = Stack(data_dir, {"ANODE_MAX_STREAMS": str(readers + followers + 8),
                             "ANODE_MAX_STREAMS_PER_CLIENT": str(readers + followers + 8)})
    with httpx.Client(base_url=stack.url, timeout=30) as client:
        try:
            api = stack.spawn("api")
            wait(lambda: client.get("/health").status_code == 200, 120, "the API")
            client.get(f"/runs/{run_id}/metrics", params={"after_step": rows // 2 - 5})
            idle = memory(api.pid)["VmRSS"]
            got = asyncio.run(long_reads(stack.url, run_id, seconds, readers, followers))
            peak = memory(api.pid)["VmHWM"]
        finally:
            stack.stop()
    times = ", ".join(f"{kind} {len(v)} reads p50 {percentile(v, 0.5):.1f} s" for kind, v in got["done"].items())
    return (f"long run ({rows:,} metric rows), {readers} whole-history readers and {followers} slow event followers "
            f"for {seconds:.0f} s: API peak {(peak - idle) / 2**20:.0f} MiB over idle ({idle / 2**20:.0f} MiB at "
            f"rest; target < 200 MB); {times}; first event p50 {percentile(got['first_events'], 0.5) * 1e3:.0f} ms; "
            f"{len(got['errors'])} errors" + (f" ({Counter(got['errors']).most_common(3)})" if got["errors"] else ""))


# ------------------------------------------------------------------------------------------------ slow clients
def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def health_once(port: int, timeout: float = 5.0) -> tuple[float, float]:
    """``GET /health`` on a new connection, with blocking sockets: (seconds to connect, seconds to the whole answer)."""
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        connected = time.monotonic() - start
        sock.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    if not answer.startswith(b"HTTP/1.1 200 "):
        raise RuntimeError(answer[:60].decode(errors="replace"))
    return connected, time.monotonic() - start


async def _slow_attack(port: int, connections: int, seconds: float, per_address: int) -> dict[str, Any]:
    stop = time.monotonic() + seconds
    held: list[float] = []
    answers: Counter[str] = Counter()
    opened = [0]

    async def attacker(i: int) -> None:
        address = 2 + i // per_address
        source = f"127.0.{address // 250}.{2 + address % 250}"
        await asyncio.sleep(i * seconds / 12 / connections)  # connect over the first twelfth of the attack
        while time.monotonic() < stop:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
            except OSError as exc:
                answers[f"connect {type(exc).__name__}"] += 1
                await asyncio.sleep(0.5)
                continue
            opened[0] += 1
            start = time.monotonic()
            writer.write(b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            try:
                while time.monotonic() < stop:
                    try:
                        async with asyncio.timeout(min(5.0, max(0.01, stop - time.monotonic()))):
                            data = await reader.read(4096)
                    except TimeoutError:
                        writer.write(b"a")  # one more header byte
                        continue
                    if not data:
                        held.append(time.monotonic() - start)
                        break
                    answers[data.split(b"\r\n", 1)[0].decode(errors="replace")] += 1
            except OSError:
                held.append(time.monotonic() - start)
            finally:
                writer.close()

    await asyncio.gather(*(attacker(i) for i in range(connections)))
    return {"held": held, "answers": answers, "opened": opened[0]}


def slow_attack(port: int, connections: int, seconds: float, per_address: int, out: Any) -> None:
    """The attack, in its own process: ``connections`` clients, ``per_address`` from each loopback address, each
    sending a header byte every 5 s and reconnecting when the server closes it, until ``seconds`` have passed."""
    out.put(asyncio.run(_slow_attack(port, connections, seconds, per_address)))


def slow_clients(port: int, pid: int, connections: int, seconds: float, per_address: int) -> dict[str, Any]:
    """The attack in a child process; here, ``/health`` every 0.5 s on a new connection (5 s at most) and the
    server's open descriptors at each probe (the probe's own connection excepted)."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    attack = context.Process(target=slow_attack, args=(port, connections, seconds, per_address, out))
    attack.start()
    stop = time.monotonic() + seconds
    health: list[tuple[float, float]] = []
    errors: list[str] = []
    fds: list[int] = []
    while time.monotonic() < stop:
        fds.append(open_fds(pid))
        try:
            health.append(health_once(port))
        except (OSError, RuntimeError) as exc:
            errors.append(type(exc).__name__)
        time.sleep(0.5)
    got: dict[str, Any] = out.get(timeout=120)
    attack.join(30)
    return {**got, "health": health, "health_errors": errors, "fds": fds, "ended": stop}


async def per_peer_cap(port: int, connections: int) -> Counter[str]:
    """``connections`` connections at once from one address, each sending nothing: what each one gets in 1 s."""
    got: Counter[str] = Counter()

    async def one() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.250", 0))
        try:
            async with asyncio.timeout(1.0):
                got[(await reader.read(4096)).split(b"\r\n", 1)[0].decode() or "closed"] += 1
        except TimeoutError:
            got["held open"] += 1
        finally:
            writer.close()

    await asyncio.gather(*(one() for _ in range(connections)))
    return got


def slow_client_figure(tmp: Path, connections: int = 5000, seconds: float = 60.0) -> str:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 3 * connections + 1024  # this process's sockets, the server's (inherited limit), and some room
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    data_dir = tmp / "slow"
    data_dir.mkdir()
    stack = Stack(data_dir, {})
    with httpx.Client(base_url=stack.url, timeout=30) as client:
        try:
            api = stack.spawn("api")
            wait(lambda: client.get("/health").status_code == 200, 120, "the API")
            client.close()
            time.sleep(1.0)
            idle = open_fds(api.pid)
            got = slow_clients(stack.port, api.pid, connections, seconds, per_address=50)
            back = wait(lambda: open_fds(api.pid) <= idle and time.monotonic(), 60, "descriptors back to idle",
                        interval=0.1) - got["ended"]
            capped = asyncio.run(per_peer_cap(stack.port, 1000))
        finally:
            stack.stop()
    connect = [c for c, _ in got["health"]]
    health = [h for _, h in got["health"]]
    return (f"slow clients: {connections:,} connections ({connections // 50} loopback addresses, a header byte "
            f"every 5 s, reconnecting when closed) for {seconds:.0f} s, ANODE_REQUEST_TIMEOUT_SECONDS=10: "
            f"{got['opened']:,} connections opened, held p50 {percentile(got['held'], 0.5):.1f} s, "
            f"max {max(got['held'], default=float('nan')):.1f} s; answers {dict(got['answers'].most_common(3))}; "
            f"/health {len(health)} probes, p50 {percentile(health, 0.5) * 1e3:.0f} ms, "
            f"p99 {percentile(health, 0.99) * 1e3:.0f} ms, max {max(health, default=float('nan')) * 1e3:.0f} ms "
            f"(target < 1000 ms; connect max {max(connect, default=float('nan')) * 1e3:.0f} ms), "
            f"{len(got['health_errors'])} failed {Counter(got['health_errors']).most_common(2)}; "
            f"server descriptors idle {idle}, max {max(got['fds'])} during, back to {idle} {back:.1f} s after the "
            f"attack ended\n"
            f"  per-peer cap: 1,000 silent connections from one address: {dict(capped.most_common())} in 1 s "
            f"(ANODE_MAX_CONNECTIONS_PER_PEER=128)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="duration of the load test")
    parser.add_argument("--sse-clients", type=int, default=50)
    parser.add_argument("--quick", action="store_true", help="skip the recovery with default leases")
    parser.add_argument("--reads-only", action="store_true", help="only the reads of a long run (6.)")
    parser.add_argument("--rows", type=int, default=1_000_000, help="metric rows of the long run")
    parser.add_argument("--slow-clients-only", action="store_true", help="only the slow clients (7.)")
    parser.add_argument("--recovery-only", action="store_true", help="only the recoveries at default settings (3.)")
    args = parser.parse_args()
    lines: list[str] = []
    if args.slow_clients_only:
        with tempfile.TemporaryDirectory() as tmp:
            print(slow_client_figure(Path(tmp)))
        return 0
    if args.reads_only:
        with tempfile.TemporaryDirectory() as tmp:
            print(read_memory(Path(tmp), args.rows, max(args.seconds, 30.0)))
        return 0
    if args.recovery_only:
        with tempfile.TemporaryDirectory() as tmp:
            print("\n".join(default_recoveries(Path(tmp))))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        lines.append(read_memory(Path(tmp), args.rows, max(args.seconds, 30.0)))
        lines.append(slow_client_figure(Path(tmp)))
        env = {**FAST_LEASES, "ANODE_CREATE_BURST": "1000", "ANODE_CANCEL_POLL_SECONDS": "0"}
        (Path(tmp) / "fast").mkdir()
        stack = Stack(Path(tmp) / "fast", env)
        with httpx.Client(base_url=stack.url, timeout=30) as client:
            try:
                stack.start(client)
                live = submit(client, {"kind": "train", "spec": {**TRAIN, "epochs": 200}})  # runs throughout
                wait(lambda: last_step(client, live) >= 5, 120, "the load run to start")
                got = asyncio.run(load(stack.url, args.seconds, live))
                errors = got.pop("errors")
                total = sum(len(v) for v in got.values())
                client.post(f"/runs/{live}/cancel", headers={"X-Requested-With": "anode-lab"})
                wait(lambda: client.get(f"/runs/{live}").json()["status"] in ENDED, 60, "the load run to stop")
                lines.append(f"load {args.seconds:.0f} s, 18 clients (2 create, 4 list, 8 poll run+metrics, 4 stream) "
                             f"and 1 worker: {total} requests, {len(errors)} errors"
                             + (f" ({Counter(errors).most_common(3)})" if errors else ""))
                for kind, samples in got.items():
                    lines.append(f"  {kind:8s} n={len(samples):5d}  p50 {percentile(samples, 0.5) * 1e3:7.1f} ms"
                                 f"  p95 {percentile(samples, 0.95) * 1e3:7.1f} ms"
                                 f"  p99 {percentile(samples, 0.99) * 1e3:7.1f} ms")
                wait(lambda: client.get("/runs", params={"status": "queued"}).json()["count"] == 0, 300,
                     "the load's runs to drain")

                fan_run = submit(client, {"kind": "train", "spec": {**TRAIN, "epochs": 2}})
                fan = asyncio.run(sse_fanout(stack.url, fan_run, args.sse_clients))
                run = client.get(f"/runs/{fan_run}").json()
                finished = run["finished_at"].replace("Z", "+00:00")
                from datetime import datetime

                end_at = datetime.fromisoformat(finished).timestamp()
                lags = [end - end_at for end in fan["ends"]]
                lines.append(f"SSE {args.sse_clients} clients on one run ({run['summary']['steps']} steps): "
                             f"{fan['complete']}/{args.sse_clients} got every step once and the end event; "
                             f"first event p50 {percentile(fan['firsts'], 0.5) * 1e3:.0f} ms, "
                             f"p99 {percentile(fan['firsts'], 0.99) * 1e3:.0f} ms; end seen "
                             f"p50 {percentile(lags, 0.5) * 1e3:.0f} ms, max {max(lags) * 1e3:.0f} ms after the run "
                             f"ended (ANODE_SSE_POLL_SECONDS=0.5)"
                             + (f"; problems {fan['problems'][:3]}" if fan["problems"] else ""))

                rec = recovery(stack, client)
                lines.append(
                    f"recovery, heartbeat timeout 3 s, reaper every 0.5 s: re-queued {rec['detect']:.1f} s, "
                    f"running again {rec['running']:.1f} s, past its last step {rec['caught_up']:.1f} s after "
                    f"kill -9; {'succeeded' if rec['status'] else 'DID NOT SUCCEED'}, {rec['steps']} steps, "
                    f"{rec['missing']:.0f} missing, {rec['duplicated']:.0f} duplicated in the store, "
                    f"{rec['recomputed']:.0f} computed twice (since the checkpoint)")

                cancel = cancel_latency(stack, client, 5)
                lines.append(f"cancel: {statistics.median(cancel['seconds']) * 1e3:.0f} ms median, "
                             f"{max(cancel['seconds']) * 1e3:.0f} ms max to `cancelled`; steps after the flag: "
                             f"max {max(cancel['extra_steps']):.0f} (5 runs, ANODE_CANCEL_POLL_SECONDS=0)")

                refused = refusal_latency(client, 25)
                lines.append(f"over-budget spec refused (422 with estimate, limit, fields): "
                             f"{statistics.median(refused) * 1e3:.1f} ms median, {max(refused) * 1e3:.1f} ms max "
                             f"({len(refused)} requests: a 34 GB sweep, a 75 M-step training run)")
            finally:
                stack.stop()

        if not args.quick:
            lines.extend(default_recoveries(Path(tmp)))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
