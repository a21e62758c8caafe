"""Experiments (torch only): models, data, training runs, gradient sweeps and teaching demos."""

from __future__ import annotations

from pydantic import BaseModel

from anode_lab.experiments.context import RunContext, RunResult


def run_experiment(kind: str, spec: BaseModel, ctx: RunContext) -> RunResult:
    """Run a validated spec of ``kind`` ("train", "compare" or "demo")."""
    if kind == "train":
        from anode_lab.experiments.train import run_train

        return run_train(spec, ctx)  # type: ignore[arg-type]
    if kind == "compare":
        from anode_lab.experiments.sweep import run_compare

        return run_compare(spec, ctx)  # type: ignore[arg-type]
    if kind == "demo":
        from anode_lab.experiments.demos import run_demo

        return run_demo(spec, ctx)  # type: ignore[arg-type]
    raise ValueError(f"`kind` must be one of train, compare, demo; got {kind!r}")


__all__ = ["RunContext", "RunResult", "run_experiment"]
