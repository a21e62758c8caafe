"""The cost estimate of a spec (pure arithmetic, no torch) against issue 11's figures, the operator's limits, the
data folders, and against what a run really holds."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from anode_lab.specs import parse_spec
from anode_lab.specs.cost import RunLimits, SpecRefused, admit, confine_root, estimate
from anode_lab.specs.train import DATA_FILES, PRESETS

GIB = 2**30
GENEROUS = RunLimits(max_bytes=8 * GIB, max_steps=10**8)


def test_issue_11s_sweep_is_estimated_at_its_measured_34_gb() -> None:
    spec = parse_spec("compare", {"field": "mlp", "hidden": 512, "batch": 1024, "blocks": 8, "solvers": ["rk4"],
                                  "steps": [256], "dtypes": ["float64"], "timing_repeats": 1})
    assert estimate("compare", spec).bytes == pytest.approx(34e9, rel=0.05)


def test_issue_11s_training_run_is_estimated_at_75_million_training_steps() -> None:
    spec = parse_spec("train", {"dataset": "moons", "n_samples": 100000, "epochs": 1000, "batch_size": 1,
                                "probe_every": 0})
    # 75 000 training points, batch 1, 1000 epochs; one block of 2 Euler steps, forward and backward
    assert estimate("train", spec).steps == 75_000 * 1000 * 1 * 2 * 2


def test_torch_is_not_imported_to_estimate() -> None:
    import subprocess  # a fresh interpreter: this one may have imported torch for other tests

    code = ("import sys; from anode_lab.specs import parse_spec; from anode_lab.specs.cost import estimate; "
            "estimate('train', parse_spec('train', {})); print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_fits_generous_limits(name: str) -> None:
    assert admit("train", PRESETS[name], GENEROUS) == PRESETS[name]


@pytest.mark.parametrize("kind", ["train", "compare"])
def test_defaults_fit_small_limits(kind: str) -> None:
    assert admit(kind, parse_spec(kind, {}), RunLimits(max_bytes=64 * 2**20, max_steps=10**5))


def test_refusal_states_estimate_limit_and_fields() -> None:
    spec = parse_spec("compare", {"batch": 1024, "hidden": 512, "steps": [256], "solvers": ["rk4"], "blocks": 1})
    with pytest.raises(SpecRefused) as info:
        admit("compare", spec, RunLimits(max_bytes=GIB, max_steps=10**8))
    message = str(info.value)
    assert "about 4.06 GiB" in message and "allows 1 GiB per run (ANODE_MAX_RUN_BYTES)" in message, message
    assert info.value.fields[:2] == ("steps (the largest N_t)", "batch")
    with pytest.raises(SpecRefused, match=r"ANODE_MAX_RUN_STEPS\): lower `epochs`"):
        admit("train", parse_spec("train", {"epochs": 1000}), RunLimits(max_bytes=GIB, max_steps=1000))


def test_a_root_is_resolved_and_confined(tmp_path: Path) -> None:
    allowed = tmp_path / "datasets"
    (allowed / "cifar").mkdir(parents=True)
    (allowed / "out").symlink_to(tmp_path, target_is_directory=True)
    assert confine_root(str(allowed / "cifar"), (allowed,)) == allowed / "cifar"
    assert confine_root("cifar", (allowed,)) == allowed / "cifar"  # relative: under the first folder
    for bad in (str(tmp_path), str(allowed / ".." / "x"), str(allowed / "out"), "../x", "/"):
        with pytest.raises(SpecRefused, match="outside the data folders") as info:
            confine_root(bad, (allowed,))
        assert str(allowed) in str(info.value) and info.value.fields == ("root",)
    spec = parse_spec("train", {"model": "conv_ode", "dataset": "mnist", "root": "cifar/../cifar"})
    lay_out(allowed / "cifar", "mnist")
    assert admit("train", spec, RunLimits(GIB, 10**8, (allowed,))).root == str(allowed / "cifar")  # type: ignore[attr-defined]


def lay_out(root: Path, dataset: str) -> None:
    """Empty files where ``dataset``'s files go under ``root``: enough to be admitted (the worker checks MD5s)."""
    for rel in DATA_FILES[dataset]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).touch()


