"""What a running experiment may do to the world: report metrics and progress, write artifacts, see a cancel.

The CLI, the worker and the tests each build a :class:`RunContext` with their own callbacks; experiments never
know which one they run under.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from anode_lab.status import RunStatus

Status = Literal[RunStatus.SUCCEEDED, RunStatus.DIVERGED, RunStatus.CANCELLED]
"""How an experiment can end; *failed* is the worker's verdict on an exception."""


def _ignore(*_: object) -> None:
    return None


@dataclass
class RunContext:
    """Callbacks and a working folder for one run.

    * ``on_metrics(step, values)``: a batch of series values at one global step (e.g. ``{"train_loss": 0.3}``);
      a retried step may be reported again and must be written idempotently by the receiver.
    * ``on_progress(done, total, note)``: coarse progress for bars and status lines.
    * ``should_stop()``: checked at least once per training step; True ends the run as *cancelled*.
    * ``before_checkpoint()``: called before a resumable checkpoint is written; returns once every report made
      so far is kept where a resumed run finds it (a worker's journal, the CLI's ``metrics.csv``), so a run
      resumed from the checkpoint never skips a step whose metrics were lost.
    * ``on_checkpoint(path)``: a resumable checkpoint was saved at ``path`` (inside ``workdir``), after every
      report of the steps before it; a worker keeps it in the store, so the run resumes on any host.
    * ``workdir``: artifacts (``artifact_path(name)``) and resumable checkpoints live here.
    """

    workdir: Path
    on_metrics: Callable[[int, Mapping[str, float]], None] = _ignore
    on_progress: Callable[[int, int, str], None] = _ignore
    should_stop: Callable[[], bool] = field(default=lambda: False)
    before_checkpoint: Callable[[], None] = _ignore
    on_checkpoint: Callable[[Path], None] = _ignore

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)

    def artifact_path(self, name: str) -> Path:
        """Path for artifact ``name`` (a plain file name, no folders) inside ``workdir/artifacts``."""
        if not name or Path(name).name != name or name in {".", ".."}:
            raise ValueError(f"artifact `name` must be a plain file name; got {name!r}")
        folder = self.workdir / "artifacts"
        folder.mkdir(exist_ok=True)
        path = folder / name
        if folder.is_symlink() or path.is_symlink() or folder.resolve() != self.workdir.resolve() / "artifacts":
            raise PermissionError(f"{path} is a symlink or leads out of the run's folder; artifacts are written "
                                  f"only into the real folder {self.workdir / 'artifacts'}: remove the link")
        return path


@dataclass(frozen=True)
class RunResult:
    """How a run ended and the few numbers that summarise it (shown in run lists)."""

    status: Status
    summary: Mapping[str, float | int | str] = field(default_factory=dict)
    message: str = ""
