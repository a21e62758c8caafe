"""The one-``odeint`` user: peak memory held for backward and time of the default gradient against ``Direct``.

A torchdiffeq model is usually one ``odeint`` call, one block: there ``Anode()`` (no checkpoints) rebuilds the
whole solve in backward and holds as much as ``Direct`` at its peak. ``odeint``'s default, ``Anode(checkpoints=
"auto")``, keeps about ``sqrt(N_t)`` segment starts and the graph of the trailing segments within 3/10 of the
steps, and rebuilds the others one segment at a time. Target: at N_t = 128 at most half of Direct's peak, at most
1.5× its time. One ``odeint`` call on one ``ConvField`` with rk4, N_t ∈ {32, 128, 512}; peak bytes held for
backward measured by :class:`anode_core.MemoryMeter` in an untimed pass, time of forward + backward as the median
of reps interleaved across the methods (``bench/timing.py``). Run through ``python bench/gradients.py --only
odeint-memory``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

import anode_core as ac

if __package__:
    from .measure import MIB
    from .timing import Clock, time_interleaved
else:
    from measure import MIB
    from timing import Clock, time_interleaved

STEPS = (32, 128, 512)
MEMORY_TARGET, TIME_TARGET, AT = 0.5, 1.5, 128


def _methods() -> dict[str, ac.GradientMethod | None]:
    return {"Direct": ac.Direct(), "default (auto)": None, "Anode()": ac.Anode()}


def _step(field: nn.Module, x: Tensor, steps: int, gradient: ac.GradientMethod | None) -> Callable[[], None]:
    t = torch.tensor([0.0, 1.0], dtype=x.dtype)

    def run() -> None:
        out = ac.odeint(field, x, t, method="rk4", options={"step_size": 1.0 / steps}, gradient=gradient)
        out[-1].square().mean().backward()

    return run


def report(batch: int, channels: int, size: int, reps: int, clock: Clock) -> str:
    """The table as printed text, one row per (N_t, method), each printed as it is measured."""
    torch.manual_seed(0)
    from anode_lab.experiments.fields import ConvField

    field = ConvField(channels, activation="relu", norm="group")
    x = torch.randn(batch, channels, size, size)
    lines = [
        f"  one odeint call, rk4, ConvField({channels}, relu, group norm), input {batch}×{channels}×{size}×{size}",
        f"  {'N_t':>5} {'method':<15} {'peak MiB':>9} {'/ Direct':>9} {'time ms':>9} {'/ Direct':>9}",
    ]
    print("\n".join(lines), flush=True)
    verdicts = []
    for steps in STEPS:
        peaks = {}
        for label, method in _methods().items():
            field.zero_grad(set_to_none=True)
            with ac.MemoryMeter() as meter:
                _step(field, x, steps, method)()
            peaks[label] = meter.peak_bytes
        timings = time_interleaved(
            {label: _step(field, x, steps, m) for label, m in _methods().items()},
            reps=reps,
            setup=lambda _: field.zero_grad(set_to_none=True),
        )
        for label in _methods():
            memory = peaks[label] / peaks["Direct"]
            time = timings[label].median(clock) / timings["Direct"].median(clock)
            line = (
                f"  {steps:>5} {label:<15} {peaks[label] / MIB:>9.2f} {memory:>9.2f} "
                f"{timings[label].median(clock) * 1e3:>9.1f} {time:>9.2f}"
            )
            print(line, flush=True)
            lines.append(line)
            if steps == AT and label == "default (auto)":
                ok = memory <= MEMORY_TARGET and time <= TIME_TARGET
                verdicts.append(
                    f"  {'MET' if ok else 'MISSED'}: at N_t = {AT} the default holds {memory:.2f} of Direct's peak "
                    f"(target ≤ {MEMORY_TARGET}) in {time:.2f} of its time (target ≤ {TIME_TARGET}, {clock} clock)"
                )
    lines += ["", *verdicts]
    print("\n".join(["", *verdicts]), flush=True)
    return "\n".join(lines)