@pytest.mark.parametrize("method", ["direct", "anode", "adjoint"])
def test_the_estimate_is_close_to_what_a_training_step_holds(method: str) -> None:
    """What autograd and the gradient method keep for one MLP-ODE step (MemoryMeter) against the estimate's held
    part: within a factor of two either way."""
    import torch
    import torch.nn.functional as F

    from anode_core.instruments.memory import MemoryMeter
    from anode_lab.experiments.models import build_model
    from anode_lab.specs.cost import held_bytes

    spec = parse_spec("train", {"width": 64, "hidden": 256, "batch_size": 512, "dtype": "float64",
                                "ode": {"solver": "rk4", "steps": 16, "gradient": {"method": method}}})
    model = build_model(spec).double()
    x, y = torch.randn(512, 2, dtype=torch.float64), torch.randint(0, 2, (512,))
    with MemoryMeter() as meter:
        F.cross_entropy(model(x), y).backward()
    item = 8
    held = held_bytes(spec.ode.gradient, [512 * 64 * item], [512 * (64 + 256) * item], 16, 4)  # type: ignore[attr-defined]
    assert 0.5 <= meter.peak_bytes / held <= 2.0, (meter.peak_bytes, held)


@pytest.mark.parametrize("model", [{"model": "mlp_ode", "dataset": "moons"},
                                   {"model": "conv_ode", "dataset": "digits"}])
def test_the_training_estimate_grows_with_the_batch(model: dict[str, str]) -> None:
    """What a step holds is linear in ``batch_size`` on top of a fixed part (data, parameters): doubling the batch
    twice adds twice as much the second time; and a larger batch means fewer steps per epoch."""
    def cost(batch: int) -> tuple[int, int]:
        found = estimate("train", parse_spec("train", {**model, "batch_size": batch, "epochs": 4}))
        return found.bytes, found.steps

    (b1, s1), (b2, s2), (b4, s4) = cost(8), cost(16), cost(32)
    assert 0 < b2 - b1 and b4 - b2 == 2 * (b2 - b1), (b1, b2, b4)
    assert s1 > s2 > s4 > 0


def test_an_mlp_of_several_blocks_is_estimated_block_by_block() -> None:
    """Direct holds every block's graph, ANODE one graph and every block's input: three blocks triple Direct's held
    memory and the field evaluations, and add less than a third of that to ANODE's."""
    def cost(method: str, blocks: int) -> tuple[int, int]:
        spec = parse_spec("train", {"width": 64, "hidden": 256, "batch_size": 512, "blocks": blocks,
                                    "n_samples": 100_000, "probe_every": 0,
                                    "ode": {"solver": "rk4", "steps": 16, "gradient": {"method": method}}})
        found = estimate("train", spec)
        return found.bytes, found.steps

    (direct_1, steps_1), (direct_3, steps_3) = cost("direct", 1), cost("direct", 3)
    (anode_1, _), (anode_3, _) = cost("anode", 1), cost("anode", 3)
    assert steps_3 == 3 * steps_1
    assert direct_3 - direct_1 > 3 * (anode_3 - anode_1) > 0, (direct_1, direct_3, anode_1, anode_3)


@pytest.mark.parametrize(("ode", "low", "high"), [
    pytest.param({"solver": "reversible_heun", "steps": 16, "gradient": {"method": "reversible"}}, 0.5, 2.0,
                 id="reversible"),
    pytest.param({"solver": "reversible_heun", "steps": 16, "gradient": {"method": "direct"}}, 0.5, 2.0,
                 id="reversible_heun-direct"),
    pytest.param({"solver": "dopri5", "rtol": 1e-6, "gradient": {"method": "anode"}}, 0.0, 1.0, id="dopri5-anode"),
    pytest.param({"solver": "bosh3", "rtol": 1e-6, "gradient": {"method": "direct"}}, 0.0, 1.0, id="bosh3-direct"),
])
def test_adaptive_and_reversible_estimates_against_what_a_step_holds(ode: dict, low: float, high: float) -> None:
    """A reversible solve's N_t is known: within a factor of two. An adaptive one is counted at its step limit,
    a guard rather than a prediction: never below what the step holds."""
    import torch
    import torch.nn.functional as F

    from anode_core.instruments.memory import MemoryMeter
    from anode_lab.experiments.models import build_model
    from anode_lab.specs.compare import STAGES
    from anode_lab.specs.cost import held_bytes, worst_steps

    spec = parse_spec("train", {"width": 64, "hidden": 256, "batch_size": 512, "dtype": "float64", "ode": ode})
    model = build_model(spec).double()  # type: ignore[arg-type]
    x, y = torch.randn(512, 2, dtype=torch.float64), torch.randint(0, 2, (512,))
    with MemoryMeter() as meter:
        F.cross_entropy(model(x), y).backward()
    item, ode_spec = 8, spec.ode  # type: ignore[attr-defined]
    steps = worst_steps(ode_spec.solver, ode_spec.steps, ode_spec.step_limit)
    held = held_bytes(ode_spec.gradient, [512 * 64 * item], [512 * (64 + 256) * item], steps, STAGES[ode_spec.solver])
    assert low <= meter.peak_bytes / held <= high, (meter.peak_bytes, held)


