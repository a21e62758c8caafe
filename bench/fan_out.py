"""Fan-out (issue 23.1): the same 18-cell compare sweep (6 parts of 3 cells) on the embedded SQLite store with 1,
2 and 4 ``anode-lab worker`` processes, one torch thread each; time from ``POST /runs`` to the run's end as the
store records it (``finished_at - created_at``). Configurations are interleaved per rep (a fresh API and workers
each time, warmed up with a small sweep first); the medians are reported with their ratio to one worker (target:
two workers at most 0.6x one worker's time on a 2-core machine).

    python bench/fan_out.py [--reps N]       (also run by bench/service.py --sweep)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from loopback import service, wait  # noqa: E402

METHODS = [{"method": "direct"}, {"method": "anode"}, {"method": "adjoint"}]
SWEEP: dict[str, Any] = {"solvers": ["euler", "midpoint"], "steps": [8, 16, 32], "methods": METHODS,
                         "blocks": 3, "batch": 64, "timing_repeats": 3, "device": "cpu", "threads": 1}
"""18 cells: 2 solvers x 3 N_t (6 parts) x 3 methods."""
WARM_UP: dict[str, Any] = {**SWEEP, "steps": [1, 2, 3, 4], "batch": 4, "timing_repeats": 1}
"""8 small parts, so that every worker's forkserver has likely imported torch before the timed sweep."""
WORKERS = (1, 2, 4)


def _ended(client: httpx.Client, run_id: int) -> dict[str, Any] | None:
    run: dict[str, Any] = client.get(f"/runs/{run_id}").json()
    return run if run["status"] in ("succeeded", "failed", "cancelled") else None


def _run(client: httpx.Client, spec: dict[str, Any]) -> float:
    run_id = client.post("/runs", json={"kind": "compare", "spec": spec}).json()["id"]
    run = wait(lambda: _ended(client, run_id), 600, f"sweep run {run_id}", interval=0.05)
    assert run["status"] == "succeeded", run
    return (datetime.fromisoformat(run["finished_at"]) - datetime.fromisoformat(run["created_at"])).total_seconds()


def sweep_seconds(workers: int) -> float:
    """One timed sweep on a fresh API with ``workers`` workers (after a warm-up sweep)."""
    with tempfile.TemporaryDirectory() as tmp, service(Path(tmp), workers=workers) as base, \
            httpx.Client(base_url=base, timeout=30) as client:
        wait(lambda: len(client.get("/health").json()["workers"]) >= workers, 120, f"{workers} workers")
        _run(client, WARM_UP)
        return _run(client, SWEEP)


def report(reps: int) -> list[str]:
    times: dict[int, list[float]] = {n: [] for n in WORKERS}
    for _ in range(reps):
        for n in WORKERS:
            times[n].append(sweep_seconds(n))
    one = statistics.median(times[1])
    return [f"18-cell sweep     {n} worker{'s' if n > 1 else ' '}  median {statistics.median(times[n]):6.2f} s  "
            f"({statistics.median(times[n]) / one:.2f}x one worker's median, median of the reps' ratios "
            f"{statistics.median(t / o for t, o in zip(times[n], times[1], strict=True)):.2f}x; runs "
            f"{', '.join(f'{t:.2f}' for t in times[n])} s; target for 2 workers <= 0.60x)" for n in WORKERS]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs; sweep {SWEEP}")
    for line in report(args.reps):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
