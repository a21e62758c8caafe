"""The adaptive and reversible table of ``bench/gradients.py`` (run through it; see its docstring).

On the conv network of the fixed-step table with half its batch, in float64 (rtol 1e-7 is below float32's
resolution of the state):

* dopri5 at rtol 1e-3, 1e-5, 1e-7 (atol = rtol/100): ``Direct``, ``Anode``, ``Anode(checkpoints=c)``,
  ``Adjoint`` and torchdiffeq's ``odeint`` / ``odeint_adjoint`` on the same fields. Time of one training step
  and its ratio to ``odeint`` (target for Anode ≤ 1.5×) and to ``odeint_adjoint`` (target < 1); field
  evaluations forward/backward; peak bytes held for backward; relative gradient error against ``Direct`` (the
  exact gradient of the solve with the accepted step sizes held fixed) and against torchdiffeq's own backprop
  through ``odeint`` (which also differentiates its first step size; its row is the distance between the two).
* ReversibleHeun and MALI's DampedLeapfrog (``alf``) at N_t ∈ {8, 32, 128}: ``Reversible`` against ``Direct``
  through the same scheme (and ``Anode``): time ratio, peak bytes, gradient error.

All methods of a setting are timed interleaved rep by rep; the two adjoints, up to 100× slower than the rest at
tight tolerances, take part in only as many reps as fit in the time budget (none when one pass takes longer: their
metered pass is then their time): their ratio to Anode is far from any bound. Times are this process's CPU time
with one compute thread (blind to the load of a shared machine, see ``bench/timing.py``), wall time with several.
"""

from __future__ import annotations

import csv
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

import anode_core as ac

if __package__:
    from .measure import MIB, Network, instrumented_pass, judge, training_step
    from .peers import torchdiffeq
    from .timing import Clock, Timing, time_interleaved
else:  # imported by bench/gradients.py run as a script
    from measure import MIB, Network, instrumented_pass, judge, training_step
    from peers import torchdiffeq
    from timing import Clock, Timing, time_interleaved


RTOLS = (1e-3, 1e-5, 1e-7)
REVERSIBLE_SOLVERS = (ac.ReversibleHeun(), ac.DampedLeapfrog())
REVERSIBLE_STEPS = (8, 32, 128)
ODEINT, ODEINT_ADJOINT = "torchdiffeq.odeint", "torchdiffeq.odeint_adjoint"
SLOW = ("Adjoint", ODEINT_ADJOINT)


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
    reps: int
    ratios: dict[str, float]
    """Median time / median time of each peer."""
    peak_mib: float
    rel_grad_error: float
    """Against the exact gradient (``Direct``)."""
    vs_odeint: float | None
    """Against torchdiffeq's backprop through ``odeint`` (None when it is not in the setting)."""
    nfe_forward: int
    nfe_backward: int


@dataclass(frozen=True)
class Measured:
    rows: list[Row]
    timings: dict[str, Timing]


