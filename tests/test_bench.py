"""The benchmark's own machinery: interleaved timing with slow cases in fewer reps, and the adaptive table's rows
on a tiny conv network (what it measures, not how fast: performance lives in ``bench/``)."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest

import anode_core as ac
from bench import adaptive_gradients
from bench.adaptive_gradients import ODEINT, ODEINT_ADJOINT, adaptive_setting, reversible_setting
from bench.measure import Network, conv_network
from bench.timing import time_interleaved


def test_fewer_drops_a_slow_case_from_the_rotation_after_its_reps() -> None:
    calls: list[str] = []
    timings = time_interleaved(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b"), "slow": lambda: calls.append("slow")},
        reps=4,
        warmup=0,
        fewer={"slow": 2},
    )
    assert {name: len(t.wall) for name, t in timings.items()} == {"a": 4, "b": 4, "slow": 2}
    assert calls.count("slow") == 2 and "slow" not in calls[6:]  # in the first two rounds of three calls


@pytest.mark.parametrize("fewer", [{"missing": 1}, {"a": 0}, {"a": 5}, {"a": True}])
def test_fewer_names_cases_and_bounds_their_reps(fewer: dict[str, int]) -> None:
    with pytest.raises(ValueError, match=r"`fewer` must map names of `cases` to a number of reps in 1…4"):
        time_interleaved({"a": lambda: None}, reps=4, warmup=0, fewer=fewer)


@pytest.fixture(scope="module")
def tiny_net() -> Network:
    return conv_network(1, 2, 4).double()


def test_adaptive_rows_anode_is_exact_and_the_adjoints_are_not(tiny_net: Network) -> None:
    found = adaptive_setting(tiny_net, 1e-3, checkpoints=2, reps=2, budget=0.0, clock="cpu")
    rows = {r.method: r for r in found.rows}
    assert set(rows) == {"Direct", "Anode", "Anode(checkpoints=2)", "Adjoint", ODEINT, ODEINT_ADJOINT}
    assert rows["Anode"].rel_grad_error <= 1e-12 and rows["Anode(checkpoints=2)"].rel_grad_error <= 1e-12
    # the same accepted steps: Anode's forward is torchdiffeq's (the controller) plus the accepted steps replayed
    # with their graph recorded and nothing saved in it (what recomputes without a parameter list), s − 1 each
    assert rows["Anode"].nfe_forward == rows[ODEINT].nfe_forward + rows["Anode"].nfe_backward
    assert rows[ODEINT].vs_odeint == 0.0 and 0 < rows[ODEINT].rel_grad_error < 1e-2
    assert rows["Adjoint"].rel_grad_error > 1e-6  # the continuous adjoint is not the gradient of the solve
    assert rows["Adjoint"].rel_grad_error == pytest.approx(rows[ODEINT_ADJOINT].rel_grad_error, rel=1e-3)
    assert rows["Anode"].peak_mib < rows["Direct"].peak_mib
    # budget 0: the slow adjoints are timed by their metered pass alone; the rest interleaved, twice each
    assert (rows["Adjoint"].reps, rows[ODEINT_ADJOINT].reps, rows["Anode"].reps) == (0, 0, 2)
    adjoint_ratio = rows[ODEINT].time_ms / rows[ODEINT_ADJOINT].time_ms
    assert rows[ODEINT].ratios == {ODEINT: 1.0, ODEINT_ADJOINT: pytest.approx(adjoint_ratio, rel=1e-12)}


@pytest.mark.parametrize("solver", [ac.ReversibleHeun(), ac.DampedLeapfrog()], ids=lambda s: s.name)
def test_reversible_rows_match_direct_with_flat_memory(tiny_net: Network, solver: ac.Solver) -> None:
    rows = {r.method: r for r in reversible_setting(tiny_net, solver, 8, reps=1, budget=0.0, clock="cpu").rows}
    assert rows["Reversible"].rel_grad_error <= 1e-10
    assert rows["Reversible"].peak_mib < rows["Anode"].peak_mib < rows["Direct"].peak_mib
    assert rows["Direct"].ratios == {"Direct": 1.0}


def test_the_adaptive_table_prints_each_settings_rows_as_it_measures_them(
    tiny_net: Network, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A long table shows its rows while it runs: each setting's rows reach stdout before the next is measured."""
    seen: list[str] = []
    measure = adaptive_gradients.reversible_setting

    def remembering(*args: object, **kwargs: object) -> object:
        seen.append(capsys.readouterr().out)  # what was printed before this setting was measured
        return measure(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(adaptive_gradients, "RTOLS", (1e-3,))
    monkeypatch.setattr(adaptive_gradients, "REVERSIBLE_SOLVERS", (ac.ReversibleHeun(),))
    monkeypatch.setattr(adaptive_gradients, "REVERSIBLE_STEPS", (4, 8))
    monkeypatch.setattr(adaptive_gradients, "reversible_setting", remembering)
    adaptive_gradients.report(tiny_net, 1, 0.0, 2, "cpu", tmp_path / "rows.csv")
    assert "dopri5 rtol=1e-03" in seen[0] and "Adjoint" in seen[0]  # the adaptive rows, before any reversible one
    assert "reversible_heun N_t=4" in seen[1] and "N_t=8" not in seen[1]


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_keep_heap_sets_glibcs_thresholds() -> None:
    # in a process of its own: the thresholds would otherwise hold for every later test in this one
    code = "from bench.timing import keep_heap; raise SystemExit(0 if keep_heap() else 1)"
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], timeout=120)
    assert done.returncode == 0  # mallopt answers 1 for each threshold it took, 0 for one it refused