def test_an_adaptive_solve_is_counted_at_its_step_limit_and_refused_naming_it() -> None:
    """No tolerance bounds the steps a solve takes (a ReLU field at weight scale 30 took 137 steps where rtol
    suggests 4): the estimate is the step limit's, whatever the tolerance, and the 422 names both."""
    def train(rtol: float, limit: int) -> dict[str, object]:
        return {"ode": {"solver": "dopri5", "rtol": rtol, "step_limit": limit}, "epochs": 200, "dtype": "float64"}

    loose, tight, short = (estimate("train", parse_spec("train", train(*knobs)))
                           for knobs in ((1e-3, 256), (1e-8, 256), (1e-8, 100)))
    assert loose == tight and 0 < short.steps < tight.steps and 0 < short.bytes < tight.bytes
    fixed = estimate("train", parse_spec("train", {"ode": {"steps": 256}, "epochs": 200, "dtype": "float64"}))
    assert tight.steps == fixed.steps  # as many solver steps as 256 fixed ones: the worst case
    with pytest.raises(SpecRefused, match=r"lower `epochs`, `max_steps`, `n_samples`, `ode.step_limit` \(an adaptive "
                       r"solve is counted at its limit\), `ode.rtol` \(raise it") as info:
        admit("train", parse_spec("train", train(1e-3, 256)), RunLimits(max_bytes=GIB, max_steps=short.steps))
    assert "ode.steps" not in info.value.fields
    sweep = parse_spec("compare", {"solvers": ["bosh3", "euler"], "tolerances": [1e-3], "step_limit": 4096,
                                   "batch": 1024, "hidden": 512, "methods": [{"method": "anode"}], "blocks": 1})
    with pytest.raises(SpecRefused) as info:
        admit("compare", sweep, RunLimits(max_bytes=GIB, max_steps=10**12))
    assert [f.split(" ")[0] for f in info.value.fields[:4]] == ["steps", "step_limit", "tolerances", "batch"]


# ------------------------------------------------------------------------ issue 20, finding 5: what a run needs
@pytest.mark.parametrize("data", [
    pytest.param({"field": "mlp", "batch": 256, "dim": 16, "hidden": 64, "blocks": 2, "steps": [16]}, id="mlp"),
    pytest.param({"field": "conv", "batch": 16, "channels": 8, "size": 16, "blocks": 2, "steps": [8]}, id="conv"),
    pytest.param({"model": "conv_ode", "batch": 64, "steps": [8]}, id="conv_ode"),
    pytest.param({"model": "resnet_ode", "batch": 8, "steps": [4]}, id="resnet_ode"),
])
def test_a_sweep_is_estimated_for_the_model_it_names(data: dict[str, object]) -> None:
    """What the sweep's Direct reference holds for backward (``MemoryMeter`` through ``measure_gradient``), which
    every cell computes, against the whole estimate: never below it, at most 2.5 times it (the estimate adds the
    parameters, their gradients and the layers between the blocks). A `model` was estimated as the default MLP."""
    import torch

    import anode_core as ac
    from anode_lab.experiments.sweep import build_problem

    spec = parse_spec("compare", {**data, "solvers": ["euler"], "timing_repeats": 1, "methods": [{"method": "direct"}]})
    cell = spec.grid()[0]  # type: ignore[attr-defined]
    model, x, y = build_problem(spec, cell, torch.device("cpu"), torch.float64)  # type: ignore[arg-type]

    def loss(m: torch.nn.Module) -> torch.Tensor:
        out = m(x)
        if y.dtype == torch.int64:
            return torch.nn.functional.cross_entropy(out, y)
        return ((out - y) ** 2).sum()

    held = ac.measure_gradient(model, loss, ac.Direct()).peak_bytes
    assert 1.0 <= estimate("compare", spec).bytes / held <= 2.5, (estimate("compare", spec).bytes, held)


def test_issue_20s_conv_sweep_is_estimated_as_the_conv_net_it_builds() -> None:
    """``model: conv_ode``, batch 1024, N_t 256 was estimated at 1.8 MiB (the default MLP) and needed > 1.8 GB."""
    spec = parse_spec("compare", {"model": "conv_ode", "batch": 1024, "solvers": ["euler"], "steps": [256]})
    assert estimate("compare", spec).bytes > 4 * GIB
    with pytest.raises(SpecRefused, match=r"ANODE_MAX_RUN_BYTES\): lower `steps` \(the largest N_t\), `batch`"):
        admit("compare", spec, RunLimits(max_bytes=2 * GIB, max_steps=10**12))


