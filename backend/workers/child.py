"""One experiment in a child process of the worker, with a memory limit; the worker keeps the wall-time limit.

The worker (:mod:`backend.workers.process`) starts :func:`run_child` through a ``forkserver`` that has imported
torch once, so a run starts in a fraction of a second and never shares the worker's threads or memory. The child:

* limits its own address space to its size at start plus ``ANODE_MAX_RUN_BYTES`` (``RLIMIT_AS``; on a GPU, where
  CUDA reserves address space it never touches, torch's per-process CUDA memory fraction instead), so an
  oversized run fails alone with "out of memory" instead of taking the worker (or the machine) with it;
* sends its reports up a pipe in batches, off the step's thread (:mod:`backend.workers.uplink`: ``("metrics",
  step, values)``, ``("progress", done, total, note)``) and, at the end, ``("done", status, summary, message)``
  or ``("error", kind, summary)``; the worker journals and stores the metrics and keeps
  checkpoints in the store (hosts share no disk);
* hears "go" (renewed every half second while the worker holds the run's lease) or "stop" (cancel, shutdown)
  from the worker unasked, and asks "stop?" itself, waiting for the answer, only before every checkpoint and
  when its last "go" has run out (a stalled worker, or one that lost its lease and kills this process); the
  worker answers after storing every report sent before the question, so a checkpoint never runs ahead of the
  stored metrics; it ends at once, without saving, when the worker itself is gone (a killed worker's run is
  re-queued and resumed by another one);
* ignores SIGINT and SIGTERM: Ctrl-C of a worker in a terminal reaches its whole process group, and the worker,
  not the signal, stops the run (between two steps, after a checkpoint) or kills it.
"""

from __future__ import annotations

import errno
import importlib
import json
import multiprocessing
import resource
import signal
import tempfile
import time
import traceback
from collections.abc import Mapping
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from anode_lab.failures import is_out_of_memory
from backend.workers.uplink import PERMIT_SECONDS, Uplink

TRACEBACK_FRAMES = 6
RUN_IMPORTS = ("torch", "sklearn.datasets", "sklearn.model_selection", "torchvision.datasets",
               "anode_lab.experiments.train", "anode_lab.experiments.sweep", "anode_lab.experiments.demos")
"""What runs import: once in the forkserver (:mod:`backend.workers.preload`), so no run pays for them (seconds
each on a busy machine), and again, at no cost, at the start of every run's child, so that an install that
cannot import one of them (a torchvision built for another torch) fails every run with its own error."""
PRELOAD = ["backend.workers.preload"]
CHECK_SPEC: dict[str, Any] = {"dataset": "moons", "n_samples": 32, "batch_size": 16, "epochs": 1, "max_steps": 2,
                              "width": 2, "hidden": 8, "probe_every": 0}
"""The worker's start-up check: a training run of two tiny steps (:func:`check_install`)."""
CHECK_TIMEOUT_S = 300.0
KILL_WAIT_S = 5.0


def context() -> multiprocessing.context.ForkServerContext:
    """The worker's process context: a forkserver with torch and the experiments imported once."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def start_forkserver() -> None:
    """Start the forkserver now (it imports :data:`PRELOAD` in the background), not at the first run."""
    from multiprocessing import forkserver

    context()
    forkserver.ensure_running()


def error_summary(exc: BaseException) -> dict[str, Any]:
    frames = traceback.extract_tb(exc.__traceback__)[-TRACEBACK_FRAMES:]
    return {"type": type(exc).__name__, "message": str(exc),
            "traceback": [f"{Path(f.filename).name}:{f.lineno} in {f.name}: {f.line or ''}".strip() for f in frames]}


def is_disk_full(exc: BaseException) -> bool:
    link: BaseException | None = exc
    while link is not None:  # the error itself, then what caused it
        if isinstance(link, OSError) and link.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        link = link.__cause__ or link.__context__
    return False


def _address_space() -> int:
    """This process's virtual size now (``VmSize``), in bytes."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmSize in /proc/self/status")


