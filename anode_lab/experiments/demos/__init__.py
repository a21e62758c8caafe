"""Teaching demos: each preset of :data:`anode_lab.specs.demo.DEMOS` reproduces one failure mode of the
continuous adjoint (Chen et al., NeurIPS 2018) that ANODE (Gholami, Keutzer & Biros, IJCAI 2019,
arXiv:1902.10298) avoids, writes the data of its pictures (CSV, JSON, PNG) and an ``explanation.md``, and
returns a few headline numbers as its summary. One module per preset; all are small enough for a CPU.
"""

from __future__ import annotations

import importlib

from anode_lab.experiments.context import RunContext, RunResult
from anode_lab.experiments.threads import torch_threads
from anode_lab.specs.demo import DEMOS, DemoSpec

__all__ = ["run_demo"]


def run_demo(spec: DemoSpec, ctx: RunContext) -> RunResult:
    """Run the preset ``spec.name`` with the knobs of ``spec``; artifacts go to ``ctx.artifact_path``."""
    if spec.name not in DEMOS:  # a DemoSpec cannot hold another name; this guards hand-built objects
        raise ValueError(f"`name` must be one of {', '.join(DEMOS)}; got {spec.name!r}")
    module = importlib.import_module(f"{__name__}.{spec.name.replace('-', '_')}")
    with torch_threads(spec.threads):
        result: RunResult = module.run(spec, ctx)
    return result
