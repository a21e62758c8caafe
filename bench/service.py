"""Service benchmarks, in one run on loopback with a temporary data folder:

1. enqueue-to-running latency: ``POST /runs`` of a tiny demo run, then ``started_at - created_at`` as the store
   records it, with one idle ``anode-lab worker`` on the embedded SQLite queue (target: median < 1 s);
2. API read latency with 20 concurrent clients (``GET /runs/{id}``, ``GET /runs``, incremental
   ``GET /runs/{id}/metrics``) against ``anode-lab api`` (target: p99 < 100 ms);
3. the training-step overhead of metric logging (issue 23.5): a tiny train spec (:data:`TINY_TRAIN`) in process,
   with no-op callbacks and with a run child's own callbacks (:mod:`backend.workers.uplink`: a queue append, a
   sender thread) whose pipe leads to the worker's side (the real supervisor, journal and batched upserts) in a
   process of its own, interleaved; the time inside the callbacks per step, and the A/B median interval between
   step reports (target: < 2 % of a 0.5 ms step).
4. the API under load on PostgreSQL (issue 23.4): ``anode-lab api`` and one ``anode-lab worker`` on a PostgreSQL
   store and a Redis queue (Debian's servers, as the tests start them), the API serving from four processes
   (``ANODE_API_PROCESSES``, as ``docker-compose.yml`` runs it; ``--api-processes``), the worker training a run
   and streaming its metrics; 50 keep-alive clients, each sending a request every 0.5 s (open loop, jittered):
   40 readers (the live run, a page of runs, its new metrics, /health; each starts at a random place in that
   round) and 10 writers (create a run, cancel it, delete it); latency percentiles per kind after a 5 s warm-up
   (target: p99 < 50 ms); the bench fails if the live run ends before the load does. The warm-up, in which the
   clients connect and each reader's first metrics read is the run's whole history (a viewer joining), is
   reported on its own line.

5. fan-out (issue 23.1, ``--sweep``: only this): the same 18-cell compare sweep with 1, 2 and 4 workers, one
   torch thread each (:mod:`fan_out`; target: two workers at most 0.6x one worker's time).

    python bench/service.py [--quick] [--postgres-only] [--logging-only] [--sweep] [--api-processes N]

Numbers from a shared machine are noisy: compare the ratios, and rerun before trusting an absolute.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from loopback import service, wait  # noqa: E402

API = "/api/v1"
TINY_DEMO = {"kind": "demo", "spec": {"name": "non-invertible"}}
TRAIN = {"dataset": "moons", "n_samples": 4096, "batch_size": 32, "epochs": 8, "device": "cpu"}
TINY_TRAIN = {"dataset": "moons", "n_samples": 4096, "batch_size": 32, "epochs": 6, "device": "cpu", "width": 2,
              "hidden": 4, "blocks": 1, "probe_every": 0, "ode": {"steps": 1, "gradient": {"method": "direct"}}}
"""As small a training step as a spec allows (a fraction of a millisecond on an idle core), where logging's share
is largest: 576 steps."""
STEP_S = 0.5e-3
"""The step logging is held to: under 2 % of it (issue 23.5)."""
ONE_PEER = {"ANODE_MAX_STREAMS": "200", "ANODE_MAX_STREAMS_PER_CLIENT": "200"}
"""Every client here comes from 127.0.0.1, so the per-client caps on metrics reads and streams would see one client
(a metrics read holds a stream slot while it is served) and answer the rest 429."""
LIVE_TRAIN = {**TRAIN, "epochs": 1000, "lr": 0.02}
"""The run a worker streams while the API is under load: minutes long on a loaded core, and stable (at the spec's
default lr of 0.1 this network diverges after about 2,000 steps, a few seconds, and the load would then run
against a worker starting and cancelling the writers' demo runs instead)."""






def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def enqueue_latency(client: httpx.Client, runs: int) -> list[float]:
    latencies = []
    for _ in range(runs):
        run_id = client.post("/runs", json=TINY_DEMO).json()["id"]
        def ended(run_id: int = run_id) -> Any:
            return (r := client.get(f"/runs/{run_id}").json())["status"] not in ("queued", "running") and r

        run = wait(ended, 60, f"run {run_id}")
        started = run["started_at"].replace("Z", "+00:00")
        created = run["created_at"].replace("Z", "+00:00")
        from datetime import datetime

        latencies.append((datetime.fromisoformat(started) - datetime.fromisoformat(created)).total_seconds())
        time.sleep(0.3)  # the worker idles between submissions, as after a user's click
    return latencies


async def _reader(port: int, paths: list[str], count: int, out: list[float]) -> None:
    """One keep-alive HTTP/1.1 connection issuing GETs back to back. A raw asyncio client rather than httpx:
    httpx spends about a millisecond of CPU per request, which on a small machine is taken from the server."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for i in range(count):
            start = time.perf_counter()
            writer.write(f"GET {paths[i % len(paths)]} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            length = next(int(line.split(b":")[1]) for line in lines if line.lower().startswith(b"content-length:"))
            await reader.readexactly(length)
            out.append(time.perf_counter() - start)
            if lines[0].split(b" ")[1] != b"200":
                raise SystemExit(f"GET {paths[i % len(paths)]}: {lines[0].decode()}")
    finally:
        writer.close()


def read_latency(port: int, run_id: int, clients: int, per_client: int) -> list[float]:
    paths = [f"{API}/runs/{run_id}", f"{API}/runs?limit=20", f"{API}/runs/{run_id}/metrics?after_step=90",
             f"{API}/health"]
    out: list[float] = []

    async def main() -> None:
        await asyncio.gather(*(_reader(port, paths, 8, []) for _ in range(clients)))  # warm-up, untimed
        await asyncio.gather(*(_reader(port, paths[i % 4:] + paths[:i % 4], per_client, out) for i in range(clients)))

    asyncio.run(main())
    return out


def _worker_side(data_dir: str, conn: Any, result: Any) -> None:
    """The worker's end of a run's pipe, in a process of its own as in a worker: a claimed run, its lease renewed
    every ``heartbeat_seconds``, the real :class:`Supervisor` storing each batch (journal, batched upserts,
    cancel-flag reads); sends back how it ended and how many metric rows it stored once the training side is done."""
    import threading

    from backend.runs import lifecycle, repository as runs
    from backend.runs.ingest import MetricWriter
    from backend.runs.lifecycle import Hold
    from backend.settings import Settings
    from backend.workers.process import WorkerProcess
    from backend.workers.supervise import Supervisor

    settings = Settings(data_dir=Path(data_dir))
    worker = WorkerProcess(settings, "cpu")
    with worker.db.session(write=True) as session:
        run_id = runs.add(session, kind="train", name="", spec={}, device="cpu", tags=[]).id
    with worker.db.session(write=True) as session:
        lease = lifecycle.claim(session, run_id, worker.id, "cpu")
    assert lease is not None
    hold = Hold(worker.db, lease, window=settings.heartbeat_timeout_seconds / 2)
    threading.Thread(target=worker._every, args=(settings.heartbeat_seconds, hold.heartbeat), daemon=True).start()
    writer = MetricWriter(hold, settings.run_dir(run_id), settings.metrics_flush_seconds).start()

    class Peer:  # the training side, which outlives this process
        exitcode = None

        @staticmethod
        def is_alive() -> bool:
            return True

    result.send("ready")
    cpu = time.process_time()
    ended = Supervisor(worker, hold, writer).serve(conn, Peer())
    writer.close()
    worker.stop.set()
    result.send((ended.kind, writer.written, time.process_time() - cpu))
    hold.close()
    worker.db.dispose()


def logging_overhead(data_dir: Path, reps: int) -> dict[str, float]:
    """Per-step cost of a worker's metric logging on the training step's thread, two ways, on :data:`TINY_TRAIN`
    trained in this process: with no-op callbacks (bare), and with a run child's own callbacks (its
    :class:`~backend.workers.uplink.Uplink`) whose pipe leads to the worker's side (:func:`_worker_side`) in
    another process, as in a worker (logged). Direct: the time spent inside the callbacks, per step; A/B: the
    median interval between step reports of interleaved runs (includes the uplink's sender thread, and any
    slowdown from the worker's process next door; noisy on a shared machine)."""
    import multiprocessing

    import torch
    from timing import time_interleaved

    from anode_lab.experiments import RunContext, run_experiment
    from anode_lab.specs import parse_spec
    from backend.db import migrate
    from backend.settings import Settings
    from backend.workers.uplink import Uplink

    torch.set_num_threads(1)
    store = data_dir / "overhead"
    migrate(Settings(data_dir=store).db_url, store)
    spec = parse_spec("train", TINY_TRAIN)
    spawn = multiprocessing.get_context("spawn")
    intervals: dict[str, list[float]] = {"bare": [], "logged": []}
    inside: list[float] = []
    typical: list[float] = []
    worker_side: list[float] = []

    def one(name: str) -> None:
        stamps: list[float] = []
        workdir = Path(tempfile.mkdtemp(dir=data_dir))
        if name == "bare":
            def report(step: int, values: Any) -> None:
                if "train_loss" in values:
                    stamps.append(time.perf_counter())
            result = run_experiment("train", spec, RunContext(workdir, on_metrics=report))
            assert result.status == "succeeded", result
            intervals[name].append(statistics.median(b - a for a, b in pairwise(stamps)))
            return
        receiver, sender = spawn.Pipe()
        results, result = spawn.Pipe(duplex=False)
        side = spawn.Process(target=_worker_side, args=(str(store), receiver, result), daemon=True)
        side.start()
        receiver.close()
        assert results.recv() == "ready"  # as a worker is, before it starts a run's child
        uplink = Uplink(sender)
        spent = [0.0]  # in the callbacks since the last step report
        per_step: list[float] = []

        def timed(call: Any) -> Any:
            def wrapper(*args: Any) -> Any:
                start = time.perf_counter()
                answer = call(*args)
                spent[0] += time.perf_counter() - start
                return answer
            return wrapper

        add = timed(uplink.on_metrics)

        def on_metrics(step: int, values: Any) -> None:
            if "train_loss" in values:
                stamps.append(time.perf_counter())
                per_step.append(spent[0])
                spent[0] = 0.0
            add(step, values)

        ctx = RunContext(workdir, on_metrics=on_metrics, on_progress=timed(uplink.on_progress),
                         should_stop=timed(uplink.should_stop), before_checkpoint=timed(uplink.before_checkpoint))
        result = run_experiment("train", spec, ctx)
        assert result.status == "succeeded", result
        uplink.close(("done", result.status, {}, ""))
        ended, stored, worker_cpu = results.recv()
        side.join(30)
        steps = int(result.summary["steps"])
        assert ended == "done" and stored >= 5 * steps, (ended, stored, steps)  # every report reached the store
        typical.append(statistics.median(per_step))
        inside.append((sum(per_step) + spent[0]) / len(stamps))
        worker_side.append(worker_cpu / len(stamps))
        intervals[name].append(statistics.median(b - a for a, b in pairwise(stamps)))

    time_interleaved({"bare": lambda: one("bare"), "logged": lambda: one("logged")}, reps=reps, warmup=1)
    bare, logged, cost = intervals["bare"][1:], intervals["logged"][1:], inside[1:]  # drop the warm-up rep
    return {"bare": statistics.median(bare), "logged": statistics.median(logged),
            "ab": statistics.median(b / a for a, b in zip(bare, logged, strict=True)) - 1,
            "inside": statistics.median(cost), "direct": statistics.median(cost) / statistics.median(bare),
            "typical": statistics.median(typical[1:]), "worker_cpu": statistics.median(worker_side[1:])}


# --------------------------------------------------------------------------------- API under load, PostgreSQL
async def _request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, method: str, path: str,
                   body: bytes = b"") -> tuple[int, bytes]:
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    if method != "GET":
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    writer.write(head.encode() + b"\r\n" + body)
    lines = (await reader.readuntil(b"\r\n\r\n")).split(b"\r\n")
    length = next((int(line.split(b":")[1]) for line in lines if line.lower().startswith(b"content-length:")), 0)
    return int(lines[0].split(b" ")[1]), await reader.readexactly(length)


