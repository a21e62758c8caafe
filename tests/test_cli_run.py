"""`anode-lab run` and `anode-lab specs` end to end, as a user types them (a real subprocess each)."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from anode_lab.run import MetricsFile
from anode_lab.specs import parse_spec
from anode_lab.specs.train import PRESETS

TINY = {"n_samples": 48, "width": 4, "hidden": 8, "epochs": 2, "batch_size": 12, "device": "cpu", "threads": 1,
        "probe_every": 2}


def anode_lab(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("anode-lab")
    command = [exe] if exe else [sys.executable, "-m", "anode_lab.cli"]
    return subprocess.run([*command, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_run_writes_metrics_spec_and_environment(tmp_path: Path) -> None:
    spec_file = tmp_path / "tiny.yaml"
    spec_file.write_text(yaml.safe_dump({"kind": "train", "name": "tiny", "spec": TINY}))
    done = anode_lab("run", str(spec_file), "--out", "out", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "out"
    assert str(out.resolve()) in done.stdout and "succeeded" in done.stdout
    rows = _rows(out / "metrics.csv")
    assert list(rows[0]) == ["step", "series", "value"]
    steps = sorted({int(r["step"]) for r in rows if r["series"] == "train_loss"})
    assert steps == [1, 2, 3, 4, 5, 6]  # 36 training points in batches of 12, two epochs
    assert [float(r["value"]) for r in rows if r["series"] == "epoch"] == [1.0, 2.0]
    assert {r["series"] for r in rows} >= {"train_loss", "test_acc", "probe_rel_error", "nfe_forward"}
    assert len(rows) == len({(r["step"], r["series"]) for r in rows})
    spec = json.loads((out / "spec.json").read_text())
    assert spec["kind"] == "train" and spec["name"] == "tiny"
    assert parse_spec("train", spec["spec"]) == parse_spec("train", TINY)
    env = json.loads((out / "environment.json").read_text())
    assert (env["seed"], env["device"], env["threads"]) == (0, "cpu", 1)
    assert env["torch"] and env["python"] and env["anode_lab"]
    assert json.loads((out / "result.json").read_text())["status"] == "succeeded"
    assert (out / "artifacts" / "model.pt").is_file()


def test_bare_spec_with_kind_and_default_folder(tmp_path: Path) -> None:
    (tmp_path / "bare.json").write_text(json.dumps({**TINY, "max_steps": 1, "probe_every": 0}))
    done = anode_lab("run", "bare.json", "--kind", "train", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (folder,) = (tmp_path / "runs").iterdir()
    assert folder.name.startswith("train-") and (folder / "metrics.csv").is_file()


def test_bad_spec_exits_2_naming_every_field(tmp_path: Path) -> None:
    spec_file = tmp_path / "bad.yaml"
    bad = {**TINY, "model": "resnet_ode", "ode": {"steps": 0}, "lr": -1, "colour": "red"}
    spec_file.write_text(yaml.safe_dump({"kind": "train", "spec": bad}))
    done = anode_lab("run", str(spec_file), "--out", "out", cwd=tmp_path)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    for line in ("spec.dataset: model 'resnet_ode' cannot train on 'moons': set `dataset` to one of cifar10",
                 "spec.ode.steps: Input should be greater than or equal to 1 (got 0)",
                 "spec.lr: Input should be greater than 0 (got -1)",
                 "spec.colour: unknown field; remove it or check its spelling"):
        assert line in done.stderr, done.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        pytest.param({"spec": TINY}, (), "add `kind: train`", id="no-kind"),
        pytest.param({"kind": "train", "spec": TINY}, ("--kind", "demo"), "drop one of them", id="kinds-disagree"),
        pytest.param({"kind": "train", "spec": TINY, "extra": 1}, (), "unknown top-level keys extra", id="top-level"),
        pytest.param([1, 2], (), "expected a mapping", id="not-a-mapping"),
    ],
)
def test_unusable_spec_files_are_refused_with_the_fix(
    tmp_path: Path, content: object, args: tuple[str, ...], message: str
) -> None:
    from anode_lab.specfile import SpecFileError, load_spec_file

    path = tmp_path / "f.yaml"
    path.write_text(yaml.safe_dump(content))
    with pytest.raises(SpecFileError) as info:
        load_spec_file(path, args[1] if args else None)
    assert message in str(info.value)


def test_missing_data_exits_1_with_the_fix(tmp_path: Path) -> None:
    spec = {"model": "conv_ode", "dataset": "cifar10", "root": "data", "device": "cpu", "threads": 1}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"kind": "train", "spec": spec}))
    done = anode_lab("run", "c.yaml", "--out", "out", cwd=tmp_path)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "cifar-10-batches-py" in done.stderr and "download=True" in done.stderr


def test_specs_prints_runnable_presets(tmp_path: Path) -> None:
    done = anode_lab("specs", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    docs = [d for d in yaml.safe_load_all(done.stdout) if d]
    train = {json.dumps(d["spec"], sort_keys=True) for d in docs if d["kind"] == "train"}
    assert train == {json.dumps(p.model_dump(mode="json", exclude_none=True), sort_keys=True)
                     for p in PRESETS.values()}
    one = anode_lab("specs", "digits-anode", cwd=tmp_path)
    assert parse_spec("train", yaml.safe_load(one.stdout)["spec"]) == PRESETS["digits-anode"]
    unknown = anode_lab("specs", "no-such-preset", cwd=tmp_path)
    assert unknown.returncode == 2 and "digits-anode" in unknown.stderr


def test_metrics_file_keeps_one_row_per_step_and_series_across_a_resume(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    first = MetricsFile(path)
    first.add(1, {"train_loss": 0.5, "lr": 0.1})
    first.add(2, {"train_loss": 0.25})
    first.close()
    resumed = MetricsFile(path)
    resumed.add(2, {"train_loss": 0.25})  # a resumed run repeats the steps after its checkpoint
    resumed.add(3, {"train_loss": 0.125, "nfe_forward": 4})
    resumed.close()
    assert [(r["step"], r["series"], r["value"]) for r in _rows(path)] == [
        ("1", "train_loss", "0.5"), ("1", "lr", "0.1"), ("2", "train_loss", "0.25"),
        ("3", "train_loss", "0.125"), ("3", "nfe_forward", "4")]


SWEEP = {"solvers": ["dopri5", "reversible_heun"], "steps": [2, 4], "tolerances": [1e-3, 1e-6],
         "methods": [{"method": "anode"}, {"method": "adjoint"}, {"method": "reversible"}], "dim": 3, "hidden": 8,
         "batch": 4, "blocks": 2, "timing_repeats": 1, "device": "cpu", "threads": 1}


def test_run_sweeps_adaptive_and_reversible_solvers_and_trains_on_one(tmp_path: Path) -> None:
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump({"kind": "compare", "spec": SWEEP}))
    done = anode_lab("run", "sweep.yaml", "--out", "sweep", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = _rows(tmp_path / "sweep" / "artifacts" / "results.csv")
    assert [(r["solver"], r["rtol"] or r["steps"], r["method"]) for r in rows] == [
        ("dopri5", "0.001", "anode"), ("dopri5", "0.001", "adjoint"), ("dopri5", "1e-06", "anode"),
        ("dopri5", "1e-06", "adjoint"), ("reversible_heun", "2", "anode"), ("reversible_heun", "2", "reversible"),
        ("reversible_heun", "4", "anode"), ("reversible_heun", "4", "reversible"),
    ]
    assert "slope/dopri5/adjoint" in done.stdout
    train = {**TINY, "ode": {"solver": "bosh3", "rtol": 1e-4, "gradient": {"method": "adjoint"}}}
    (tmp_path / "train.yaml").write_text(yaml.safe_dump({"kind": "train", "spec": train}))
    done = anode_lab("run", "train.yaml", "--out", "train", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    series = {r["series"] for r in _rows(tmp_path / "train" / "metrics.csv")}
    assert {"train_loss", "test_acc", "probe_rel_error", "nfe_forward"} <= series


def test_a_sweep_past_its_step_limit_exits_1_naming_the_cell_and_the_fix(tmp_path: Path) -> None:
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump({"kind": "compare", "spec": {**SWEEP, "step_limit": 2}}))
    done = anode_lab("run", "sweep.yaml", "--out", "out", cwd=tmp_path)
    assert done.returncode == 1
    assert "\nerror: cell 1 (dopri5 rtol=0.001 adjoint, float64 relu weight scale 1) failed: the adjoint's " \
        "backward solve (time reversed, s = −t): dopri5 reached max_steps=2 trial steps" in done.stderr, done.stderr
    # the anode cell before it fits in two steps, and so does the adjoint's forward solve: its backward does not
    assert "Traceback" not in done.stderr
    assert "raise `step_limit` (now 2)" in done.stderr
    assert [r["method"] for r in _rows(tmp_path / "out" / "artifacts" / "results.csv")] == ["anode"]


def test_info_lists_every_solver_and_method(tmp_path: Path) -> None:
    done = anode_lab("info", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    from anode_core import ALL_SOLVERS

    assert f"solvers:   {', '.join(ALL_SOLVERS)}\n" in done.stdout
    assert {"euler", "rk4", "dopri5", "tsit5", "dopri8", "implicit_euler", "explicit_adams"} <= set(ALL_SOLVERS)
    assert "gradients: direct, anode, adjoint, reversible" in done.stdout
