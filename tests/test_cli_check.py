"""`anode-lab check FILE.py:FACTORY`: JSON rows, table, CSV and figure, and exit code 2 for each bad input."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from anode_lab.cli import main

DATA = Path(__file__).parent / "data"
MODELS = DATA / "check_models.py"
ROW_KEYS = {"method", "rel_error", "cosine", "sign_agreement", "peak_bytes", "seconds", "nfe_forward", "nfe_backward"}


def anode_lab(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("anode-lab")
    command = [exe] if exe else [sys.executable, "-m", "anode_lab.cli"]
    return subprocess.run([*command, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_json_rows_csv_and_figure(tmp_path: Path) -> None:
    """A real subprocess, as a user types it: only the JSON list on stdout, one object per method."""
    done = anode_lab("check", f"{MODELS}:build", "--json", "--out", "out", "--methods", "anode",
                     "adjoint(reconstruct=False)", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert isinstance(rows, list)
    assert "a JSON array, one object per method" in " ".join(anode_lab("check", "--help", cwd=tmp_path).stdout.split())
    assert [r["method"] for r in rows] == ["Direct", "Anode", "Adjoint(reconstruct=False)"]
    for row in rows:
        assert ROW_KEYS <= row.keys()
        assert isinstance(row["peak_bytes"], int) and row["peak_bytes"] > 0
        assert row["seconds"] > 0 and row["nfe_forward"] == 6
    direct, anode, adjoint = rows
    assert anode["rel_error"] <= 1e-10 and anode["verdict"] == "exact"
    assert adjoint["rel_error"] > 0.05 and adjoint["sign_agreement"] < 0.97
    assert direct["peak_bytes"] > anode["peak_bytes"] > adjoint["peak_bytes"]
    with (tmp_path / "out" / "check.csv").open(newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["method"] for r in table] == [r["method"] for r in rows]
    assert float(table[2]["rel_error"]) == pytest.approx(adjoint["rel_error"], rel=1e-12)
    svg = (tmp_path / "out" / "check.svg").read_text()
    assert svg.startswith("<svg") and svg.count("<rect") == 2 * len(rows) and "Adjoint(reconstruct=False)" in svg


def test_exit_code_2_from_a_real_process(tmp_path: Path) -> None:
    done = anode_lab("check", f"{MODELS}:no_solve", "--json", cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("error: the model computed no ODE solve through anode_core; replace "
                                  "torchdiffeq.odeint with anode_core.odeint")


def test_table_has_plain_verdicts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", f"{MODELS}:build", "--out", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    verdicts = {line.split()[0]: line for line in lines[1:7]}
    auto = "Anode(checkpoints='auto')"
    assert list(verdicts) == ["Direct", "Anode", auto, "Anode(checkpoints=2)", "Adjoint", "Adjoint(reconstruct=False)"]
    assert all(" exact " in verdicts[name] for name in ("Anode", auto, "Anode(checkpoints=2)"))
    assert "opposite sign on" in verdicts["Adjoint"] or "off by" in verdicts["Adjoint"]
    assert any(line.startswith("Adjoint: reverse reconstruction error") for line in lines)


@pytest.mark.parametrize(
    "target,extra,message",
    [
        pytest.param("missing.py:build", [], "no such file: missing.py", id="missing-file"),
        pytest.param(f"{MODELS}", [], "TARGET must be FILE.py:FACTORY, e.g. my_model.py:build", id="no-factory"),
        pytest.param(f"{MODELS}:nope", [], "has no function 'nope'; it defines: LatentODE", id="missing-factory"),
        pytest.param(f"{MODELS}:not_a_triple", [], "FACTORY() must return (model, batch, loss)", id="not-a-triple"),
        pytest.param(f"{MODELS}:raises", [], "FACTORY() raised RuntimeError: no data here", id="factory-raises"),
        pytest.param(f"{MODELS}:not_scalar", ["--methods", "anode"],
                     "`loss(model, batch)` must return a scalar floating-point tensor; got shape (4, 16, 1)",
                     id="loss-not-scalar"),
        pytest.param(f"{MODELS}:no_solve", [], "the model computed no ODE solve through anode_core; replace "
                     "torchdiffeq.odeint with anode_core.odeint", id="no-solve"),
        pytest.param(f"{MODELS}:build", ["--methods", "anode(slots=2)"],
                     "--methods 'anode(slots=2)': gradient 'anode' takes the options checkpoints", id="bad-knob"),
        pytest.param(f"{MODELS}:build", ["--methods", "newton"], "`gradient` must be one of direct, anode",
                     id="bad-method"),
        pytest.param(f"{MODELS}:build", ["--device", "abacus"], "--device must be cpu, cuda or cuda:N", id="device"),
    ],
)
def test_bad_input_exits_2_with_its_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], target: str, extra: list[str], message: str
) -> None:
    assert main(["check", target, "--out", str(tmp_path / "out"), *extra]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and message in captured.err, captured.err
    assert captured.out == ""
    assert not (tmp_path / "out").exists()


def test_a_file_that_fails_to_import_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "broken.py").write_text("import no_such_module_here\n")
    assert main(["check", f"{tmp_path / 'broken.py'}:build"]) == 2
    err = capsys.readouterr().err
    assert "importing" in err and "ModuleNotFoundError: No module named 'no_such_module_here'" in err, err
