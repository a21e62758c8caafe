"""What watching your own training costs (``anode_lab.track``, issue 22), in one run on loopback:

1. ``run.log`` against a training step of about 1 ms: the same loop of steps with and without a ``log`` per step,
   against a real ``anode-lab api`` (the background thread sends the batches meanwhile), interleaved block by
   block; the overhead is the median of the per-block ratios (target: < 2 % of the step);
2. a probe against ``anode_core.check`` on the same model and methods, interleaved (target: ≈ 1.00×: a probe is a
   check plus a dict of floats).

    python bench/track.py [--quick]

Numbers from a shared machine are noisy: compare the ratios, and rerun before trusting an absolute.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from loopback import free_port, wait  # noqa: E402
from timing import time_interleaved  # noqa: E402

import anode_core as ac  # noqa: E402
import anode_lab  # noqa: E402


def step_of_about(seconds: float) -> tuple[nn.Module, torch.Tensor]:
    """A small MLP whose forward + backward + SGD step takes about ``seconds`` on this machine (one thread)."""
    width = 64
    while True:
        model, x = nn.Sequential(nn.Linear(width, width), nn.Tanh(), nn.Linear(width, 1)), torch.randn(256, width)
        start = time.perf_counter()
        for _ in range(50):
            train_step(model, x)
        if (time.perf_counter() - start) / 50 >= seconds or width > 2048:
            return model, x
        width = int(width * 1.25)


def train_step(model: nn.Module, x: torch.Tensor) -> None:
    model.zero_grad()
    model(x).square().mean().backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= 1e-4 * p.grad  # type: ignore[operator]


class Field(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 8)

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.lin(y))


class Probed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.field = Field()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ac.odeint(self.field, x, torch.tensor([0.0, 1.0]), method="rk4", options={"step_size": 0.125})[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer reps")
    args = parser.parse_args()
    torch.set_num_threads(1)
    reps, block = (5, 100) if args.quick else (15, 300)
    with tempfile.TemporaryDirectory() as data:
        port = free_port()
        env = {**os.environ, "ANODE_DATA_DIR": data, "ANODE_PORT": str(port)}
        api = subprocess.Popen([sys.executable, "-m", "anode_lab.cli", "api", "--no-access-log"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        url = f"http://127.0.0.1:{port}/api/v1"
        try:
            wait(lambda: httpx.get(f"{url}/health", timeout=1).status_code == 200, 60, "the API")
            model, x = step_of_about(1e-3)
            with anode_lab.track(name="bench", url=url) as run:
                counter = iter(range(10**9))

                def plain() -> None:
                    for _ in range(block):
                        train_step(model, x)

                def logged() -> None:
                    for _ in range(block):
                        train_step(model, x)
                        run.log(next(counter), loss=0.5, accuracy=0.25)

                def calls() -> None:
                    for _ in range(block):
                        run.log(next(counter), loss=0.5, accuracy=0.25)

                timed = time_interleaved({"plain": plain, "logged": logged, "log alone": calls}, reps=reps)
            step = timed["plain"].median() / block
            per_call = timed["log alone"].median() / block
            overhead = timed["logged"].paired_ratio_to(timed["plain"]) - 1
            print(f"1. run.log: {per_call * 1e6:.1f} µs a call = {per_call / 1e-3 * 100:.2f} % of a 1 ms step "
                  f"(target < 2 %); steps of {step * 1e3:.2f} ms with a log each vs without: {overhead * 100:+.2f} % "
                  f"(medians of {reps} interleaved blocks of {block} steps; the second is within this machine's "
                  "noise)", flush=True)

            torch.manual_seed(0)
            probed, batch = Probed(), torch.randn(64, 8)
            loss = lambda m, b: m(b).square().mean()  # noqa: E731
            methods = ["direct", "anode", "adjoint"]
            with anode_lab.track(name="bench-probe", url=url, probe=(probed, batch, loss), methods=methods) as run:
                timed = time_interleaved({"check": lambda: ac.check(probed, batch, loss, methods=methods),
                                          "probe": run.probe}, reps=reps)
            ratios = timed["probe"].paired_ratios(timed["check"])
            print(f"2. probe vs anode_core.check: {statistics.median(ratios):.3f}× (check "
                  f"{timed['check'].median() * 1e3:.1f} ms; median of {reps} interleaved reps; target ≈ 1.00×)",
                  flush=True)
        finally:
            api.send_signal(signal.SIGTERM)
            api.wait(30)


if __name__ == "__main__":
    main()
