"""The tools that judge the project are the ones pinned in ``constraints/test-tools.txt`` (issue 25): a fixed seed
generates the same cases only with the same schemathesis and hypothesis, so the test command installs with the
constraints, and a run on other versions fails here rather than somewhere else by chance."""

from __future__ import annotations

import importlib.metadata as md
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PINS = {
    name: version
    for name, version in (
        re.fullmatch(r"([A-Za-z0-9_.\-]+)==(\S+)", line.strip()).groups()  # type: ignore[union-attr]
        for line in (ROOT / "constraints" / "test-tools.txt").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )
}


def test_the_constraints_pin_every_judging_tool() -> None:
    assert {"pytest", "hypothesis", "schemathesis", "playwright", "ruff", "mypy"} <= set(PINS)


@pytest.mark.parametrize("name", sorted(PINS))
def test_the_installed_tool_is_the_pinned_version(name: str) -> None:
    assert md.version(name) == PINS[name], (
        f"{name} {md.version(name)} is installed but constraints/test-tools.txt pins {PINS[name]}: "
        "install with `bash scripts/test` (it passes -c constraints/test-tools.txt), or update the pin on purpose"
    )


def test_the_test_command_installs_with_the_constraints() -> None:
    script = (ROOT / "scripts" / "test").read_text()
    assert "-c constraints/test-tools.txt" in script
    assert "bash scripts/test" in (ROOT / "scripts" / "test-fresh").read_text()