def limit_memory(max_bytes: int, device: str) -> None:
    if device == "cuda":
        import torch

        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, max_bytes / total))
        return
    limit = _address_space() + max_bytes
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))


def run_child(kind: str, spec_data: Mapping[str, Any], workdir: str, max_bytes: int, threads: int | None,
              conn: Connection, part: int | None = None) -> None:
    """Body of the child process (see the module docstring); ``part``: only that part of a compare sweep, whose
    rows come back as JSON text in the summary's ``rows``."""
    uplink = Uplink(conn)
    for signum in (signal.SIGINT, signal.SIGTERM):  # the worker stops its run (Ctrl-C reaches a terminal's group)
        signal.signal(signum, signal.SIG_IGN)
    try:
        for module in RUN_IMPORTS:
            importlib.import_module(module)
        import torch

        from anode_lab.experiments import RunContext, run_experiment
        from anode_lab.specs import parse_spec

        spec = parse_spec(kind, dict(spec_data))
        if threads is not None:
            torch.set_num_threads(threads)
        limit_memory(max_bytes, getattr(spec, "device", "cpu"))
        ctx = RunContext(Path(workdir), on_metrics=uplink.on_metrics, on_progress=uplink.on_progress,
                         should_stop=uplink.should_stop, before_checkpoint=uplink.before_checkpoint,
                         on_checkpoint=lambda path: uplink.on_checkpoint(str(path.relative_to(workdir))))
        if part is not None:
            from anode_lab.experiments.sweep import run_compare_part

            result, rows = run_compare_part(spec, part, ctx)  # type: ignore[arg-type]  # a compare spec
            uplink.close(("done", result.status, {"rows": json.dumps(rows)}, result.message))
            return
        result = run_experiment(kind, spec, ctx)
    except BaseException as exc:  # noqa: BLE001 - every failure is reported to the worker, then the child ends
        reason = "memory" if is_out_of_memory(exc) else "disk" if is_disk_full(exc) else "error"
        uplink.close(("error", reason, error_summary(exc)))
        return
    uplink.close(("done", result.status, dict(result.summary), result.message))


def check_install(target: Any, device: str, max_bytes: int) -> str | None:
    """Run :data:`CHECK_SPEC` through ``target`` (the worker's ``child_target``) in a child process, in a temporary
    folder: None when it trains, else why not (the child's own error, or how its process ended)."""
    ctx = context()
    receiver, sender = ctx.Pipe()
    with tempfile.TemporaryDirectory(prefix="anode-check-") as folder:
        try:
            child = ctx.Process(target=target, name="install-check", daemon=True,
                                args=("train", {**CHECK_SPEC, "device": device}, folder, max_bytes, 1, sender))
            child.start()
        except Exception as exc:  # noqa: BLE001 - a forkserver that cannot start is the answer
            return f"its run processes cannot start: {type(exc).__name__}: {exc}"
        finally:
            sender.close()
        try:
            while receiver.poll(CHECK_TIMEOUT_S):
                for message in receiver.recv()[1]:  # ("batch", [report, ...])
                    if message[0] == "ask":
                        receiver.send(("go", time.monotonic() + PERMIT_SECONDS, True))
                    elif message[0] == "done":
                        ok = message[1] == "succeeded"
                        return None if ok else f"a tiny training run ended {message[1]}: {message[3]}"
                    elif message[0] == "error":
                        return f"a tiny training run failed: {message[2]['type']}: {message[2]['message']}"
            return f"a tiny training run gave no answer within {CHECK_TIMEOUT_S:.0f} s"
        except (EOFError, OSError):
            child.join(KILL_WAIT_S)
            return f"a tiny training run's process ended without a result (exit code {child.exitcode})"
        finally:
            if child.is_alive():
                child.kill()
                child.join(KILL_WAIT_S)
            receiver.close()
