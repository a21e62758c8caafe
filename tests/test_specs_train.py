"""TrainSpec: good specs pass, every bad one is refused naming its field and the fix, presets are runnable."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from pydantic import ValidationError

from anode_lab.specfile import preset_yaml
from anode_lab.specs import parse_spec
from anode_lab.specs.train import DESCRIPTIONS, GROUP_PRESETS, PRESETS, TrainSpec

GOOD = [
    pytest.param({}, id="defaults"),
    pytest.param({"model": "mlp_ode", "dataset": "spirals", "noise": 0.3, "n_samples": 64, "hidden": 8}, id="spirals"),
    pytest.param({"model": "conv_ode", "dataset": "digits", "norm": "group"}, id="digits"),
    pytest.param({"model": "conv_ode", "dataset": "mnist", "root": "/data"}, id="mnist"),
    pytest.param({"model": "resnet_ode", "dataset": "cifar100", "root": "/data", "augment": True}, id="resnet"),
    pytest.param({"model": "squeezenext_ode", "dataset": "cifar10", "root": "/data"}, id="squeezenext"),
    pytest.param({"optimizer": "adam", "lr": 1e-3, "schedule": "constant"}, id="adam"),
    pytest.param({"ode": {"solver": "rk4", "steps": 8, "gradient": {"method": "anode", "checkpoints": 2}}},
                 id="anode-revolve"),
    pytest.param({"ode": {"gradient": {"method": "adjoint", "reconstruct": False}}, "probe_every": 1}, id="adjoint"),
    pytest.param({"dtype": "float64", "checkpoint_every": 5, "max_steps": 7, "seed": 2**32 - 1}, id="limits"),
    pytest.param({"ode": {"solver": "dopri5"}}, id="dopri5-defaults"),
    pytest.param({"ode": {"solver": "bosh3", "rtol": 1e-6, "atol": 1e-8, "step_limit": 500,
                          "gradient": {"method": "adjoint"}}, "dtype": "float64"}, id="bosh3-adjoint"),
    pytest.param({"ode": {"solver": "dopri5", "gradient": {"method": "anode", "checkpoints": 3}}}, id="dopri5-revolve"),
    pytest.param({"ode": {"solver": "reversible_heun", "steps": 16, "gradient": {"method": "reversible"}}},
                 id="reversible"),
]

BAD = [
    pytest.param({"model": "mlp_ode", "dataset": "digits"}, ("dataset",), "set `dataset` to one of moons",
                 id="mlp-on-images"),
    pytest.param({"model": "resnet_ode", "dataset": "digits"}, ("dataset",), "cifar10", id="resnet-on-8x8"),
    pytest.param({"model": "squeezenext_ode", "dataset": "mnist", "root": "/d"}, ("dataset",), "cifar10",
                 id="squeezenext-on-28x28"),
    pytest.param({"model": "conv_ode", "dataset": "moons"}, ("dataset",), "`model` to mlp_ode", id="conv-on-points"),
    pytest.param({"model": "conv_ode", "dataset": "digits", "noise": 0.1}, ("noise",), "remove it", id="noise-images"),
    pytest.param({"model": "conv_ode", "dataset": "digits", "n_samples": 100}, ("n_samples",), "remove it",
                 id="size-images"),
    pytest.param({"model": "conv_ode", "dataset": "mnist"}, ("root",), "set `root`", id="root-missing"),
    pytest.param({"root": "/data"}, ("root",), "remove it", id="root-for-moons"),
    pytest.param({"model": "conv_ode", "dataset": "digits", "hidden": 8}, ("hidden",), "mlp_ode", id="hidden-conv"),
    pytest.param({"norm": "batch"}, ("norm",), "remove it", id="norm-mlp"),
    pytest.param({"optimizer": "adam", "momentum": 0.9}, ("momentum",), "sgd", id="momentum-adam"),
    pytest.param({"augment": True}, ("augment",), "set it to false", id="augment-moons"),
    pytest.param({"epochs": 0}, ("epochs",), "greater than or equal to 1", id="epochs-0"),
    pytest.param({"epochs": 5000}, ("epochs",), "less than or equal to 1000", id="epochs-huge"),
    pytest.param({"batch_size": 10**6}, ("batch_size",), "less than or equal to 4096", id="batch-huge"),
    pytest.param({"lr": 0.0}, ("lr",), "greater than 0", id="lr-0"),
    pytest.param({"n_samples": 10**7}, ("n_samples",), "less than or equal", id="points-huge"),
    pytest.param({"ode": {"steps": 0}}, ("ode", "steps"), "greater than or equal to 1", id="steps-0"),
    pytest.param({"ode": {"solver": "dopri9"}}, ("ode", "solver"), "'euler'", id="solver-unknown"),
    pytest.param({"ode": {"gradient": {"method": "adjoint", "checkpoints": 2}}}, ("ode", "gradient"),
                 "`checkpoints` applies to method 'anode' only", id="checkpoints-adjoint"),
    pytest.param({"model": "vgg"}, ("model",), "set `model` to one of mlp_ode, conv_ode", id="model-unknown"),
    pytest.param({"device": "tpu"}, ("device",), "'cuda'", id="device-unknown"),
    pytest.param({"learning_rate": 0.1}, ("learning_rate",), "Extra inputs are not permitted", id="typo"),
    pytest.param({"probe_every": -1}, ("probe_every",), "greater than or equal to 0", id="probe-negative"),
    pytest.param({"model": "conv_ode", "dataset": "digits", "blocks": 3}, ("blocks",),
                 "`blocks` applies to model 'mlp_ode' only", id="blocks-conv"),
    pytest.param({"blocks": 0}, ("blocks",), "greater than or equal to 1", id="blocks-0"),
    pytest.param({"threads": 0}, ("threads",), "greater than or equal to 1", id="threads-0"),
    pytest.param({"ode": {"solver": "dopri5", "steps": 8}}, ("ode",), "remove `steps` (bound them with `step_limit`)",
                 id="steps-adaptive"),
    pytest.param({"ode": {"rtol": 1e-4}}, ("ode",), "set `solver` to dopri5 or bosh3", id="rtol-fixed"),
    pytest.param({"ode": {"solver": "dopri5", "rtol": 1.0}}, ("ode", "rtol"), "less than or equal to 0.1",
                 id="rtol-huge"),
    pytest.param({"ode": {"solver": "dopri5", "atol": 0.0}}, ("ode", "atol"), "greater than or equal to 0.000000000001",
                 id="atol-0"),
    pytest.param({"ode": {"solver": "dopri5", "step_limit": 10**6}}, ("ode", "step_limit"), "less than or equal",
                 id="step-limit-huge"),
    pytest.param({"ode": {"solver": "dopri5", "rtol": 1e-8}}, ("dtype",), "`dtype` to float64", id="rtol-float32"),
    pytest.param({"ode": {"gradient": {"method": "reversible"}}}, ("ode",),
                 "a solver of kind reversible (reversible_heun, alf)", id="reversible-on-euler"),
    pytest.param({"ode": {"solver": "reversible_heun", "gradient": {"method": "adjoint"}}}, ("ode",),
                 "or method 'reversible' with this solver", id="adjoint-on-reversible"),
    pytest.param({"ode": {"solver": "dopri5", "gradient": {"method": "adjoint", "reconstruct": False}}}, ("ode",),
                 "or method 'adjoint' with this solver", id="stored-adjoint-adaptive"),
]


@pytest.mark.parametrize("fields", GOOD)
def test_good_specs_validate_and_round_trip(fields: dict) -> None:
    spec = TrainSpec.model_validate(fields)
    assert TrainSpec.model_validate(spec.model_dump(mode="json")) == spec
    assert TrainSpec.model_validate(spec.model_dump(mode="json", exclude_none=True)) == spec


@pytest.mark.parametrize(("fields", "loc", "fix"), BAD)
def test_bad_spec_names_the_field_and_the_fix(fields: dict, loc: tuple[str, ...], fix: str) -> None:
    with pytest.raises(ValidationError) as info:
        TrainSpec.model_validate(fields)
    errors = info.value.errors()
    assert [e["loc"] for e in errors] == [loc]
    assert fix in errors[0]["msg"]


def test_every_wrong_field_is_reported_at_once() -> None:
    with pytest.raises(ValidationError) as info:
        TrainSpec.model_validate({"model": "resnet_ode", "dataset": "moons", "epochs": 0, "ode": {"steps": 0}})
    assert {e["loc"] for e in info.value.errors()} == {("dataset",), ("epochs",), ("ode", "steps")}


def test_an_adaptive_spec_says_what_runs() -> None:
    """Left-out tolerances are filled in, so the stored spec names the rtol, atol and step limit that ran; a
    fixed-step spec carries none of them."""
    ode = TrainSpec.model_validate({"ode": {"solver": "dopri5"}}).ode
    assert (ode.steps, ode.rtol, ode.atol, ode.step_limit) == (None, 1e-3, 1e-5, 1000)
    assert ode.solver_knobs() == {"rtol": 1e-3, "atol": 1e-5, "max_steps": 1000}
    assert TrainSpec().ode.solver_knobs() == {}


def test_spec_is_frozen() -> None:
    spec = TrainSpec()
    with pytest.raises(ValidationError, match="frozen"):
        spec.lr = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("epochs", "schedule", "expected"),
    [(350, "step", [150, 250]), (12, "step", [5, 9]), (1, "step", [1]), (40, "constant", [])],
)
def test_step_schedule_scales_the_papers_milestones(epochs: int, schedule: str, expected: list[int]) -> None:
    assert TrainSpec(epochs=epochs, schedule=schedule).milestones() == expected


@pytest.mark.parametrize(("epoch", "expected"), [(0, 0.1), (149, 0.1), (150, 0.01), (249, 0.01), (250, 0.001)])
def test_lr_at_follows_the_step_schedule(epoch: int, expected: float) -> None:
    assert TrainSpec(epochs=350, lr=0.1).lr_at(epoch) == pytest.approx(expected, rel=1e-12)


def test_effective_defaults_of_optional_knobs() -> None:
    spec = TrainSpec()
    assert (spec.points, spec.point_noise, spec.field_hidden, spec.field_norm, spec.sgd_momentum) == (
        1000, 0.1, 32, "batch", 0.9)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_yaml_is_a_runnable_spec_file(name: str) -> None:
    text = preset_yaml(name, "train", DESCRIPTIONS[name], PRESETS[name])
    doc = yaml.safe_load(text)
    assert doc["kind"] == "train"
    assert parse_spec("train", doc["spec"]) == PRESETS[name]


def test_required_presets_match_the_brief() -> None:
    digits = PRESETS["digits-anode"]
    assert (digits.model, digits.dataset, digits.ode.solver, digits.ode.steps, digits.ode.gradient.method) == (
        "conv_ode", "digits", "euler", 2, "anode")
    assert PRESETS["moons-adjoint"].ode.gradient.method == "adjoint"
    for net, model in (("resnet", "resnet_ode"), ("squeezenext", "squeezenext_ode")):
        paper = PRESETS[f"cifar10-{net}-anode"]
        assert (paper.model, paper.dataset, paper.epochs, paper.augment, paper.milestones()) == (
            model, "cifar10", 350, True, [150, 250])
        assert (paper.batch_size, paper.lr, paper.sgd_momentum, paper.weight_decay) == (256, 0.1, 0.9, 5e-4)
        for method in ("adjoint", "direct"):  # the same run but for the gradient method, seed included
            other = PRESETS[f"cifar10-{net}-{method}"]
            assert other.ode.gradient.method == method
            assert other.model_copy(update={"ode": paper.ode}) == paper
        group = GROUP_PRESETS[f"cifar10-{net}-paper"]  # a POST /groups body giving exactly those three runs
        for entry in group["methods"]:
            spec = {**group["spec"], "ode": {**group["spec"]["ode"], "gradient": entry}}
            assert parse_spec("train", spec) == PRESETS[f"cifar10-{net}-{entry['method']}"]
    assert set(DESCRIPTIONS) == set(PRESETS)


def test_the_catalog_lists_the_side_by_side_presets() -> None:
    """Every group preset is in ``GET /catalog`` as the ``POST /groups`` body it is, and each of its runs is a
    valid spec (the CIFAR trios' and the spirals trio's)."""
    from backend.catalog.service import catalog

    listed = {g["name"]: g["body"] for g in catalog()["group_presets"]}
    assert listed == GROUP_PRESETS and "spirals-side-by-side" in listed
    for body in listed.values():
        for entry in body["methods"]:
            parse_spec("train", {**body["spec"], "ode": {**body["spec"]["ode"], "gradient": entry}})


def test_specs_import_without_torch() -> None:
    code = "import sys, anode_lab.specs; assert 'torch' not in sys.modules, sorted(sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
