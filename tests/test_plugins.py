"""Plugins: a tiny package (tests/data/tiny_plugin) pip-installed into a temporary folder, never into the shared
environment, then seen by the catalog, validated in specs, and trained end to end by a real worker."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from service_helpers import Service, submit, wait_status

from anode_lab import plugins

PACKAGE = Path(__file__).parent / "data" / "tiny_plugin"
BUILTIN_MODELS = ["mlp_ode", "conv_ode", "resnet_ode", "squeezenext_ode"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pip install --no-deps --no-build-isolation --target`` of a copy (the build leaves files beside it)."""
    root = tmp_path_factory.mktemp("plugin")
    source = shutil.copytree(PACKAGE, root / "source")
    target = root / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "--target", str(target), str(source)], check=True)
    assert (target / "tiny_ode_plugin" / "model.py").is_file()
    return target


def env_with(target: Path) -> dict[str, str]:
    path = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH", ""), str(target)) if p)
    return {"PYTHONPATH": path}


@pytest.fixture
def on_path(installed: Path) -> Iterator[Path]:
    """The plugin importable in this process for one test, and the entry points read afresh before and after."""
    sys.path.append(str(installed))
    plugins.forget()
    try:
        yield installed
    finally:
        sys.path.remove(str(installed))
        for name in [m for m in sys.modules if m == "tiny_ode_plugin" or m.startswith("tiny_ode_plugin.")]:
            del sys.modules[name]
        plugins.forget()


