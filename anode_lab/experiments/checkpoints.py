"""Resumable training checkpoints: everything a run needs to continue as if it had never stopped.

A checkpoint holds the model and optimizer states, the RNG states, and the run's position (step, epoch, batch
within the epoch; the learning-rate schedule is a function of the epoch) with the few running numbers of its
summary. Together with the seeded batch order
of :mod:`anode_lab.experiments.data`, a resumed run reports the same metrics, bit for bit on the CPU, as an
uninterrupted one. Files are written atomically (temporary file, then rename) and only the latest is kept; a
write that fails (a full disk) removes its temporary file.
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from anode_lab.specs.train import TrainSpec

FORMAT = 1
_NAME = re.compile(r"step-(\d+)\.pt")
_MAY_DIFFER = {"max_steps", "checkpoint_every", "device", "threads"}
"""Spec fields a resumed run may change: when to stop or save, and where it runs (not what is computed)."""
_ODE_MAY_DIFFER = {"step_limit"}
"""An adaptive solve's step limit only decides when a solve gives up: raising it lets a failed run resume."""


def _compared(spec: dict[str, Any]) -> dict[str, Any]:
    ode = spec.get("ode")
    if not isinstance(ode, dict):
        return spec
    return {**spec, "ode": {k: v for k, v in ode.items() if k not in _ODE_MAY_DIFFER}}


@dataclass
class Position:
    """Where a run stands, and the running numbers of its summary."""

    step: int = 0
    epoch: int = 0
    batch: int = 0
    """Batches of ``epoch`` already trained on."""
    best_test_acc: float | None = None
    seconds: float = 0.0
    last: dict[str, float] = field(default_factory=dict)
    """The latest value of every series reported so far."""


class Checkpoints:
    """The checkpoints of one run, in ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def latest(self) -> Path | None:
        found = self._all()
        return found[-1][1] if found else None

    def _all(self) -> list[tuple[int, Path]]:
        if not self.folder.is_dir():
            return []
        steps = ((_NAME.fullmatch(p.name), p) for p in self.folder.iterdir())
        return sorted((int(m.group(1)), p) for m, p in steps if m)

    def save(self, spec: TrainSpec, model: nn.Module, optimizer: torch.optim.Optimizer, position: Position) -> Path:
        """Write a checkpoint at ``position`` and delete the older ones."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"step-{position.step:09d}.pt"
        tmp = path.with_suffix(".tmp")
        state = {
            "format": FORMAT,
            "spec": spec.model_dump(mode="json"),
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
            "position": asdict(position),
        }
        buffer = io.BytesIO()
        torch.save(state, buffer)  # in memory first: a full disk then fails as an OSError (ENOSPC), not as torch's
        try:                       # zip writer's "unexpected pos"
            with tmp.open("wb") as handle:
                handle.write(buffer.getbuffer())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)  # a half-written file on a full disk would keep it full
            raise
        for _, old in self._all():
            if old != path:
                old.unlink(missing_ok=True)
        return path

    def restore(self, path: Path, spec: TrainSpec, model: nn.Module, optimizer: torch.optim.Optimizer) -> Position:
        """Load ``path`` into ``model``, ``optimizer`` and the RNGs; refuses a checkpoint of a different spec."""
        state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("format") != FORMAT:
            raise ValueError(f"checkpoint {path} has format {state.get('format')!r}, expected {FORMAT}; delete it")
        saved, now = _compared(state["spec"]), _compared(spec.model_dump(mode="json"))
        differ = sorted(k for k in now.keys() | saved.keys() if k not in _MAY_DIFFER and saved.get(k) != now.get(k))
        if differ:
            raise ValueError(
                f"the run's folder holds a checkpoint of a different spec (differs in {', '.join(differ)}): "
                f"use a fresh folder, or delete {self.folder} to start over"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng_cpu"])
        if state["rng_cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"])
        return Position(**state["position"])

    def clear(self) -> None:
        for _, path in self._all():
            path.unlink(missing_ok=True)
