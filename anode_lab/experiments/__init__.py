"""Experiments (torch only): models, data, training runs, gradient sweeps and teaching demos."""

from __future__ import annotations

from pydantic import BaseModel

from anode_lab.experiments.context import RunContext, RunResult
from anode_lab.specs import SPECS, CompareSpec, DemoSpec, TrainSpec


def run_experiment(kind: str, spec: BaseModel, ctx: RunContext) -> RunResult:
    """Run a validated spec of ``kind`` ("train", "compare" or "demo")."""
    if kind == "train" and isinstance(spec, TrainSpec):
        from anode_lab.experiments.train import run_train

        return run_train(spec, ctx)
    if kind == "compare" and isinstance(spec, CompareSpec):
        from anode_lab.experiments.sweep import run_compare

        return run_compare(spec, ctx)
    if kind == "demo" and isinstance(spec, DemoSpec):
        from anode_lab.experiments.demos import run_demo

        return run_demo(spec, ctx)
    if kind not in SPECS:
        raise ValueError(f"`kind` must be one of train, compare, demo; got {kind!r}")
    raise TypeError(f"a {kind} run needs a {SPECS[kind].__name__}; got a {type(spec).__name__}")


__all__ = ["RunContext", "RunResult", "run_experiment"]