def measure(
    setting: str,
    net: Network,
    models: dict[str, nn.Module],
    peers: Sequence[str],
    reps: int,
    budget: float,
    clock: Clock,
) -> Measured:
    """A metered pass per model, then all timed interleaved; ratios to each peer, errors against ``Direct``.

    Cheap settings get more than ``reps`` reps (up to 10×, as many as fit in ``budget`` seconds); the slow
    adjoints only as many as fit in ``budget`` (at most ``reps``), and none when one pass takes longer: their
    metered pass is then their only time (reps shown as ``1m``).
    """
    metered, alone = {}, {}
    for label, model in models.items():
        wall, cpu = time.perf_counter(), time.process_time()
        metered[label] = instrumented_pass(model, net)  # also the warm-up
        alone[label] = Timing((time.perf_counter() - wall,), (time.process_time() - cpu,))
    cost = {label: t.median(clock) for label, t in alone.items()}
    slow = {label: int(budget / cost[label]) for label in models if label in SLOW}
    per_rep = sum(cost[label] for label in models if label not in slow)
    reps = max(reps, min(10 * reps, int(budget / per_rep)))
    cases = {label: training_step(model, net) for label, model in models.items() if slow.get(label) != 0}
    timings = time_interleaved(
        cases,
        reps=reps,
        warmup=0,
        setup=lambda label: models[label].zero_grad(set_to_none=True),
        fewer={label: min(n, reps) for label, n in slow.items() if n},
    )
    timings |= {label: alone[label] for label in models if label not in cases}
    median = {label: t.median(clock) for label, t in timings.items()}
    exact = metered["Direct"].grads
    theirs = metered[ODEINT].grads if ODEINT in metered else None
    rows = []
    for label, m in metered.items():
        rows.append(
            Row(
                setting=setting,
                method=label,
                time_ms=1e3 * median[label],
                reps=len(timings[label].wall) if label in cases else 0,
                ratios={p: median[label] / median[p] for p in peers},
                peak_mib=m.peak_bytes / MIB,
                rel_grad_error=ac.compare_gradients(exact, m.grads).rel_error,
                vs_odeint=None if theirs is None else ac.compare_gradients(theirs, m.grads).rel_error,
                nfe_forward=m.nfe_forward,
                nfe_backward=m.nfe_backward,
            )
        )
    return Measured(rows, timings)


def adaptive_setting(net: Network, rtol: float, checkpoints: int, reps: int, budget: float, clock: Clock) -> Measured:
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
        for label, adjoint in ((ODEINT, False), (ODEINT_ADJOINT, True)):
            models[label] = nn.Sequential(*(TorchdiffeqAdaptive(f, rtol, adjoint) for f in net.fields))
            peers.append(label)
    return measure(f"dopri5 rtol={rtol:.0e}", net, models, peers, reps, budget, clock)


def reversible_setting(net: Network, solver: ac.Solver, steps: int, reps: int, budget: float, clock: Clock) -> Measured:
    models: dict[str, nn.Module] = {
        label: nn.Sequential(*(ac.ODEBlock(f, steps=steps, solver=solver, gradient=g) for f in net.fields))
        for label, g in (("Direct", ac.Direct()), ("Anode", ac.Anode()), ("Reversible", ac.Reversible()))
    }
    return measure(f"{solver.name} N_t={steps}", net, models, ["Direct"], reps, budget, clock)


def format_rows(rows: Sequence[Row], clock: Clock) -> str:
    peers = list(dict.fromkeys(p for r in rows for p in r.ratios))
    with_odeint = any(r.vs_odeint is not None for r in rows)
    header = [
        "setting",
        "method",
        f"{clock} ms",
        "reps",
        *(f"×{p.split('.')[-1]}" for p in peers),
        "peak MiB",
        "err vs exact",
        *(["err vs odeint"] if with_odeint else []),
        "NFE fwd/bwd",
    ]
    body = [
        [
            r.setting,
            r.method,
            f"{r.time_ms:.1f}",
            str(r.reps) if r.reps else "1m",
            *(f"{r.ratios[p]:.2f}" for p in peers),
            f"{r.peak_mib:.2f}",
            f"{r.rel_grad_error:.2e}",
            *([f"{r.vs_odeint:.2e}" if r.vs_odeint is not None else ""] if with_odeint else []),
            f"{r.nfe_forward}/{r.nfe_backward}",
        ]
        for r in rows
    ]
    widths = [max(len(c) for c in col) for col in zip(header, *body, strict=True)]

    def render(line: list[str]) -> str:
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths, strict=True)))

    out = [render(header), "  ".join("-" * w for w in widths)]
    for k, (r, line) in enumerate(zip(rows, body, strict=True)):
        if k and r.setting != rows[k - 1].setting:
            out.append("")
        out.append(render(line))
    return "\n".join(out)


