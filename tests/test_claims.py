"""The interface says exactly what was measured (issue 15): the continuous adjoint is named as such, its order is
claimed for smooth fields only, and the stored-state adjoint is not said to be free of reconstruction error."""

from __future__ import annotations

from pathlib import Path

from anode_lab.specs.common import GradientSpec
from anode_lab.specs.demo import DEMOS
from backend.catalog.service import METHODS

ROOT = Path(__file__).parents[1]


def test_the_continuous_adjoint_is_named_as_such() -> None:
    assert METHODS["adjoint"].startswith("the continuous adjoint (Chen et al.)")
    assert "the continuous adjoint (Chen et al.)" in GradientSpec.model_fields["method"].description
    assert "**Continuous adjoint** (Chen et al." in (ROOT / "README.md").read_text(encoding="utf-8")
    assert all("the adjoint's" not in info.title for info in DEMOS.values())


def test_the_adjoints_order_is_claimed_for_smooth_fields_only() -> None:
    texts = [METHODS["adjoint"], DEMOS["adjoint-order"].explanation, (ROOT / "README.md").read_text(encoding="utf-8"),
             (ROOT / "dashboard/app_pages/gradient_lab.py").read_text(encoding="utf-8")]
    for text in texts:
        at = text.index("O(dt^p)")
        assert "smooth field" in text[at: at + 40], text[at: at + 60]


def test_stored_states_remove_only_the_accumulated_reconstruction_error() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "no accumulated reconstruction error" in readme
    assert "no accumulated reconstruction error" in GradientSpec.model_fields["reconstruct"].description
    assert "no reconstruction error" not in readme
