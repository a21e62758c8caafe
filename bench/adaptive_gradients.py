"""Adaptive and reversible solves of the conv network: Anode against torchdiffeq, Reversible against Direct.

Part of ``bench/gradients.py`` (which runs it after its fixed-step table); also runs alone:
``python bench/adaptive_gradients.py [--quick] [--reps N] [--threads T]``.

* dopri5 at rtol 1e-3, 1e-5, 1e-7 (atol = rtol/100): ``Direct``, ``Anode``, ``Anode(checkpoints=c)``,
  ``Adjoint`` and torchdiffeq's ``odeint`` / ``odeint_adjoint`` on the same fields. Time of one training step
  (median of interleaved reps; the two adjoints, up to 100× slower at rtol 1e-7, by one metered pass) and its
  ratio to ``odeint`` (target for Anode ≤ 1.5×) and to ``odeint_adjoint``
  (target < 1); field evaluations forward/backward; peak bytes held for backward; relative gradient error
  against ``Direct`` (the exact gradient with the accepted step sizes held fixed; torchdiffeq's ``odeint`` row
  is its distance from torchdiffeq's own backprop, which also differentiates the first step size).
* ReversibleHeun at N_t ∈ {8, 32, 128}: ``Reversible`` against ``Direct`` through the same scheme (and
  ``Anode``): time ratio, peak bytes, gradient error.

The network runs in float64 here: rtol 1e-7 is below float32's resolution of the state.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

import anode_core as ac

if __package__:
    from .gradients import BLOCKS, MIB, Network, conv_network, instrumented_pass, training_step
    from .timing import time_interleaved
else:  # run as a script
    from gradients import BLOCKS, MIB, Network, conv_network, instrumented_pass, training_step
    from timing import time_interleaved

try:
    import torchdiffeq
except ImportError:
    torchdiffeq = None

RTOLS = (1e-3, 1e-5, 1e-7)
QUICK, FULL = (2, 4, 8), (16, 16, 16)
"""(batch, channels, size) of the conv network."""
REVERSIBLE_STEPS = (8, 32, 128)


class TorchdiffeqAdaptive(nn.Module):
    """One ODE block solved by torchdiffeq's dopri5 at the given tolerances."""

    def __init__(self, field: nn.Module, rtol: float, adjoint: bool) -> None:
        super().__init__()
        self.field, self.rtol, self.adjoint = field, rtol, adjoint

    def forward(self, z: Tensor) -> Tensor:
        t = torch.tensor([0.0, 1.0], dtype=z.dtype)
        solve = torchdiffeq.odeint_adjoint if self.adjoint else torchdiffeq.odeint
        return solve(self.field, z, t, rtol=self.rtol, atol=self.rtol / 100, method="dopri5")[-1]


@dataclass(frozen=True)
class Row:
    setting: str
    method: str
    time_ms: float
    ratios: dict[str, float]
    peak_mib: float
    rel_grad_error: float
    nfe: str


def measure(
    net: Network,
    models: dict[str, nn.Module],
    reference: str,
    reps: int,
    peers: Sequence[str],
    once: Sequence[str] = (),
) -> list[Row]:
    """A metered pass per model, then interleaved timed reps; ratios to each peer, errors against ``reference``.

    Models in ``once`` (the adjoints, 10–100× slower at tight tolerances) are timed by their metered pass alone.
    Times are this process's CPU time: with one compute thread it is the step's own cost, blind to the load of a
    shared machine (see ``bench/timing.py``).
    """
    metered, seconds = {}, {}
    for label, model in models.items():
        start = time.process_time()
        metered[label] = instrumented_pass(model, net)
        seconds[label] = time.process_time() - start
    timed = [label for label in models if label not in once]
    steps = {label: training_step(models[label], net) for label in timed}
    timings = time_interleaved(steps, reps=reps, warmup=1, setup=lambda label: models[label].zero_grad(None))
    median = {**seconds, **{label: timings[label].median("cpu") for label in timed}}
    exact = metered[reference].grads
    rows = []
    for label in models:
        cmp = ac.compare_gradients(exact, metered[label].grads)
        rows.append(
            Row(
                setting="",
                method=label + (" (1 rep)" if label in once else ""),
                time_ms=1e3 * median[label],
                ratios={p: median[label] / median[p] for p in peers},
                peak_mib=metered[label].peak_bytes / MIB,
                rel_grad_error=cmp.rel_error,
                nfe=f"{metered[label].nfe_forward}/{metered[label].nfe_backward}",
            )
        )
    return rows


