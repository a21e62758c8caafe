"""What every demo shares: device and dtype from the spec, seeded construction, and ``explanation.md``."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch

from anode_lab.experiments.artifacts import write_text
from anode_lab.experiments.context import RunContext
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
