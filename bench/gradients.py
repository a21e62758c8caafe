"""Benchmark every way to differentiate a neural ODE: time, memory held for backward, gradient error, NFE.

Two networks of four ODE blocks each (a conv net whose field is ``ConvField``: conv–GroupNorm–ReLU–conv, and an
MLP net), Euler and RK4 with N_t ∈ {2, 8, 32}, and for each: ``Direct``, ``Anode``, ``Anode(checkpoints=c)``,
``Adjoint``, ``Adjoint(reconstruct=False)`` and, as peers, torchdiffeq's ``odeint`` and ``odeint_adjoint`` on the
same fields. Per method and setting:

* time of one training step (forward + ``loss.backward()``), median of reps timed interleaved with the other
  methods (see ``bench/timing.py``), and its ratio to ``Direct`` in the same run;
* peak bytes held for backward, measured by :class:`anode_core.MemoryMeter` in a separate untimed pass, next to
  the analytic :class:`anode_core.MemoryModel`;
* relative error of the parameter gradient against ``Direct``, and the field evaluations in forward / backward.

Then, on the same conv network in float64 with half its batch, the adaptive and reversible table
(``bench/adaptive_gradients.py``): dopri5 at rtol 1e-3, 1e-5, 1e-7 against torchdiffeq's ``odeint`` and
``odeint_adjoint``, and ReversibleHeun + ``Reversible`` against ``Direct``.

Then the ``odeint`` table (``bench/odeint_cost.py``): one ``anode_core.odeint`` call against ``torchdiffeq.odeint``
with dopri5, tsit5 and dopri8 at rtol 1e-3, 1e-5, 1e-7 on an MLP and a conv field: inference (``no_grad``) field
evaluations and time, and forward + backward of the default gradient against torchdiffeq's backprop.

Run ``python bench/gradients.py [--quick] [--only fixed|adaptive|odeint] [--reps N] [--budget S] [--threads T]
[--out PATH]`` (the only way to run either table). Prints each table, the notes that qualify it and a verdict on
its targets; writes the rows as CSV (``PATH`` and ``PATH`` with ``_adaptive`` added to its stem).
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from torch import Tensor, nn

import anode_core as ac

if __package__:
    from .adaptive_gradients import report as adaptive_report
    from .measure import BLOCKS, MIB, Network, conv_network, instrumented_pass, judge, mlp_network, training_step
    from .odeint_cost import report as odeint_report
    from .odeint_memory import report as odeint_memory_report
    from .peers import torchdiffeq
    from .timing import Clock, Timing, keep_heap, time_interleaved
else:  # run as a script: python bench/gradients.py
    from adaptive_gradients import report as adaptive_report
    from measure import BLOCKS, MIB, Network, conv_network, instrumented_pass, judge, mlp_network, training_step
    from odeint_cost import report as odeint_report
    from odeint_memory import report as odeint_memory_report
    from peers import torchdiffeq
    from timing import Clock, Timing, keep_heap, time_interleaved


try:
    from tqdm import tqdm
except ImportError:
    tqdm = None

STEPS = (2, 8, 32)
SOLVERS = (ac.Euler(), ac.RK4())
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "gradients.csv"


# ---------------------------------------------------------------------------------------------- networks


class TorchdiffeqBlock(nn.Module):
    """The same ODE block solved by torchdiffeq on the fixed grid ``step_size = 1/N_t``."""

    def __init__(self, field: nn.Module, *, steps: int, method: str, adjoint: bool) -> None:
        super().__init__()
        self.field = field  # same attribute name as ODEBlock, so parameter names match across methods
        self.steps = steps
        self.method = method
        self.adjoint = adjoint

    def forward(self, z: Tensor) -> Tensor:
        t = torch.tensor([0.0, 1.0], dtype=z.dtype, device=z.device)
        options = {"step_size": 1.0 / self.steps}
        if self.adjoint:
            out = torchdiffeq.odeint_adjoint(
                self.field, z, t, method=self.method, options=options, adjoint_params=tuple(self.field.parameters())
            )
        else:
            out = torchdiffeq.odeint(self.field, z, t, method=self.method, options=options)
        return out[-1]


# ----------------------------------------------------------------------------------------------- methods

BlockFactory = Callable[[nn.Module, int, ac.Solver], nn.Module]


@dataclass(frozen=True)
class Method:
    label: str
    block: BlockFactory
    model_bytes: Callable[[ac.MemoryModel], int]
    """The analytic model of ANODE §3, ``anode_core.MemoryModel`` (for the torchdiffeq peers: that of the method
    they correspond to)."""


def _ours(label: str, gradient: ac.GradientMethod, model_bytes: Callable[[ac.MemoryModel], int]) -> Method:
    def block(field: nn.Module, steps: int, solver: ac.Solver) -> nn.Module:
        return ac.ODEBlock(field, steps=steps, solver=solver, gradient=gradient)

    return Method(label, block, model_bytes)


def _peer(label: str, adjoint: bool, model_bytes: Callable[[ac.MemoryModel], int]) -> Method:
    def block(field: nn.Module, steps: int, solver: ac.Solver) -> nn.Module:
        return TorchdiffeqBlock(field, steps=steps, method=solver.name, adjoint=adjoint)

    return Method(label, block, model_bytes)


def methods(checkpoints: int) -> list[Method]:
    found = [
        _ours("Direct", ac.Direct(), lambda m: m.direct()),
        _ours("Anode", ac.Anode(), lambda m: m.anode()),
        _ours(f"Anode(checkpoints={checkpoints})", ac.Anode(checkpoints), lambda m: m.anode(checkpoints)),
        _ours("Adjoint", ac.Adjoint(), lambda m: m.adjoint()),
        _ours("Adjoint(reconstruct=False)", ac.Adjoint(reconstruct=False), lambda m: m.adjoint(False)),
    ]
    if torchdiffeq is not None:
        found += [
            _peer("torchdiffeq.odeint", False, lambda m: m.direct()),
            _peer("torchdiffeq.odeint_adjoint", True, lambda m: m.adjoint()),
        ]
    return found


# ---------------------------------------------------------------------------------------------- measuring


@dataclass(frozen=True)
class Row:
    network: str
    solver: str
    steps: int
    method: str
    time_ms: float
    x_direct: float
    x_direct_paired: float
    q1_ms: float
    q3_ms: float
    cpu_ms: float
    x_direct_cpu: float
    reps: int
    peak_mib: float
    model_mib: float
    left_mib: float
    rel_grad_error: float
    cosine: float
    nfe_forward: int
    nfe_backward: int


def memory_model(net: Network, solver: ac.Solver, steps: int) -> ac.MemoryModel:
    x = net.x
    eval_bytes = ac.saved_bytes_of_one_evaluation(net.fields[0], x)
    return ac.MemoryModel(BLOCKS, x.numel() * x.element_size(), solver.stages, steps, eval_bytes)


def bench_setting(
    net: Network, solver: ac.Solver, steps: int, candidates: Sequence[Method], reps: int, budget: float
) -> tuple[list[Row], dict[str, Timing]]:
    """All methods on one (network, solver, N_t): a metered pass each, then interleaved timed reps.

    At least ``reps`` reps; cheap settings get more, as many as fit in about ``budget`` seconds (at most 10×),
    since their ratios are the noisiest.
    """
    models = {m.label: nn.Sequential(*(m.block(f, steps, solver) for f in net.fields)) for m in candidates}
    metered = {label: instrumented_pass(model, net) for label, model in models.items()}
    steps_of = {label: training_step(model, net) for label, model in models.items()}

    def zero(label: str) -> None:
        models[label].zero_grad(set_to_none=True)

    warm = time_interleaved(steps_of, reps=1, warmup=0, setup=zero)  # the warm-up round, timed only to size reps
    per_rep = sum(t.median() for t in warm.values())
    reps = max(reps, min(10 * reps, int(budget / per_rep)))
    timings = time_interleaved(steps_of, reps=reps, warmup=0, setup=zero)
    mm = memory_model(net, solver, steps)
    reference, base = metered["Direct"], timings["Direct"]
    rows = []
    for m in candidates:
        t: Timing = timings[m.label]
        cmp = ac.compare_gradients(reference.grads, metered[m.label].grads)
        q1, q3 = t.quartiles()
        rows.append(
            Row(
                network=net.name,
                solver=solver.name,
                steps=steps,
                method=m.label,
                time_ms=1e3 * t.median(),
                x_direct=t.ratio_to(base),
                x_direct_paired=t.paired_ratio_to(base),
                q1_ms=1e3 * q1,
                q3_ms=1e3 * q3,
                cpu_ms=1e3 * t.median("cpu"),
                x_direct_cpu=t.ratio_to(base, "cpu"),
                reps=len(t.wall),
                peak_mib=metered[m.label].peak_bytes / MIB,
                model_mib=m.model_bytes(mm) / MIB,
                left_mib=metered[m.label].left_bytes / MIB,
                rel_grad_error=cmp.rel_error,
                cosine=cmp.cosine,
                nfe_forward=metered[m.label].nfe_forward,
                nfe_backward=metered[m.label].nfe_backward,
            )
        )
    return rows, timings


# ---------------------------------------------------------------------------------------------- reporting

COLUMNS = (
    ("network", "network", "{}"),
    ("solver", "solver", "{}"),
    ("N_t", "steps", "{}"),
    ("method", "method", "{}"),
    ("time ms", "time_ms", "{:.1f}"),
    ("×Direct", "x_direct", "{:.2f}"),
    ("×Direct cpu", "x_direct_cpu", "{:.2f}"),
    ("peak saved MiB", "peak_mib", "{:.2f}"),
    ("model MiB", "model_mib", "{:.2f}"),
    ("rel grad error", "rel_grad_error", "{:.2e}"),
    ("NFE fwd/bwd", None, None),
)


def format_table(rows: Sequence[Row]) -> str:
    """Aligned plain text, one line per row, a blank line between settings."""
    header = [c[0] for c in COLUMNS]
    body = [
        [
            f"{r.nfe_forward}/{r.nfe_backward}" if attr is None else fmt.format(getattr(r, attr))
            for _, attr, fmt in COLUMNS
        ]
        for r in rows
    ]
    peak = [attr for _, attr, _ in COLUMNS].index("peak_mib")
    for r, line in zip(rows, body, strict=True):
        if r.left_mib > 0:
            line[peak] = "*" + line[peak]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(COLUMNS))]
    left = {0, 1, 3}  # text columns; numbers are right-aligned

    def render(line: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths, strict=True))
        )

    out = [render(header), "  ".join("-" * w for w in widths)]
    for k, (r, line) in enumerate(zip(rows, body, strict=True)):
        if k and (r.network, r.solver, r.steps) != (rows[k - 1].network, rows[k - 1].solver, rows[k - 1].steps):
            out.append("")
        out.append(render(line))
    return "\n".join(out)


FOOTNOTES = """\
Notes
 * time ms: median wall time of one training step (forward + loss.backward()); all methods of a setting are timed
   interleaved rep by rep (rotating order) after one warm-up each, with no instrument hooks. ×Direct: median /
   median of Direct in the same setting; ×Direct cpu: the same with this process's CPU time, which ignores time
   spent waiting for a core while other processes load the machine (CSV: also cpu ms, quartiles, and the median
   of per-rep wall ratios).
 * peak saved MiB: MemoryMeter peak of bytes held for backward (autograd saved tensors + states a method keeps),
   from a separate untimed pass. model MiB: MemoryModel (L·N_t·s·A, L·S+s·N_t·A, (L+c)·S+s·A, L·S+A,
   L·S+L·N_t·S+A); torchdiffeq.odeint is shown against the Direct model, odeint_adjoint against the Adjoint one.
 * rel grad error: ‖g − g_Direct‖ / ‖g_Direct‖ over all field parameters, float32 (≈1e-7 is round-off).
   Exact methods (Anode, Anode(c), torchdiffeq.odeint with euler) agree with Direct to round-off; Adjoint
   differs by the discretisation error of the continuous adjoint (and, with reconstruction, by the error of
   solving the ReLU/GroupNorm conv field backwards in time).
 * torchdiffeq's fixed-grid 'rk4' is the 3/8-rule variant (rk4_alt_step_func), not classical RK4: it computes a
   different (equally 4th-order) network, so its gradient differs from our RK4 Direct at truncation level,
   shrinking like dt^4, and its time/memory are those of a different scheme. Its 'euler' is the same scheme.
 * NFE fwd/bwd: field evaluations in forward / in backward, all four blocks together."""

LEAK_NOTE = """\
 * A '*' peak is overstated: once that step, its input and its graph were dropped, MemoryMeter still counted
   bytes ({worst:.2f} MiB in the worst row; CSV column left_mib). torchdiffeq's adjoint calls
   autograd.grad(..., retain_graph=True); the meter's pack hook wraps each saved tensor in an object that holds
   it strongly, so a saved *output* (ReLU saves its output) and its grad_fn form a reference cycle through C++
   that neither autograd nor gc.collect() frees: under the meter those graphs pile up during the backward and
   stay alive until the process ends. Without the meter there is no cycle. Fix: keep tensor.detach() in
   MemoryMeter._pack."""


def footnotes(rows: Sequence[Row]) -> str:
    leaked = [r.left_mib for r in rows if r.left_mib > 0]
    return FOOTNOTES + ("\n" + LEAK_NOTE.format(worst=max(leaked)) if leaked else "")


def verdict(timings: dict[tuple[str, str, int], dict[str, Timing]], limit: float, clock: Clock) -> str:
    """The targets on the conv network, judged on the median of per-rep ``clock`` ratios; quartiles show the noise."""
    lines = [
        (
            f"Verdict (conv network; median of per-rep {clock}-time ratios [quartiles]): Anode ≤ {limit:.2f}× "
            "Direct, and Anode faster than torchdiffeq.odeint_adjoint"
        )
    ]
    ok_all = True
    for (name, solver, steps), t in timings.items():
        if name != "conv":
            continue
        anode = t["Anode"]
        ratio_ok, text = judge(anode.paired_ratios(t["Direct"], clock), lambda r: r <= limit)
        line = f"  {solver:5s} N_t={steps:<3d} Anode/Direct {text}"
        if "torchdiffeq.odeint_adjoint" in t:
            peer_ok, text = judge(anode.paired_ratios(t["torchdiffeq.odeint_adjoint"], clock), lambda r: r < 1.0)
            line += f";  Anode/odeint_adjoint {text}"
        else:
            peer_ok = True
            line += ";  Anode/odeint_adjoint n/a (torchdiffeq not installed)"
        ok_all &= ratio_ok and peer_ok
        lines.append(line)
    lines.append(f"  overall: {'PASS' if ok_all else 'FAIL'}")
    return "\n".join(lines)


def write_csv(rows: Sequence[Row], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[f.name for f in fields(Row)])
        writer.writeheader()
        for r in rows:
            writer.writerow(asdict(r))


# ---------------------------------------------------------------------------------------------- entry point


@dataclass(frozen=True)
class Sizes:
    conv_batch: int
    conv_channels: int
    conv_size: int
    mlp_batch: int
    mlp_dim: int
    mlp_hidden: int
    reps: int
    budget: float
    adaptive_conv: tuple[int, int, int]
    """(batch, channels, size) of the conv network of the adaptive and reversible table: at full size half the
    fixed table's batch, so that its full form ends within 15 minutes on a 2-core machine (7.1 min quiet; the two
    adjoints' one pass each at rtol 1e-7 is ~17,000 backward evaluations); step counts barely depend on the batch."""
    odeint_conv: tuple[int, int, int] = (16, 16, 16)
    """(batch, channels, size) of the one-odeint memory table."""