def test_issue_20s_probe_every_step_for_10_million_steps_is_refused_for_its_disk() -> None:
    spec = parse_spec("train", {"dataset": "moons", "n_samples": 100000, "epochs": 1000, "batch_size": 1,
                                "max_steps": 10_000_000, "probe_every": 1})
    assert estimate("train", spec).disk > 5 * GIB
    with pytest.raises(SpecRefused, match=r"write about 10.\d GiB to disk \(metric rows, checkpoints, artifacts\); "
                       r"this service allows 2 GiB per run \(ANODE_MAX_RUN_DISK_BYTES\): lower `max_steps`, `epochs`, "
                       r"`probe_every` \(raise it, or 0: fewer metric rows\)") as info:
        admit("train", spec, RunLimits(max_bytes=8 * GIB, max_steps=10**12, max_disk_bytes=2 * GIB))
    assert info.value.error == "cost_limit"
    assert admit("train", parse_spec("train", {}), RunLimits(GIB, 10**8, max_disk_bytes=2**20))


@pytest.mark.parametrize("spec_data", [
    pytest.param({"dataset": "moons", "n_samples": 200, "epochs": 3, "batch_size": 16, "probe_every": 2,
                  "checkpoint_every": 5}, id="probes-and-checkpoints"),
    pytest.param({"dataset": "moons", "n_samples": 200, "epochs": 2, "batch_size": 50, "probe_every": 0,
                  "optimizer": "adam"}, id="plain"),
])
def test_the_disk_estimate_covers_what_a_real_run_writes(tmp_path: Path, spec_data: dict[str, object]) -> None:
    """A real training run's metric values and files against the estimate's: the rows it counts are at least the
    values reported, and at most twice them; the bytes estimated cover the files written."""
    from anode_lab.experiments import RunContext, run_experiment
    from anode_lab.specs.cost import METRIC_ROW_BYTES, metric_rows

    spec = parse_spec("train", {**spec_data, "device": "cpu", "threads": 1})
    values: list[int] = []
    run_experiment("train", spec, RunContext(tmp_path, on_metrics=lambda step, v: values.append(len(v))))
    rows = metric_rows(spec)  # type: ignore[arg-type]
    assert sum(values) <= rows <= 2 * sum(values), (sum(values), rows)
    files = sum(p.stat().st_size for p in tmp_path.rglob("*") if p.is_file())
    assert files <= estimate("train", spec).disk - rows * METRIC_ROW_BYTES, files


def test_the_local_sets_files_are_torchvisions() -> None:
    """:data:`DATA_FILES` (torch-free, for the API) names exactly the files the loader verifies by MD5."""
    from anode_lab.experiments.data import published_md5

    for name, files in DATA_FILES.items():
        assert sorted(files) == sorted(published_md5(name)), name


def test_a_root_with_a_control_character_is_refused_naming_root() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"`root` holds a control character \(U\+0000\) at position 1"):
        parse_spec("train", {"model": "conv_ode", "dataset": "mnist", "root": "a\x00b"})


OOM_SWEEP = """
import resource, sys
from pathlib import Path
import anode_lab.experiments.sweep  # torch and the sweep loaded before the limit
from anode_lab.experiments import RunContext, run_experiment
from anode_lab.specs import parse_spec
spec = parse_spec("compare", {"field": "mlp", "batch": 1024, "dim": 256, "hidden": 512, "blocks": 1,
                              "solvers": ["dopri5"], "tolerances": [1e-3], "methods": [{"method": "direct"}],
                              "timing_repeats": 1, "threads": 1})
with open("/proc/self/status") as status:
    size = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (size + 64 * 2**20, resource.RLIM_INFINITY))
try:
    run_experiment("compare", spec, RunContext(Path(sys.argv[1])))
except BaseException as exc:
    print(type(exc).__name__, str(exc)[:300])
"""


def test_an_out_of_memory_cell_says_memory_not_step_limit(tmp_path: Path) -> None:
    """An adaptive cell whose allocation fails (64 MiB of address space for 7 stages × 1024 × 768 doubles per
    step) ends with the allocator's error, which the worker reports as memory, not as "raise `step_limit`"."""
    import subprocess

    from anode_lab.failures import is_out_of_memory

    done = subprocess.run([sys.executable, "-c", OOM_SWEEP, str(tmp_path)], capture_output=True, text=True,
                          timeout=300, check=False)
    kind, _, message = done.stdout.strip().partition(" ")
    assert kind in ("RuntimeError", "MemoryError"), done.stdout + done.stderr
    assert "step_limit" not in message
    assert is_out_of_memory(RuntimeError(message) if kind == "RuntimeError" else MemoryError(message)), message
