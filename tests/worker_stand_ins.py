"""Stand-ins for the body of a run's child process (:func:`backend.workers.child.run_child`), for tests that need
an experiment to misbehave in a way no spec can ask for. Module-level, so the worker's forkserver can import them."""

from __future__ import annotations

from typing import Any

from backend.workers.child import run_child


def _explodes(kind: str, spec: Any, ctx: Any) -> Any:
    for step in range(1, 6):
        ctx.on_metrics(step, {"train_loss": 1.0 / step})
    raise FloatingPointError("the field blew up at step 6")


def exploding_child(*args: Any) -> None:
    """Reports steps 1-5, then raises as a training step would."""
    from anode_lab import experiments

    experiments.run_experiment = _explodes
    run_child(*args)


def _hogs_memory(kind: str, spec: Any, ctx: Any) -> Any:
    import torch

    ctx.on_metrics(1, {"train_loss": 1.0})
    torch.ones(2**33 // 8, dtype=torch.float64)  # 8 GiB, touched
    raise AssertionError("the allocation above should have failed")


def memory_hog_child(*args: Any) -> None:
    """Asks for 8 GiB in one tensor."""
    from anode_lab import experiments

    experiments.run_experiment = _hogs_memory
    run_child(*args)