async def _load_client(port: int, run_id: int, writer_client: bool, warm: float, stop: float, interval: float,
                       out: dict[str, list[float]], errors: list[str]) -> None:
    """One keep-alive connection sending a request every ``interval`` seconds (jittered) until ``stop``. A reader
    starts at a random place in its round (clients are not in step) and its first metrics read is the run's whole
    history (a viewer joining); requests that start before ``warm`` are filed under ``joining``."""
    import json
    import random

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    after = 0
    create = json.dumps({"kind": "demo", "spec": {"name": "non-invertible"}, "name": "load"}).encode()

    async def timed(kind: str, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        began, start = time.monotonic(), time.perf_counter()
        code, answer = await _request(reader, writer, method, path, body)
        out.setdefault("joining" if began < warm else kind, []).append(time.perf_counter() - start)
        if code >= 400:
            errors.append(f"{kind} {code}")
        return code, answer

    cycle = random.randrange(4)
    try:
        await asyncio.sleep(random.uniform(0, interval))
        while time.monotonic() < stop:
            if writer_client:
                code, answer = await timed("create", "POST", f"{API}/runs", create)
                if code < 400:  # the run is cancelled and deleted, so the queue stays empty
                    created = json.loads(answer)["id"]
                    for name, verb, target in (("cancel", "POST", f"{API}/runs/{created}/cancel"),
                                               ("delete", "DELETE", f"{API}/runs/{created}")):
                        await asyncio.sleep(random.uniform(0.5, 1.5) * interval)
                        await timed(name, verb, target)
            else:
                kind, path = [("run", f"{API}/runs/{run_id}"), ("list", f"{API}/runs?limit=20"),
                              ("metrics", f"{API}/runs/{run_id}/metrics?after_step={after}"),
                              ("health", f"{API}/health")][cycle % 4]
                code, answer = await timed(kind, "GET", path)
                if kind == "metrics" and code < 400:
                    after = json.loads(answer)["last_step"] or after
            cycle += 1
            await asyncio.sleep(random.uniform(0.5, 1.5) * interval)
    finally:
        writer.close()


def api_on_postgres(tmp: Path, seconds: float, clients: int = 50, writers: int = 10,
                    interval: float = 0.5, warmup: float = 5.0, processes: int = 4) -> list[str]:
    sys.path.insert(0, str(ROOT / "tests"))
    from servers import PostgresServer, RedisServer, postgres_bin

    bindir = postgres_bin()
    if bindir is None:
        return ["API on PostgreSQL: skipped (PostgreSQL's server is not installed; scripts/test installs it)"]
    postgres, redis = PostgresServer(bindir), RedisServer("redis-server")
    env = {"ANODE_DATABASE_URL": postgres.new_url(), "ANODE_QUEUE_URL": redis.new_url(),
           "ANODE_CREATE_BURST": "100000", "ANODE_CREATE_RATE_PER_MINUTE": "100000",
           "ANODE_METRICS_FLUSH_SECONDS": "0.2", "ANODE_API_PROCESSES": str(processes), **ONE_PEER}
    (tmp / "pg").mkdir()
    out: dict[str, list[float]] = {}
    errors: list[str] = []
    try:
        with service(tmp / "pg", env=env, api_args=["--no-access-log"]) as base, \
                httpx.Client(base_url=base, timeout=30) as client:
            port = httpx.URL(base).port or 80
            wait(lambda: client.get("/health").json()["workers"], 120, "the API and a live worker")
            live = client.post("/runs", json={"kind": "train", "spec": LIVE_TRAIN}).json()["id"]
            wait(lambda: client.get(f"/runs/{live}/metrics", params={"after_step": 0}).json()["last_step"], 120,
                 "the live run's first metrics")
            first = client.get(f"/runs/{live}/metrics", params={"after_step": 0}).json()["last_step"]

            async def load() -> None:
                warm = time.monotonic() + warmup
                await asyncio.gather(*(_load_client(port, live, i < writers, warm, warm + seconds, interval, out,
                                                    errors) for i in range(clients)))

            asyncio.run(load())
            last = client.get(f"/runs/{live}/metrics", params={"after_step": 0}).json()["last_step"]
            if (ended := client.get(f"/runs/{live}").json())["status"] != "running":
                raise SystemExit(f"the live run ended during the load ({ended['status']}: {ended['status_detail']}); "
                                 "these figures would not be those of an API beside a worker streaming metrics")
            client.post(f"/runs/{live}/cancel")
    finally:
        postgres.stop()
        redis.stop()
    joining = out.pop("joining", [])
    every = [sample for samples in out.values() for sample in samples]
    lines = [f"API ({processes} processes) on PostgreSQL + Redis, {clients} clients ({clients - writers} reading, "
             f"{writers} creating, cancelling and deleting runs), a request every {interval:g} s each, "
             f"{seconds:.0f} s after a {warmup:g} s warm-up, one worker streaming metrics ({last - first} steps "
             "stored meanwhile): "
             f"{len(every)} requests, {len(errors)} errors" + (f" {Counter(errors).most_common(3)}" if errors else "")
             + f"; all: p50 {_percentile(every, 0.5) * 1e3:.1f} ms, p99 {_percentile(every, 0.99) * 1e3:.1f} ms "
             f"(target p99 < 50 ms); load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs",
             f"  warm-up (not in 'all'): {len(joining)} requests as the clients connect, each reader's first metrics "
             f"read the whole history: p50 {_percentile(joining, 0.5) * 1e3:.1f} ms, "
             f"p99 {_percentile(joining, 0.99) * 1e3:.1f} ms, max {max(joining) * 1e3:.1f} ms"]
    for kind, samples in out.items():
        lines.append(f"  {kind:8s} n={len(samples):5d}  p50 {_percentile(samples, 0.5) * 1e3:6.1f} ms  "
                     f"p99 {_percentile(samples, 0.99) * 1e3:6.1f} ms  max {max(samples) * 1e3:6.1f} ms")
    return lines


def _logging_line(overhead: dict[str, float], reps: int, load: tuple[float, float, float]) -> str:
    typical, mean, bare = overhead["typical"], overhead["inside"], overhead["bare"]
    return (f"metric logging    {typical / STEP_S * 100:6.2f} % of a {STEP_S * 1e3:g} ms training step (target < 2 %): "
            f"median {typical * 1e6:.1f} µs per step in the step's thread's callbacks, {typical / bare * 100:.2f} % "
            f"of this bench's {bare * 1e3:.3f} ms step (mean {mean * 1e6:.1f} µs: the rare waits, and preemption "
            f"on a loaded machine, included); the worker's side: {overhead['worker_cpu'] * 1e6:.0f} µs of CPU per "
            f"step in its own process; A/B step time {overhead['ab'] * 100:+.1f} % ({overhead['logged'] * 1e3:.3f} "
            f"vs {bare * 1e3:.3f} ms, {reps} interleaved pairs, medians); load average {load[0]:.1f} before, "
            f"{os.getloadavg()[0]:.1f} after, {os.cpu_count()} CPUs")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer samples (a smoke test of the bench)")
    parser.add_argument("--postgres-only", action="store_true", help="only the API under load on PostgreSQL (4.)")
    parser.add_argument("--logging-only", action="store_true", help="only the metric logging overhead (3.)")
    parser.add_argument("--sweep", action="store_true", help="only the fan-out sweep with 1, 2 and 4 workers (5.)")
    parser.add_argument("--api-processes", type=int, default=4, help="ANODE_API_PROCESSES of the API on PostgreSQL "
                        "(4.; default 4, as docker-compose.yml)")
    args = parser.parse_args()
    if args.sweep:
        from fan_out import report

        print("\n".join(report(1 if args.quick else 3)))
        return 0
    if args.postgres_only:
        with tempfile.TemporaryDirectory() as tmp:
            print("\n".join(api_on_postgres(Path(tmp), 10.0 if args.quick else 30.0, processes=args.api_processes)))
        return 0
    runs_n, per_client, reps = (5, 20, 3) if args.quick else (15, 100, 7)
    load = os.getloadavg()
    if args.logging_only:
        with tempfile.TemporaryDirectory() as tmp:
            print(_logging_line(logging_overhead(Path(tmp), reps), reps, load))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        with service(data_dir, env=ONE_PEER) as base, httpx.Client(base_url=base, timeout=30) as client:
            wait(lambda: client.get("/health").json()["workers"], 90, "the API and a live worker")
            latencies = enqueue_latency(client, runs_n)
            run_id = client.post("/runs", json={"kind": "train", "spec": {**TRAIN, "n_samples": 256, "epochs": 6}})
            run_id = run_id.json()["id"]
            wait(lambda: client.get(f"/runs/{run_id}").json()["status"] == "succeeded", 120, "the train run")
            reads = read_latency(httpx.URL(base).port or 80, run_id, clients=20, per_client=per_client)
        overhead = logging_overhead(data_dir, reps)
        postgres = api_on_postgres(data_dir, 10.0 if args.quick else 30.0, processes=args.api_processes)
    print(f"enqueue→running   median {statistics.median(latencies) * 1e3:7.1f} ms   max {max(latencies) * 1e3:7.1f} ms"
          f"   ({len(latencies)} runs, embedded SQLite queue; target median < 1000 ms)")
    p50, p99 = _percentile(reads, 0.5), _percentile(reads, 0.99)
    print(f"API reads         p50 {p50 * 1e3:7.1f} ms   p99 {p99 * 1e3:7.1f} ms"
          f"   ({len(reads)} requests, 20 concurrent keep-alive clients; target p99 < 100 ms)")
    print(_logging_line(overhead, reps, load))
    print("\n".join(postgres))
    return 0


if __name__ == "__main__":
    sys.exit(main())
