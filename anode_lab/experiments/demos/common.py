"""What every demo shares: device and dtype from the spec, seeded construction, the smooth test problem of the
adaptive and reversible demos, and ``explanation.md``."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from anode_lab.experiments.artifacts import write_text
from anode_lab.experiments.context import RunContext
from anode_lab.experiments.fields import MLPField
from anode_lab.experiments.train import DTYPES, resolve_device
from anode_lab.specs.demo import DemoSpec

Number = float | int | str


def device_and_dtype(spec: DemoSpec, default: str = "float64") -> tuple[torch.device, torch.dtype]:
    return resolve_device(spec.device), DTYPES[spec.dtype or default]


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Build weights from ``seed`` without touching the caller's random stream."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


SMOOTH_DIM, SMOOTH_HIDDEN, SMOOTH_BATCH = 4, 16, 32
SMOOTH_GAIN = 2.0
"""Both weight matrices of the smooth field scaled by this: a field lively enough that dopri5 takes several steps
at loose tolerances and the midpoint adjoint's O(dt²) error stays far above rounding up to N_t = 256."""


@dataclass(frozen=True)
class SmoothProblem:
    """A seeded tanh MLP field, a batch of inputs and targets, and the loss ``½‖ODEBlock(x) − y‖² / batch``."""

    field: MLPField
    x: Tensor
    y: Tensor

    def loss(self, model: nn.Module) -> Tensor:
        out: Tensor = model(self.x)
        return 0.5 * ((out - self.y) ** 2).sum() / self.x.shape[0]


def smooth_problem(seed: int, device: torch.device, dtype: torch.dtype) -> SmoothProblem:
    """The same field, inputs and targets for a seed on every device and dtype (built in float64, then cast)."""
    with seeded(seed):
        field = MLPField(SMOOTH_DIM, SMOOTH_HIDDEN, "tanh").double()
        x = torch.randn(SMOOTH_BATCH, SMOOTH_DIM, dtype=torch.float64)
        y = torch.randn(SMOOTH_BATCH, SMOOTH_DIM, dtype=torch.float64)
    with torch.no_grad():
        for layer in field.net:
            if isinstance(layer, nn.Linear):
                layer.weight.mul_(SMOOTH_GAIN)
    return SmoothProblem(field.to(device, dtype), x.to(device, dtype), y.to(device, dtype))


def explain(ctx: RunContext, spec: DemoSpec, findings: Sequence[str], numbers: Mapping[str, Number]) -> None:
    """Write ``explanation.md``: the preset's title and paragraph, what this run found, its headline numbers and
    the artifacts beside it."""
    info = spec.info
    lines = [f"# {info.title}", "", info.explanation, "", "## What this run found", ""]
    lines += [f"- {line}" for line in findings]
    lines += ["", "## Numbers", "", "| quantity | value |", "|---|---|"]
    lines += [f"| {key} | {_fmt(value)} |" for key, value in numbers.items()]
    files = sorted(p.name for p in (ctx.workdir / "artifacts").iterdir() if p.name != "explanation.md")
    lines += ["", "## Files", "", *[f"- `{name}`" for name in files]]
    lines += ["", f"Spec: `{spec.model_dump_json(exclude_none=True)}`"]
    write_text(ctx, "explanation.md", "\n".join(lines))


def _fmt(value: Number) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
