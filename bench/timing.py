"""Interleaved, median-based wall-clock timing for benchmarks on a shared, noisy machine.

The cases are timed rep by rep in turn (``A1 B1 C1  B2 C2 A2  C3 A3 B3 …``: every rep times each case once and
the starting case rotates, so no case always runs right after the same neighbour). Load from other processes
then lands on all cases alike, and the medians, and the ratios of medians within one call, are what a report
should show; absolute times from different calls or machines are not comparable. Each sample records the wall
clock and the CPU time of this process; the latter is blind to other processes' load (see :class:`Timing`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

Clock = Literal["wall", "cpu"]

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
"""glibc's ``mallopt`` parameters (malloc.h)."""


def keep_heap() -> bool:
    """Have glibc keep the memory a case frees for the next one: no trimming of the heap's top, and blocks up to
    32 MiB from the heap, not mapped and unmapped each time. With glibc's defaults a case's time depends on what
    ran before it in the process: the pages a case returns, the next one faults in again. In the odeint table,
    the 1,848-step dopri8 row read 1.05–1.13× torchdiffeq in full runs, 1.00–1.04× run alone, and equal in
    processes of their own; with the heap kept, 0.98–0.99× in full runs. Both peers get the same heap. Returns
    whether it took (False off glibc)."""
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, 32 * 2**20)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))


@dataclass(frozen=True)
class Timing:
    """Samples of one case in seconds, in the order taken: wall clock, and CPU time of this process.

    On a machine shared with other work, wall time also counts the time spent waiting for a core; process CPU
    time does not, so with one compute thread its spread is far smaller (with several, it also counts threads
    spinning at barriers). Report wall time; use CPU time to check that a ratio is not an artefact of load.
    """

    wall: tuple[float, ...]
    cpu: tuple[float, ...]

    def samples(self, clock: Clock = "wall") -> tuple[float, ...]:
        if clock not in ("wall", "cpu"):
            raise ValueError(f"`clock` must be 'wall' or 'cpu'; got {clock!r}")
        return self.wall if clock == "wall" else self.cpu

    def median(self, clock: Clock = "wall") -> float:
        return statistics.median(self.samples(clock))

    def quartiles(self, clock: Clock = "wall") -> tuple[float, float]:
        """First and third quartile (both equal the sample when there is only one)."""
        samples = self.samples(clock)
        if len(samples) < 2:
            return samples[0], samples[0]
        q1, _, q3 = statistics.quantiles(samples, n=4, method="inclusive")
        return q1, q3

    def ratio_to(self, reference: Timing, clock: Clock = "wall") -> float:
        """``median(self) / median(reference)``."""
        return self.median(clock) / reference.median(clock)

    def paired_ratios(self, reference: Timing, clock: Clock = "wall") -> tuple[float, ...]:
        """``self[i] / reference[i]`` for every rep ``i``: both were timed moments apart, under the same load."""
        mine, theirs = self.samples(clock), reference.samples(clock)
        if len(mine) != len(theirs):
            raise ValueError(
                f"`reference` must have as many samples as this timing ({len(mine)}); got {len(theirs)}. "
                "Time both in the same time_interleaved call."
            )
        return tuple(a / b for a, b in zip(mine, theirs, strict=True))

    def paired_ratio_to(self, reference: Timing, clock: Clock = "wall") -> float:
        """Median of :meth:`paired_ratios`: robust to load that drifts between reps."""
        return statistics.median(self.paired_ratios(reference, clock))


def time_interleaved(
    cases: Mapping[str, Callable[[], object]],
    *,
    reps: int,
    warmup: int = 1,
    setup: Callable[[str], object] | None = None,
    sync: Callable[[], object] | None = None,
    on_sample: Callable[[str], object] | None = None,
    fewer: Mapping[str, int] | None = None,
) -> dict[str, Timing]:
    """Time every case ``reps`` times, interleaved, after ``warmup`` untimed calls of each.

    ``fewer`` names slow cases that take part in only their first ``n`` reps (then drop out of the rotation): a
    case 50× slower than the rest need not be timed as often for a ratio that far from any bound.

    ``setup(name)`` runs untimed before every call (e.g. zeroing gradients); ``sync()`` runs inside the timed
    region after each call (e.g. ``torch.cuda.synchronize``); ``on_sample(name)`` after each timed call (e.g. a
    progress bar). The collector is paused during each call, as ``timeit`` does, so a collection that one case's
    garbage makes due is run between calls, untimed, rather than billed to whichever case happens to trigger it.
    Garbage is collected in full once before the reps (a full collection per call would cost as much as the
    calls being timed in a process holding torch).
    """
    if isinstance(reps, bool) or not isinstance(reps, int) or reps < 1:
        raise ValueError(f"`reps` must be an integer ≥ 1; got {reps!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"`warmup` must be an integer ≥ 0; got {warmup!r}")
    if not cases:
        raise ValueError("`cases` must name at least one callable to time; got none")
    fewer = dict(fewer or {})
    for name, n in fewer.items():
        if name not in cases or isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= reps:
            raise ValueError(f"`fewer` must map names of `cases` to a number of reps in 1…{reps}; got {name!r}: {n!r}")
    names = list(cases)
    for _ in range(warmup):
        for name in names:
            _call(cases[name], name, setup, sync)
    gc.collect()
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(reps):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            if rep >= fewer.get(name, reps):
                continue
            w, c = _call(cases[name], name, setup, sync)
            wall[name].append(w)
            cpu[name].append(c)
            if on_sample is not None:
                on_sample(name)
    return {name: Timing(tuple(wall[name]), tuple(cpu[name])) for name in names}


def _call(
    case: Callable[[], object],
    name: str,
    setup: Callable[[str], object] | None,
    sync: Callable[[], object] | None,
) -> tuple[float, float]:
    """Wall and process CPU seconds of one call."""
    if setup is not None:
        setup(name)
    enabled = gc.isenabled()
    gc.disable()
    try:
        start, start_cpu = time.perf_counter(), time.process_time()
        case()
        if sync is not None:
            sync()
        return time.perf_counter() - start, time.process_time() - start_cpu
    finally:
        if enabled:
            gc.enable()
