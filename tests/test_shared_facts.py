"""Facts with one home, and the mirrors that cannot import it, checked against it.

The dashboard ships alone (``docker/dashboard.Dockerfile`` copies only ``dashboard/``), so it keeps its own
tables of run statuses and solver orders; these tests hold them to the run-status enum and the solver table.
"""

from __future__ import annotations

import pytest

from anode_lab.specs.common import SOLVERS, GradientSpec
from anode_lab.specs.compare import method_label
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


@pytest.mark.parametrize("gradient", [{"method": "direct"}, {"method": "anode"}, {"method": "anode", "checkpoints": 2},
                                      {"method": "adjoint"}, {"method": "adjoint", "reconstruct": False},
                                      {"method": "reversible"}])
def test_the_dashboards_method_labels_are_the_specs(gradient: dict[str, object]) -> None:
    assert tables.method_label(gradient) == method_label(GradientSpec.model_validate(gradient))


def test_the_dashboards_run_is_the_apis_run_public() -> None:
    """``dashboard.api_client.Run`` (a TypedDict) names every field of ``RunPublic``, and only those, and its
    progress every field of ``RunProgress``."""
    from backend.runs.schemas import RunProgress, RunPublic
    from dashboard.api_client import Run, RunProgress as DashboardProgress

    assert list(Run.__annotations__) == list(RunPublic.model_fields)
    assert list(DashboardProgress.__annotations__) == list(RunProgress.model_fields)
