"""``Anode(checkpoints=c)`` reverses each block with the optimal binomial schedule (Griewank & Walther, ACM TOMS
26(1), 2000) and still returns Direct's gradient.

The optimum is the dynamic program over schedules of this kind, written here independently of the library: to
reverse ``n`` steps from a held start with ``c`` free slots, advance ``m`` steps, store that state, reverse the
right part with ``c − 1`` slots, then the left part with ``c``; with no slot, replay every step from the start.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest
from helpers import assert_rel_close, loss_of, ode_chain

import anode_core as ac
from anode_core.gradients.revolve import Free, Reverse, Store, advanced_steps, binomial_schedule
from dashboard import charts

MAX_N, MAX_C = 256, 8
REVOLVE_RTOL = 1e-14  # float64; the parameter gradients are summed step by step in another order than Direct's


@cache
def optimal_advances() -> list[list[int]]:
    """``table[c][n]``: the fewest steps advanced without a graph to reverse ``n`` steps with ``c`` free slots."""
    table = [[n * (n - 1) // 2 for n in range(MAX_N + 1)]]
    for _ in range(MAX_C):
        fewer, row = table[-1], [0, 0]
        for n in range(2, MAX_N + 1):
            row.append(min(m + fewer[n - m] + row[m] for m in range(1, n)))
        table.append(row)
    return table


def schedule_cost(n: int, c: int) -> int:
    """Steps the schedule advances without a graph, checking on the way that it is a valid reversal."""
    held, reversed_steps, advanced = {0}, [], 0
    for action in binomial_schedule(n, c):
        match action:
            case Store(source, target):
                assert source in held and source < target < n and len(held) <= c, action
                held.add(target)
                advanced += target - source
            case Reverse(source, step):
                assert source in held and source <= step, action
                reversed_steps.append(step)
                advanced += step - source
            case Free(point):
                held.remove(point)
    assert reversed_steps == list(range(n - 1, -1, -1)) and held == {0}
    return advanced


@pytest.mark.parametrize("c", range(MAX_C + 1), ids=lambda c: f"c{c}")
def test_schedule_is_optimal_for_every_n(c: int) -> None:
    best = optimal_advances()[c]
    worse = {n: (schedule_cost(n, c), best[n]) for n in range(1, MAX_N + 1) if schedule_cost(n, c) != best[n]}
    assert not worse, f"(schedule, optimum) differ at N_t = {worse}"
    assert [advanced_steps(n, c) for n in range(1, MAX_N + 1)] == best[1:]


def test_the_reported_worst_case_is_fixed() -> None:
    """Issue 15: the smallest-left-segment split advanced 132 steps at N = 56, c = 8 (188 evaluations in backward,
    19 % over the optimum's 158)."""
    assert advanced_steps(56, 8) == optimal_advances()[8][56] == 102


def backward_cases() -> list[object]:
    """Every N_t ≤ 24 for every c ≤ 8, and for c ≥ 1 the long blocks up to 256 where splits are deep."""
    cases = [(n, c) for c in range(MAX_C + 1) for n in range(1, 25)]
    cases += [(n, c) for c in range(1, MAX_C + 1) for n in (55, 56, 57, 100, 255, 256)]
    return [pytest.param(n, c, id=f"N{n}-c{c}") for n, c in cases]


@pytest.mark.parametrize("n,c", backward_cases())
def test_backward_makes_the_optimal_number_of_evaluations(n: int, c: int) -> None:
    model, x = ode_chain("mlp", 1, solver=ac.Euler(), steps=n)
    direct = ac.measure_gradient(model, lambda m: loss_of(m(x)), ac.Direct())
    revolve = ac.measure_gradient(model, lambda m: loss_of(m(x)), ac.Anode(checkpoints=c))
    assert revolve.nfe_forward == n
    assert revolve.nfe_backward == optimal_advances()[c][n] + n  # advances, then every step once with its graph
    assert_rel_close(revolve.grads, direct.grads, rtol=REVOLVE_RTOL)


@pytest.mark.parametrize("solver", [pytest.param(ac.Heun(), id="heun"), pytest.param(ac.RK4(), id="rk4")])
def test_every_stage_is_counted(solver: ac.Solver) -> None:
    model, x = ode_chain("mlp", 2, solver=solver, steps=20)
    m = ac.measure_gradient(model, lambda m: loss_of(m(x)), ac.Anode(checkpoints=3))
    assert m.nfe_backward == 2 * solver.stages * (optimal_advances()[3][20] + 20)


@pytest.mark.parametrize("c", charts.CHECKPOINT_BUDGETS, ids=lambda c: f"c{c}")
def test_dashboard_cost_curve_is_the_optimum(c: int) -> None:
    """The Gradient lab's torch-free count (the dashboard cannot import anode_core) is the same optimum."""
    best = optimal_advances()[c]
    assert [charts.revolve_evaluations(n, c) for n in range(1, MAX_N + 1)] == [best[n] + n for n in range(1, MAX_N + 1)]


def test_checkpoint_cost_figure_has_one_line_per_budget() -> None:
    fig = charts.checkpoint_cost_figure(max_steps=64, budgets=(1, 4))
    assert [t.name for t in fig.data] == [charts.AUTO_LINE, "c = 1", "c = 4"]
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.type == "log"
    assert list(fig.data[2].y[:5]) == [1, 3, 5, 7, 9]  # 2·N_t − 1 up to c + 1 steps: one sweep without graph, one with
    assert fig.data[1].y[-1] == optimal_advances()[1][64] + 64


def test_readme_table_is_the_optimum() -> None:
    """The README's table of backward evaluations is the computed optimum, not pasted numbers gone stale."""
    lines = (Path(__file__).parents[1] / "README.md").read_text().splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| checkpoints \\ N_t"))
    steps = [int(cell) for cell in lines[header].strip("|").split("|")[1:]]
    rows = {}
    for line in lines[header + 2:]:
        if not line.startswith("|"):
            break
        name, *cells = (cell.strip() for cell in line.strip("|").split("|"))
        rows[name] = [int(cell) for cell in cells]
    assert rows.pop("none (whole block)") == steps
    assert rows == {str(c): [charts.revolve_evaluations(n, c) for n in steps] for c in (0, 1, 2, 4, 8)}