FULL = Sizes(16, 16, 16, mlp_batch=1024, mlp_dim=16, mlp_hidden=64, reps=5, budget=8, adaptive_conv=(8, 16, 16))
QUICK = Sizes(
    8, 16, 16, mlp_batch=64, mlp_dim=16, mlp_hidden=64, reps=3, budget=1.0, adaptive_conv=(2, 4, 8),
    odeint_conv=(4, 8, 8),
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="smaller batches and fewer reps (about a minute on 2 cores)")
    p.add_argument(
        "--reps", type=int, default=None, help="fewest timed reps per method (default: 5, or 3 with --quick)"
    )
    p.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds of timing per setting: cheap settings get more reps, up to 10× --reps (default: 8, or 1 "
        "with --quick; 0 for exactly --reps, and the adaptive table's adjoints timed by their metered pass)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch.set_num_threads (default: 1; on a loaded machine more intra-op threads than free cores make "
        "OpenMP spin and times swing by 10×, which no amount of reps averages out)",
    )
    p.add_argument("--checkpoints", type=int, default=4, help="c of Anode(checkpoints=c) (default: 4)")
    p.add_argument("--limit", type=float, default=1.35, help="target bound of Anode time / Direct (default: 1.35)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"CSV path (default: {DEFAULT_OUT})")
    p.add_argument(
        "--only",
        choices=("fixed", "adaptive", "odeint", "odeint-memory"),
        default=None,
        help="run one table: the fixed-step one, the adaptive and reversible one, the odeint one (inference and "
        "forward+backward against torchdiffeq), or the one-odeint default's memory and time against Direct "
        "(bench/odeint_memory.py) (default: all)",
    )
    args = p.parse_args(argv)
    if args.budget is not None and args.budget < 0:
        p.error(f"--budget must be ≥ 0 seconds; got {args.budget}")
    if args.reps is not None and args.reps < 1:
        p.error(f"--reps must be ≥ 1; got {args.reps}")
    if args.threads < 1:
        p.error(f"--threads must be ≥ 1; got {args.threads}")
    if args.checkpoints < 0:
        p.error(f"--checkpoints must be ≥ 0; got {args.checkpoints}")
    return args


def fixed_section(args: argparse.Namespace, sizes: Sizes, reps: int, budget: float, clock: Clock) -> str:
    """The fixed-step table, its notes and verdict, as printed text; the rows go to ``args.out`` as CSV."""
    nets = [
        conv_network(sizes.conv_batch, sizes.conv_channels, sizes.conv_size),
        mlp_network(sizes.mlp_batch, sizes.mlp_dim, sizes.mlp_hidden),
    ]
    candidates = methods(args.checkpoints)
    settings = [(net, solver, steps) for net in nets for solver in SOLVERS for steps in STEPS]
    bar = tqdm(total=len(settings), file=sys.stderr, unit="setting", disable=None) if tqdm is not None else None
    rows: list[Row] = []
    timings: dict[tuple[str, str, int], dict[str, Timing]] = {}
    for net, solver, steps in settings:
        if bar is not None:
            bar.set_description(f"{net.name} {solver.name} N_t={steps}")
        else:
            print(f"  {net.name} {solver.name} N_t={steps}", file=sys.stderr)
        found, timings[net.name, solver.name, steps] = bench_setting(net, solver, steps, candidates, reps, budget)
        rows.extend(found)
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    write_csv(rows, args.out)
    text = [*(f"  {net.description}" for net in nets), "", format_table(rows), "", footnotes(rows), ""]
    text.append(verdict(timings, args.limit, clock))
    if args.quick:
        text.append(
            "  (--quick: with a conv batch this small, each block's fixed bookkeeping (custom Function, RNG capture,\n"
            "   reentrant autograd.grad, ≈0.1–0.2 ms) weighs on Anode's ratio at N_t=2; judge on the full run.)"
        )
    return "\n".join([*text, f"\nwrote {args.out}"])


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    heap = "heap kept" if keep_heap() else "allocator's defaults"  # see keep_heap: cases do not inherit page faults
    torch.set_num_threads(args.threads)
    sizes = QUICK if args.quick else FULL
    reps = args.reps if args.reps is not None else sizes.reps
    budget = args.budget if args.budget is not None else sizes.budget
    # With one compute thread, CPU time is the step's own cost, blind to other processes; with several, it also
    # counts threads spinning at barriers, so wall time is the fairer judge there.
    clock: Clock = "cpu" if args.threads == 1 else "wall"
    print(
        f"anode-lab gradient benchmark ({'quick' if args.quick else 'full'}): torch {torch.__version__}, "
        f"torchdiffeq {getattr(torchdiffeq, '__version__', 'not installed')}, {platform.machine()}, {heap}, "
        f"{torch.get_num_threads()} thread(s), ≥{reps} reps per method (cheap settings more, ~{budget:g} s)"
    )
    if args.only in (None, "odeint-memory"):
        print("\nOne odeint call, the default gradient against Direct, float32:", flush=True)
        odeint_memory_report(*sizes.odeint_conv, reps, clock)
    if args.only in (None, "fixed"):
        print("\nFixed steps, float32:\n" + fixed_section(args, sizes, reps, budget, clock), flush=True)
    if args.only in (None, "odeint"):
        print("\nodeint, one call:", flush=True)
        odeint_report(args.quick, reps, clock)
    if args.only in (None, "adaptive"):
        net = conv_network(*sizes.adaptive_conv)
        out = args.out.with_name(f"{args.out.stem}_adaptive{args.out.suffix}")
        print("\n" + adaptive_report(net, reps, budget, args.checkpoints, clock, out))
    load = " ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    print(f"\nwall time {time.perf_counter() - started:.0f} s; load average {load}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
