"""Facts with one home, and the mirrors that cannot import it, checked against it.

The dashboard ships alone (``docker/dashboard.Dockerfile`` copies only ``dashboard/``), so it keeps its own
tables of run statuses and solver orders; these tests hold them to the run-status enum and the solver table.
"""

from __future__ import annotations

from anode_lab.specs.common import SOLVERS
from anode_lab.status import ACTIVE, FINISHED, RunStatus
from dashboard import charts, tables


def test_the_status_groups_cover_every_status_once() -> None:
    assert sorted(ACTIVE + FINISHED) == sorted(RunStatus)
    assert not set(ACTIVE) & set(FINISHED)


def test_the_dashboards_statuses_are_the_enum() -> None:
    assert tables.ACTIVE == ACTIVE and tables.FINISHED == FINISHED
    assert set(tables.STATUS_COLOURS) == set(RunStatus)


def test_the_dashboards_solver_orders_are_the_solver_table() -> None:
    assert charts.SOLVER_ORDERS == {name: solver.order for name, solver in SOLVERS.items()}
    assert set(charts.SOLVER_DASHES) == set(charts.SOLVER_MARKERS) == set(SOLVERS)


def test_the_dashboards_adaptive_solvers_are_the_solver_table() -> None:
    assert tables.ADAPTIVE_SOLVERS == tuple(name for name, solver in SOLVERS.items() if solver.kind == "adaptive")
