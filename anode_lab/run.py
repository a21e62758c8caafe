"""`anode-lab run SPEC`: one experiment in the terminal, with a progress bar, its results written to a folder.

The folder gets ``spec.json`` (what was run), ``environment.json`` (versions, seed, device, threads),
``metrics.csv`` (long format: step, series, value), ``result.json`` (status and summary) and whatever the
experiment writes (``artifacts/``, resumable ``checkpoints/``). Running again into the same folder resumes from
its latest checkpoint. Ctrl-C asks the run to stop at the next step (checkpointing when it is enabled); a second
Ctrl-C aborts.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from typing import Any

from anode_lab.specfile import SpecFile, SpecFileError, load_spec_file
from anode_lab.status import RunStatus

EXIT_CODES = {RunStatus.SUCCEEDED: 0, RunStatus.DIVERGED: 1, RunStatus.CANCELLED: 130}
INVALID_SPEC = 2
SHOWN_SERIES = {"train_loss": "loss", "train_acc": "acc", "test_acc": "test_acc", "probe_rel_error": "grad_err"}
"""Series shown in the progress bar when a run reports them (others show the latest values reported)."""


def run_command(args: argparse.Namespace) -> int:
    try:
        loaded = load_spec_file(args.spec, args.kind)
    except SpecFileError as exc:
        print(*exc.lines, sep="\n", file=sys.stderr)
        return INVALID_SPEC
    out = args.out or Path("runs") / f"{loaded.kind}-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    if any((out / "checkpoints").glob("*.pt")):
        print(f"resuming from the checkpoint in {out / 'checkpoints'}")
    return run_loaded(loaded, out)


def run_loaded(loaded: SpecFile, out: Path) -> int:
    from tqdm import tqdm

    from anode_lab.experiments import RunContext, run_experiment

    spec_doc = {"kind": loaded.kind, "spec": loaded.spec.model_dump(mode="json")}
    if loaded.name:
        spec_doc["name"] = loaded.name
    if loaded.tags:
        spec_doc["tags"] = list(loaded.tags)
    _write_json(out / "spec.json", spec_doc)
    _write_json(out / "environment.json", environment(loaded.spec))
    metrics = MetricsFile(out / "metrics.csv")
    bar = tqdm(total=0, desc=loaded.kind, unit="step", dynamic_ncols=True)
    latest: dict[str, float] = {}
    stop = _StopOnInterrupt()

    def on_metrics(step: int, values: Mapping[str, float]) -> None:
        metrics.add(step, values)
        latest.update(values)
        shown = {short: latest[k] for k, short in SHOWN_SERIES.items() if k in latest} or dict(list(values.items())[:4])
        bar.set_postfix({k: f"{v:.4g}" for k, v in shown.items()}, refresh=False)

    def on_progress(done: int, total: int, note: str) -> None:
        bar.total = total
        bar.update(done - bar.n)  # tqdm limits redraws to a few per second

    ctx = RunContext(workdir=out, on_metrics=on_metrics, on_progress=on_progress, should_stop=stop.requested,
                     before_checkpoint=metrics.flush)
    started = time.perf_counter()
    try:
        with stop:
            result = run_experiment(loaded.kind, loaded.spec, ctx)
    except (FileNotFoundError, ValueError) as exc:  # missing data, unusable device: the message says the fix
        bar.close()  # before the message, which would otherwise trail the bar's line
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        bar.close()
        metrics.close()
    seconds = time.perf_counter() - started
    _write_json(out / "result.json", {"status": result.status, "summary": dict(result.summary),
                                      "message": result.message, "seconds": round(seconds, 3)})
    print(f"{result.status} in {seconds:.1f} s" + (f": {result.message}" if result.message else ""))
    for key, value in result.summary.items():
        print(f"  {key}: {value:.6g}" if isinstance(value, float) else f"  {key}: {value}")
    print(f"results in {out.resolve()} (metrics.csv, spec.json, environment.json, result.json)")
    return EXIT_CODES.get(result.status, 1)


def environment(spec: Any) -> dict[str, Any]:
    """Versions, seed, device and threads: what it takes to reproduce a run's numbers."""
    import importlib.metadata

    import numpy
    import torch

    def version(dist: str) -> str | None:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return None

    device = getattr(spec, "device", "cpu")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    threads = getattr(spec, "threads", None) or torch.get_num_threads()
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "anode_lab": version("anode-lab"),
        "torch": torch.__version__,
        "torchvision": version("torchvision"),
        "numpy": numpy.__version__,
        "seed": getattr(spec, "seed", None),
        "device": device,
        "cuda_device": torch.cuda.get_device_name(0) if device == "cuda" and torch.cuda.is_available() else None,
        "threads": threads,
        "argv": sys.argv,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


class MetricsFile:
    """``metrics.csv`` in long format. Rows are appended as they come and reach the file at most
    :attr:`FLUSH_SECONDS` later, before every checkpoint (:meth:`flush`, the run's ``before_checkpoint``) and at
    the end, so a crash loses only steps after the last checkpoint, which the resumed run computes again. On
    close the file is rewritten with one row per (step, series), the last value reported winning, as a resumed
    run repeats steps it had reported before it stopped."""

    HEADER = ("step", "series", "value")
    FLUSH_SECONDS = 0.25

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: dict[tuple[int, str], str] = {}
        if path.exists():
            with path.open(newline="") as f:
                for row in csv.DictReader(f):
                    self.rows[(int(row["step"]), row["series"])] = row["value"]
        self._file = path.open("a", newline="")
        self._flush_at = time.monotonic() + self.FLUSH_SECONDS
        self._csv = csv.writer(self._file)
        if not self.rows and self._file.tell() == 0:
            self._csv.writerow(self.HEADER)

    def add(self, step: int, values: Mapping[str, float]) -> None:
        for series, value in values.items():
            text = repr(float(value)) if isinstance(value, float) else str(value)
            self.rows[(step, series)] = text
            self._csv.writerow((step, series, text))
        if time.monotonic() >= self._flush_at:
            self.flush()

    def flush(self) -> None:
        self._file.flush()
        self._flush_at = time.monotonic() + self.FLUSH_SECONDS

    def close(self) -> None:
        if self._file.closed:
            return
        self._file.close()
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(self.HEADER)
            for (step, series), value in sorted(self.rows.items(), key=lambda item: item[0][0]):
                writer.writerow((step, series, value))
        tmp.replace(self.path)


class _StopOnInterrupt:
    """The first Ctrl-C asks the run to stop at its next step; the second one aborts."""

    def __init__(self) -> None:
        self.interrupted = False
        self._previous: Any = None

    def requested(self) -> bool:
        return self.interrupted

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.interrupted:
            raise KeyboardInterrupt
        self.interrupted = True
        print("\nstopping after this step (Ctrl-C again to abort)", file=sys.stderr)

    def __enter__(self) -> _StopOnInterrupt:
        self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *_: object) -> None:
        signal.signal(signal.SIGINT, self._previous)


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