def verdict(timings: dict[str, dict[str, Timing]], clock: Clock) -> str:
    """Anode against torchdiffeq: median of paired per-rep ratios [quartiles] for odeint (timed as often as Anode),
    the ratio of medians for odeint_adjoint (timed in fewer reps)."""
    lines = [f"Verdict (dopri5; {clock} time): Anode ≤ 1.5× torchdiffeq.odeint, and Anode < torchdiffeq.odeint_adjoint"]
    if torchdiffeq is None:
        return lines[0] + "\n  n/a: torchdiffeq not installed"
    ok_all = True
    for setting, t in timings.items():
        anode = t["Anode"]
        fwd_ok, fwd = judge(anode.paired_ratios(t[ODEINT], clock), lambda r: r <= 1.5)
        adj = anode.ratio_to(t[ODEINT_ADJOINT], clock)
        adj_ok = adj < 1
        ok_all &= fwd_ok and adj_ok
        lines.append(f"  {setting}: Anode/odeint {fwd};  Anode/odeint_adjoint {adj:.2f} {'PASS' if adj_ok else 'FAIL'}")
    lines.append(f"  overall: {'PASS' if ok_all else 'FAIL'}")
    return "\n".join(lines)


NOTES = """\
Notes
 * Direct and Anode (an ODEBlock each) run the controller without a graph, then replay the accepted steps, so
   their forward NFE is about twice torchdiffeq's: Direct replays with a graph; Anode without one, keeping only
   each block's input and the accepted grid, and replays again in backward. torchdiffeq.odeint backpropagates
   through its own solve, rejected trials included (anode_core.odeint's Anode() runs the controller alone).
 * err vs exact: ‖g − g_Direct‖ / ‖g_Direct‖; Direct, Anode and Anode(c) differentiate the same accepted steps
   (equal to round-off); err vs odeint: the same against torchdiffeq's backprop, which also differentiates the
   first step size (that term shrinks with rtol). The adjoints are off by the continuous adjoint's error.
 * reps: timed reps of each method, interleaved; 1m: timed by its one metered pass (MemoryMeter on), as a
   single pass took longer than the budget of the setting.
 * reversible_heun, alf: Reversible rebuilds the states backwards algebraically, so it holds O(L) states
   whatever N_t; its reverse step's field evaluation is reused for the step's VJP (one evaluation per step)."""


def write_csv(rows: Sequence[Row], path: Path) -> None:
    peers = list(dict.fromkeys(p for r in rows for p in r.ratios))
    names = ["setting", "method", "time_ms", "reps", *(f"x_{p}" for p in peers)]
    names += ["peak_mib", "rel_grad_error", "vs_odeint", "nfe_forward", "nfe_backward"]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=names)
        writer.writeheader()
        for r in rows:
            ratios = {f"x_{p}": v for p, v in r.ratios.items()}
            writer.writerow({k: v for k, v in r.__dict__.items() if k != "ratios"} | ratios)


def report(net: Network, reps: int, budget: float, checkpoints: int, clock: Clock, out: Path) -> str:
    """Both tables on ``net`` in float64, as printed text (each setting's rows are printed as they are measured,
    then the whole tables); the rows go to ``out`` as CSV."""
    net = net.double()
    adaptive: list[Row] = []
    timings: dict[str, dict[str, Timing]] = {}
    for rtol in RTOLS:
        print(f"  dopri5 rtol={rtol:.0e}", file=sys.stderr)
        found = adaptive_setting(net, rtol, checkpoints, reps, budget, clock)
        print(format_rows(found.rows, clock) + "\n", flush=True)  # each setting's rows as soon as measured
        adaptive += found.rows
        timings[found.rows[0].setting] = found.timings
    reversible: list[Row] = []
    for solver in REVERSIBLE_SOLVERS:
        for steps in REVERSIBLE_STEPS:
            print(f"  {solver.name} N_t={steps}", file=sys.stderr)
            rows = reversible_setting(net, solver, steps, reps, budget, clock).rows
            print(format_rows(rows, clock) + "\n", flush=True)
            reversible += rows
    write_csv(adaptive + reversible, out)
    return "\n".join(
        [
            f"Adaptive and reversible solves: {net.description}",
            "",
            format_rows(adaptive, clock),
            "",
            format_rows(reversible, clock),
            "",
            NOTES,
            "",
            verdict(timings, clock),
            f"\nwrote {out}",
        ]
    )