@pytest.mark.parametrize(
    "data,takes",
    [
        pytest.param(("points",), ["moons", "circles", "spirals", "rings"], id="points"),
        pytest.param(("images",), ["digits", "mnist", "cifar10", "cifar100"], id="images"),
        pytest.param(("images:3x32x32",), ["cifar10", "cifar100"], id="images-of-a-shape"),
        pytest.param(("images:1×8×8", "rings"), ["digits", "rings"], id="shape-and-a-plugin-set"),
        pytest.param(("no_such_set",), [], id="unknown"),
    ],
)
def test_declared_data_names_the_data_sets_a_plugin_takes(
    monkeypatch: pytest.MonkeyPatch, data: tuple[str, ...], takes: list[str]
) -> None:
    from anode_lab.specs import train

    model = plugins.ModelPlugin("m", build="pkg.model:build", data=data)
    rings = plugins.DatasetPlugin("r", load="pkg.data:load", shape=(2,), classes=3, examples=100)
    monkeypatch.setattr(train, "model_plugins", lambda: {"m": model, "mlp_ode": model})  # a built-in name is ignored
    monkeypatch.setattr(train, "dataset_plugins", lambda: {"rings": rings})
    assert train.model_datasets()["m"] == tuple(takes)
    assert train.model_datasets()["mlp_ode"] == ("moons", "circles", "spirals")
    assert (train.dataset_shape("rings"), train.dataset_classes("rings")) == ((2,), 3)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        pytest.param({"description": "d", "build": "model.py"}, "`build` must be 'module:function'", id="file"),
        pytest.param({"description": "d", "build": "m:f", "data": ()}, "`data` must name at least one", id="data"),
    ],
)
def test_declarations_are_checked(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plugins.ModelPlugin(**kwargs)  # type: ignore[arg-type]


def test_catalog_lists_the_plugin_without_importing_torch(installed: Path) -> None:
    """In a fresh interpreter, as the API process: the declarations are read, the model module is not."""
    code = ("import json, sys, backend.catalog.service as c; cat = c.catalog(); "
            "assert 'torch' not in sys.modules and 'tiny_ode_plugin.model' not in sys.modules; "
            "print(json.dumps({'models': cat['models'], 'datasets': cat['datasets']}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**os.environ, **env_with(installed)})
    listed = json.loads(done.stdout)
    models = {m["name"]: m for m in listed["models"]}
    assert list(models) == [*BUILTIN_MODELS, "tiny_ode"]
    assert models["tiny_ode"]["plugin"] is True and not models["mlp_ode"]["plugin"]
    assert models["tiny_ode"]["description"].startswith("tiny ODE classifier")
    assert models["tiny_ode"]["datasets"] == ["moons", "circles", "spirals", "xor"]  # "points": every 2-D set
    xor = next(d for d in listed["datasets"] if d["name"] == "xor")
    assert xor == {"name": "xor", "description": "XOR quadrants: the sign of x·y, 2-D points", "plugin": True,
                   "files": []}  # a generated set: no files under a root


def test_specs_name_installed_plugins_only(on_path: Path) -> None:
    from pydantic import ValidationError

    from anode_lab.specs import parse_spec

    assert parse_spec("train", {"model": "tiny_ode", "dataset": "xor"}).model == "tiny_ode"
    for name in ("nope", "tiny_ode_plugin.model:build", "tiny_ode_plugin/model.py"):
        with pytest.raises(ValidationError, match=f"model {name!r} is not installed: set `model` to one of "
                           "mlp_ode, conv_ode, resnet_ode, squeezenext_ode, tiny_ode"):
            parse_spec("train", {"model": name})
    with pytest.raises(ValidationError, match="model 'mlp_ode' cannot train on 'xor'.*or `model` to tiny_ode"):
        parse_spec("train", {"model": "mlp_ode", "dataset": "xor"})


def test_training_a_plugin_in_process_uses_the_specs_method(on_path: Path) -> None:
    """The plugin's odesolve names no method: the spec's (adjoint) applies, so the probe sees an inexact gradient."""
    from train_helpers import Recorder

    from anode_lab.experiments.train import run_train
    from anode_lab.specs import parse_spec

    spec = parse_spec("train", {"model": "tiny_ode", "dataset": "xor", "width": 4, "epochs": 1, "batch_size": 50,
                                "device": "cpu", "threads": 1, "probe_every": 1,
                                "ode": {"solver": "euler", "steps": 2, "activation": "tanh",
                                        "gradient": {"method": "adjoint"}}})
    recorder = Recorder()
    result = run_train(spec, recorder.context(on_path.parent / "run"))
    assert result.status == "succeeded", result.message
    errors = recorder.series("probe_rel_error")
    assert len(errors) == 3 and all(1e-6 < e < 1.0 for e in errors)  # 150 points, batches of 50


@pytest.mark.parametrize("model", ["tiny_ode", "mlp_ode"])
def test_a_compare_sweep_over_a_whole_model(on_path: Path, model: str) -> None:
    """Compare specs name a model too: Anode stays exact on it, the adjoint's error falls at Euler's order 1."""
    from train_helpers import Recorder

    from anode_lab.experiments.sweep import run_compare
    from anode_lab.specs import parse_spec

    spec = parse_spec("compare", {"model": model, "solvers": ["euler"], "steps": [2, 4, 8], "batch": 8,
                                  "device": "cpu", "threads": 1})
    result = run_compare(spec, Recorder().context(on_path.parent / f"compare-{model}"))
    assert result.status == "succeeded", result.message
    summary = result.summary
    assert summary["cells"] == 15 and summary["max_rel_error/anode"] <= 1e-12
    assert summary["max_rel_error/adjoint"] > 1e-3
    assert summary["slope/euler/adjoint"] == pytest.approx(-1.0, abs=0.25)


@pytest.mark.parametrize(
    "spec,message",
    [
        pytest.param({"model": "nope"}, "model 'nope' is not installed: set `model` to one of mlp_ode, conv_ode, "
                     "resnet_ode, squeezenext_ode, tiny_ode or remove it", id="missing"),
        pytest.param({"model": "tiny_ode", "dim": 3}, "`dim` shapes the synthetic field; with `model` the model "
                     "decides: remove it", id="stray-knob"),
    ],
)
def test_compare_spec_names_installed_models_only(on_path: Path, spec: dict[str, object], message: str) -> None:
    from pydantic import ValidationError

    from anode_lab.specs import parse_spec

    with pytest.raises(ValidationError) as error:
        parse_spec("compare", spec)
    assert message in error.value.errors()[0]["msg"]


@pytest.fixture(scope="module")
def service(installed: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = Service(tmp_path_factory.mktemp("plugin-service"), {**env_with(installed), "ANODE_TORCH_THREADS": "1"})
    svc.start(workers=1)
    yield svc
    svc.stop()


def test_a_train_run_with_the_plugin_succeeds_through_a_real_worker(service: Service) -> None:
    spec = {"model": "tiny_ode", "dataset": "xor", "width": 4, "epochs": 2, "batch_size": 50, "device": "cpu",
            "threads": 1}
    with httpx.Client(base_url=service.url, timeout=10) as client:
        run_id = submit(client, "train", spec)
        run = wait_status(client, run_id, {"succeeded", "failed", "diverged"}, timeout=120)
        assert run["status"] == "succeeded", (run, service.logs("worker"))
        assert run["summary"]["steps"] == 6 and 0.0 <= run["summary"]["final_test_acc"] <= 1.0
        series = set(client.get(f"/runs/{run_id}/metrics").json()["series"])
        assert {"train_loss", "test_acc", "nfe_forward"} <= series


def test_a_compare_run_with_the_plugin_succeeds_through_a_real_worker(service: Service) -> None:
    spec = {"model": "tiny_ode", "solvers": ["euler"], "steps": [2, 4], "batch": 8, "device": "cpu", "threads": 1}
    with httpx.Client(base_url=service.url, timeout=10) as client:
        run_id = submit(client, "compare", spec)
        run = wait_status(client, run_id, {"succeeded", "failed"}, timeout=120)
        assert run["status"] == "succeeded", (run, service.logs("worker"))
        assert run["summary"]["cells"] == 10 and run["summary"]["max_rel_error/anode"] <= 1e-12


def test_a_spec_naming_a_missing_model_is_422_listing_the_installed_ones(service: Service) -> None:
    with httpx.Client(base_url=service.url, timeout=10) as client:
        for name in ("vgg", "tiny_ode_plugin.model:build"):
            response = client.post("/runs", json={"kind": "train", "spec": {"model": name}})
            assert response.status_code == 422, response.text
            text = json.dumps(response.json())
            assert f"model '{name}' is not installed" in text
            assert "mlp_ode, conv_ode, resnet_ode, squeezenext_ode, tiny_ode" in text


def test_the_cost_estimate_covers_plugins(on_path: Path) -> None:
    """The declared 150 training examples in batches of 50: 3 steps an epoch, two solves of N_t = 4 each."""
    from anode_lab.specs import parse_spec
    from anode_lab.specs.cost import estimate, train_steps

    spec = parse_spec("train", {"model": "tiny_ode", "dataset": "xor", "epochs": 2, "batch_size": 50, "probe_every": 0,
                                "ode": {"steps": 4}})
    assert train_steps(spec) == 6
    cost = estimate("train", spec)
    assert cost.steps == 6 * 4 * 2 and cost.bytes > 150 * 2 * 8
