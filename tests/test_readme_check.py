"""The README's "Check your own model" lines work as printed (each run in a real shell, in a scratch folder)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


def readme_lines() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Check your own model", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block is not None
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_the_section_has_five_lines() -> None:
    assert len(readme_lines()) == 5


@pytest.mark.parametrize("index", range(5))
def test_each_line_works_as_printed(index: int, tmp_path: Path) -> None:
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    line = readme_lines()[index]
    done = subprocess.run(["bash", "-c", line], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (line, done.stderr)
    if "--json" in line:
        rows = json.loads(done.stdout)
        assert [r["method"] for r in rows] == ["Direct", "Anode", "Anode(checkpoints=1)", "Adjoint"]
        assert rows[1]["rel_error"] <= 1e-10 and rows[3]["rel_error"] > 1e-3
    elif "--out runs/check" in line:
        assert (tmp_path / "runs" / "check" / "check.csv").is_file()
        assert (tmp_path / "runs" / "check" / "check.svg").read_text().startswith("<svg")
    elif line.startswith("python"):
        assert "'method': 'Adjoint'" in done.stdout and "'verdict': 'off by" in done.stdout
    else:
        assert done.stdout.splitlines()[1].startswith("Direct ") and " exact " in done.stdout
