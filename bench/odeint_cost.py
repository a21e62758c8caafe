"""The ``odeint`` table of ``bench/gradients.py`` (run through it: ``--only odeint``; see its docstring).

One ``odeint`` call over ``t = [0, 1]`` (one block, as a torchdiffeq model usually is), float64, on an MLP field and
a conv field (conv–GroupNorm–ReLU–conv), with dopri5, tsit5 and dopri8 at rtol 1e-3, 1e-5, 1e-7 (atol = rtol/100):

* inference under ``torch.no_grad()``: ``anode_core.odeint`` against ``torchdiffeq.odeint``: field evaluations
  (target 1.00×) and time (target ≤ 1.05×), and the largest difference of the outputs (0 where the bits agree);
* training (forward + ``backward()`` of a sum of squares): ``anode_core.odeint`` with ``gradient=Anode()`` (the
  controller alone in forward, keeping its accepted steps' graph) and with the default ``Anode(checkpoints="auto")``
  (the controller alone in forward, its graph holding nothing but about sqrt(N) step starts; backward replays the
  accepted steps once, one segment at a time: it trades time for memory, see ``bench/odeint_memory.py``) against
  torchdiffeq's backprop through its solve (target ≤ 1.0× for ``Anode()``); evaluations forward/backward.

Each row is printed as soon as it is measured. A method the installed torchdiffeq lacks (0.2.5 has no tsit5) is
measured alone and its ratios are n/a; ``TORCHDIFFEQ_SRC=/path/to/torchdiffeq`` (a source checkout) is put first
on ``sys.path`` to compare against another version. Times are medians of reps timed interleaved (see
``bench/timing.py``), this process's CPU time with one thread.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

import anode_core as ac

if __package__:
    from .peers import PEER_METHODS, torchdiffeq
    from .timing import Clock, time_interleaved
else:  # imported by bench/gradients.py run as a script
    from peers import PEER_METHODS, torchdiffeq
    from timing import Clock, time_interleaved

from anode_lab.experiments.fields import ConvField, MLPField

METHODS = ("dopri5", "tsit5", "dopri8")
RTOLS = (1e-3, 1e-5, 1e-7)


@dataclass(frozen=True)
class Problem:
    name: str
    field: nn.Module
    y0: Tensor


def problems(quick: bool) -> list[Problem]:
    torch.manual_seed(0)
    mlp = MLPField(16, 64, activation="tanh").double()
    conv = ConvField(8, activation="relu", norm="group").double()
    batch = 64 if quick else 256
    conv_batch, size = (2, 8) if quick else (8, 12)
    return [
        Problem(f"mlp (batch {batch}, 16→64→16)", mlp, torch.randn(batch, 16, dtype=torch.float64)),
        Problem(
            f"conv (batch {conv_batch}, 8 ch, {size}×{size})",
            conv,
            torch.randn(conv_batch, 8, size, size, dtype=torch.float64),
        ),
    ]


@contextmanager
def counted(field: nn.Module) -> Iterator[list[int]]:
    calls = [0]

    def hook(*_: object) -> None:
        calls[0] += 1

    handle = field.register_forward_pre_hook(hook)
    try:
        yield calls
    finally:
        handle.remove()


class Timed(nn.Module):
    """``field(t, y)`` for a field taking ``(t, z)`` (the lab's fields take a float or tensor ``t``)."""

    def __init__(self, field: nn.Module) -> None:
        super().__init__()
        self.field = field

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        out: Tensor = self.field(t, y)
        return out


GRADIENTS: dict[str, ac.GradientMethod | None] = {"ours": ac.Anode(), "default": None}


def _solve(which: str, func: nn.Module, y0: Tensor, method: str, rtol: float) -> Tensor:
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    if which in GRADIENTS:
        out: Tensor = ac.odeint(func, y0, t, rtol=rtol, atol=rtol / 100, method=method, gradient=GRADIENTS[which])
    else:
        out = torchdiffeq.odeint(func, y0, t, rtol=rtol, atol=rtol / 100, method=method)
    return out


def _evaluations(func: nn.Module, run: Callable[[], object]) -> int:
    with counted(func) as calls:
        run()
    return calls[0]


def measure(p: Problem, method: str, rtol: float, reps: int, clock: Clock) -> str:
    """One row: inference and training of ``method`` at ``rtol`` on ``p``, ours against torchdiffeq's."""
    func = Timed(p.field)
    peers = ["ours"] + (["theirs"] if method in PEER_METHODS else [])
    y_train = p.y0.clone().requires_grad_(True)

    def infer(which: str) -> Callable[[], object]:
        def run() -> object:
            with torch.no_grad():
                return _solve(which, func, p.y0, method, rtol)

        return run

    def train(which: str) -> Callable[[], object]:
        def run() -> object:
            _solve(which, func, y_train, method, rtol).pow(2).sum().backward()
            return None

        return run

    def zero(_: str) -> None:
        func.zero_grad(set_to_none=True)
        y_train.grad = None

    nfe_infer = {w: _evaluations(func, infer(w)) for w in peers}
    trainers = [*peers, "default"]
    nfe_train: dict[str, tuple[int, int]] = {}
    for w in trainers:
        with counted(func) as calls:
            out = _solve(w, func, y_train, method, rtol)
            forward = calls[0]
            out.pow(2).sum().backward()
        nfe_train[w] = (forward, calls[0] - forward)
    zero("")
    cases = {f"infer {w}": infer(w) for w in peers} | {f"train {w}": train(w) for w in trainers}
    timings = time_interleaved(cases, reps=reps, warmup=1, setup=zero)
    ms = {name: 1e3 * t.median(clock) for name, t in timings.items()}
    line = f"  {method:7s} rtol {rtol:.0e}  infer {ms['infer ours']:8.2f} ms  NFE {nfe_infer['ours']:5d}"
    if "theirs" in peers:
        with torch.no_grad():
            diff = (_solve("ours", func, p.y0, method, rtol) - _solve("theirs", func, p.y0, method, rtol)).abs().max()
        line += (
            f" ({nfe_infer['ours'] / nfe_infer['theirs']:.2f}× evals, "
            f"{timings['infer ours'].paired_ratio_to(timings['infer theirs'], clock):.2f}× time, |Δy| {diff:.1e})"
        )
        line += (
            f"   train {ms['train ours']:8.2f} ms NFE {nfe_train['ours'][0]}/{nfe_train['ours'][1]}"
            f" ({timings['train ours'].paired_ratio_to(timings['train theirs'], clock):.2f}× torchdiffeq's backprop,"
            f" NFE {nfe_train['theirs'][0]}/{nfe_train['theirs'][1]})"
            f"   default {ms['train default']:8.2f} ms NFE {nfe_train['default'][0]}/{nfe_train['default'][1]}"
            f" ({timings['train default'].paired_ratio_to(timings['train theirs'], clock):.2f}×)"
        )
    else:
        vs_anode = timings["train default"].paired_ratio_to(timings["train ours"], clock)
        line += (
            f" (n/a: torchdiffeq has no {method})   train {ms['train ours']:8.2f} ms"
            f"   default {ms['train default']:8.2f} ms ({vs_anode:.2f}× Anode())"
        )
    return line


def report(quick: bool, reps: int, clock: Clock, methods: Sequence[str] = METHODS) -> str:
    """Print the table row by row (flushed) and return it as text."""
    version = getattr(torchdiffeq, "__version__", "not installed")
    lines = [f"odeint against torchdiffeq {version}, one call over [0, 1], float64, {reps} reps per case"]
    if quick:
        lines.append("  (--quick: smaller batches than the full form)")
    print("\n".join(lines), flush=True)
    for p in problems(quick):
        print(p.name, flush=True)
        lines.append(p.name)
        for method in methods:
            for rtol in RTOLS:
                row = measure(p, method, rtol, reps, clock)
                print(row, flush=True)
                lines.append(row)
    return "\n".join(lines)
