"""What one API request costs in CPU, route by route, on PostgreSQL + Redis (issue 23.4's load test, taken apart).

The app runs in this process and is called as ASGI directly (no HTTP client, no socket), with the thread pool
replaced by inline calls, so everything a request costs is on this one thread: ``time.process_time`` per request
is this process's CPU (PostgreSQL's own work is not counted), and ``--profile`` shows where it goes. SQL
statements per request are counted with an engine event.

    PYTHONPATH=$PWD python bench/api_cost.py [--requests 300] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

API = "/api/v1"


async def call(app: Any, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    """One request through the whole ASGI stack, as uvicorn would send it."""
    target, _, query = path.partition("?")
    headers = [(b"host", b"127.0.0.1")]
    if body:
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": target, "raw_path": target.encode(), "query_string": query.encode(), "root_path": "",
             "headers": headers, "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000)}
    sent = False
    status, chunks = 0, []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(chunks)


def inline_threads() -> None:
    """Route functions run on this thread, so that cProfile and process_time see them."""
    import anyio.to_thread

    async def run_sync(func: Callable[..., Any], *args: Any, **_: Any) -> Any:
        return func(*args)

    anyio.to_thread.run_sync = run_sync  # type: ignore[assignment]


async def measure(app: Any, kinds: dict[str, Callable[[], Awaitable[tuple[int, bytes]]]], n: int,
                  statements: list[int]) -> dict[str, tuple[float, float, float]]:
    """Per kind: median CPU ms, median wall ms and SQL statements per request, the kinds interleaved."""
    cpu: dict[str, list[float]] = {k: [] for k in kinds}
    wall: dict[str, list[float]] = {k: [] for k in kinds}
    sql: dict[str, list[int]] = {k: [] for k in kinds}
    for _ in range(n):
        for kind, request in kinds.items():
            before, c0, w0 = statements[0], time.process_time(), time.perf_counter()
            code, answer = await request()
            cpu[kind].append(time.process_time() - c0)
            wall[kind].append(time.perf_counter() - w0)
            sql[kind].append(statements[0] - before)
            if code >= 400:
                raise SystemExit(f"{kind}: {code} {answer[:300]!r}")
    return {k: (statistics.median(cpu[k]) * 1e3, statistics.median(wall[k]) * 1e3, statistics.median(sql[k]))
            for k in kinds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200, help="requests of each kind")
    parser.add_argument("--profile", action="store_true", help="print cProfile's top functions over the mix")
    parser.add_argument("--only", help="one kind of request (run, list, metrics, health, create+cancel+delete)")
    args = parser.parse_args()
    from servers import PostgresServer, RedisServer, postgres_bin

    bindir = postgres_bin()
    if bindir is None:
        print("PostgreSQL's server is not installed (scripts/test installs it)")
        return 1
    postgres, redis = PostgresServer(bindir), RedisServer("redis-server")
    tmp = Path(tempfile.mkdtemp(prefix="anode-api-cost-"))
    os.environ.update({"ANODE_DATA_DIR": str(tmp), "ANODE_DATABASE_URL": postgres.new_url(),
                       "ANODE_QUEUE_URL": redis.new_url(), "ANODE_CREATE_BURST": "100000",
                       "ANODE_CREATE_RATE_PER_MINUTE": "100000"})
    try:
        asyncio.run(run(args.requests, args.profile, args.only))
    finally:
        postgres.stop()
        redis.stop()
    return 0


async def run(n: int, profile: bool, only: str | None) -> None:  # noqa: C901
    from sqlalchemy import event

    from backend.app import create_app
    from backend.runs import repository as runs

    inline_threads()
    app = create_app()
    async with app.router.lifespan_context(app):
        db = app.state.db
        statements = [0]

        @event.listens_for(db.engine, "before_cursor_execute")
        def count(*_: Any) -> None:
            statements[0] += 1

        code, answer = await call(app, "POST", f"{API}/runs", json.dumps(
            {"kind": "train", "spec": {"dataset": "moons", "epochs": 4}}).encode())
        live = json.loads(answer)["id"]
        step = [0]

        def grow(points: int) -> None:  # what a worker streams: 4 series, a step each
            with db.session(write=True) as session:
                runs.upsert_metrics(session, live, [(name, s, 0.5) for s in range(step[0] + 1, step[0] + points + 1)
                                                    for name in ("train_loss", "nfe", "grad_norm", "lr")])
            step[0] += points

        grow(2000)
        create = json.dumps({"kind": "demo", "spec": {"name": "non-invertible"}, "name": "load"}).encode()

        async def lifecycle() -> tuple[int, bytes]:
            code, answer = await call(app, "POST", f"{API}/runs", create)
            created = json.loads(answer)["id"]
            await call(app, "POST", f"{API}/runs/{created}/cancel")
            return await call(app, "DELETE", f"{API}/runs/{created}")

        async def metrics() -> tuple[int, bytes]:
            grow(40)  # new points since the client's last poll: 40 steps, 160 points
            return await call(app, "GET", f"{API}/runs/{live}/metrics?after_step={step[0] - 40}")

        kinds: dict[str, Callable[[], Awaitable[tuple[int, bytes]]]] = {
            "run": lambda: call(app, "GET", f"{API}/runs/{live}"),
            "list": lambda: call(app, "GET", f"{API}/runs?limit=20"),
            "metrics": metrics,
            "health": lambda: call(app, "GET", f"{API}/health"),
            "create+cancel+delete": lifecycle,
        }
        if only:
            kinds = {only: kinds[only]}
        for _ in range(25):  # the list's page fills up
            await lifecycle()
            await call(app, "POST", f"{API}/runs", create)
        await measure(app, kinds, 10, statements)  # warm-up
        if profile:
            profiler = cProfile.Profile(time.process_time)  # CPU, not waits on the store
            profiler.enable()
            await measure(app, kinds, n, statements)
            profiler.disable()
            stats = pstats.Stats(profiler).sort_stats("cumulative")
            stats.print_stats(60)
            stats.sort_stats("tottime").print_stats(40)
        result = await measure(app, kinds, n, statements)
        held = db.engine.pool.checkedout()
    print(f"per request, in process (ASGI called directly, no HTTP), median of {n}; load average "
          f"{os.getloadavg()[0]:.1f}; store connections still checked out after: {held}")
    for kind, (cpu, wall, sql) in result.items():
        print(f"  {kind:22s} CPU {cpu:6.2f} ms   wall {wall:6.2f} ms   SQL statements {sql:g}")


if __name__ == "__main__":
    sys.exit(main())