def adaptive_rows(net: Network, rtol: float, checkpoints: int, reps: int) -> list[Row]:
    solver = ac.Dopri5(rtol=rtol, atol=rtol / 100)
    ours = {
        "Direct": ac.Direct(),
        "Anode": ac.Anode(),
        f"Anode(checkpoints={checkpoints})": ac.Anode(checkpoints=checkpoints),
        "Adjoint": ac.Adjoint(),
    }
    models: dict[str, nn.Module] = {
        label: nn.Sequential(*(ac.ODEBlock(f, solver=solver, gradient=g) for f in net.fields))
        for label, g in ours.items()
    }
    peers = []
    if torchdiffeq is not None:
        for label, adjoint in (("torchdiffeq.odeint", False), ("torchdiffeq.odeint_adjoint", True)):
            models[label] = nn.Sequential(*(TorchdiffeqAdaptive(f, rtol, adjoint) for f in net.fields))
            peers.append(label)
    rows = measure(net, models, "Direct", reps, peers, once=("Adjoint", "torchdiffeq.odeint_adjoint"))
    return [Row(f"dopri5 rtol={rtol:.0e}", *list(r.__dict__.values())[1:]) for r in rows]


def reversible_rows(net: Network, steps: int, reps: int) -> list[Row]:
    solver = ac.ReversibleHeun()
    models: dict[str, nn.Module] = {
        label: nn.Sequential(*(ac.ODEBlock(f, steps=steps, solver=solver, gradient=g) for f in net.fields))
        for label, g in (("Direct", ac.Direct()), ("Anode", ac.Anode()), ("Reversible", ac.Reversible()))
    }
    rows = measure(net, models, "Direct", reps, ["Direct"])
    return [Row(f"reversible_heun N_t={steps}", *list(r.__dict__.values())[1:]) for r in rows]


def format_rows(rows: Sequence[Row]) -> str:
    peers = sorted({p for r in rows for p in r.ratios})
    header = [
        "setting",
        "method",
        "cpu ms",
        *(f"×{p.split('.')[-1]}" for p in peers),
        "peak MiB",
        "rel grad err",
        "NFE f/b",
    ]
    body = [
        [
            r.setting,
            r.method,
            f"{r.time_ms:.1f}",
            *(f"{r.ratios[p]:.2f}" if p in r.ratios else "" for p in peers),
            f"{r.peak_mib:.2f}",
            f"{r.rel_grad_error:.2e}",
            r.nfe,
        ]
        for r in rows
    ]
    widths = [max(len(str(c)) for c in col) for col in zip(header, *body, strict=True)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)) for line in [header, *body]]
    return "\n".join(lines)


def verdict(rows: Sequence[Row]) -> str:
    anode = [r for r in rows if r.method == "Anode" and "torchdiffeq.odeint" in r.ratios]
    if not anode:
        return "verdict: torchdiffeq not installed; no peer ratios"
    worst_fwd = max(r.ratios["torchdiffeq.odeint"] for r in anode)
    worst_adj = max(r.ratios["torchdiffeq.odeint_adjoint"] for r in anode)
    return (
        f"verdict: Anode / torchdiffeq.odeint ≤ {worst_fwd:.2f}× "
        f"(target ≤ 1.5: {'met' if worst_fwd <= 1.5 else 'MISSED'});"
        f" Anode / odeint_adjoint ≤ {worst_adj:.2f}× (target < 1: {'met' if worst_adj < 1 else 'MISSED'})"
    )


def report(batch: int, channels: int, size: int, reps: int, checkpoints: int = 4) -> str:
    net = conv_network(batch, channels, size)
    net = Network(net.name, net.description + ", float64", net.fields.double(), net.x.double(), net.labels)
    rows: list[Row] = []
    for rtol in RTOLS:
        print(f"  dopri5 rtol={rtol:.0e}", file=sys.stderr)
        rows += adaptive_rows(net, rtol, checkpoints, reps)
    adaptive = format_rows(rows)
    reversible: list[Row] = []
    for steps in REVERSIBLE_STEPS:
        print(f"  reversible_heun N_t={steps}", file=sys.stderr)
        reversible += reversible_rows(net, steps, reps)
    return "\n".join(
        [
            f"adaptive and reversible solves, {BLOCKS} blocks: {net.description}",
            "",
            adaptive,
            "",
            verdict(rows),
            "",
            format_rows(reversible),
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a smaller batch and 3 reps")
    p.add_argument("--reps", type=int, default=None, help="timed reps per method (default: 5, or 3 with --quick)")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default: 1)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    reps = args.reps or (3 if args.quick else 5)
    print(report(*(QUICK if args.quick else FULL), reps))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
