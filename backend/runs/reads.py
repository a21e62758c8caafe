"""Reading metric histories in bounded memory: keyset pages from the store, streamed to the client.

A run may hold millions of metric rows (a long train at one step per batch). No read here holds more than one
page of each series (``PAGE_ROWS`` points): small reads answer in one piece; longer JSON and every CSV are
streamed page by page, each page read in a short session on a worker thread; decimation keeps each bucket's
minimum and maximum while the pages go by. Streams end when the client leaves (Starlette cancels them) or stops
reading (``TimedStreamingResponse``).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import zlib
from array import array
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
from anyio import to_thread
from sqlalchemy.orm import Session
from starlette.responses import StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from backend.db import Database
from backend.runs import artifacts, repository as runs
from backend.runs.schemas import MetricsPublic, SeriesPoints

PAGE_ROWS = 5_000
"""Points of one series read at once: about 0.5 MB of Python objects."""

Point = tuple[int, float | None]
T = TypeVar("T")


@dataclass(frozen=True)
class Block:
    """Consecutive points of several series: every point with ``after < step <= last_step`` of each series is
    here. ``complete`` when nothing newer was left out (``last_step`` is then the newest step read)."""

    series: dict[str, list[Point]]
    last_step: int | None
    complete: bool


def read_block(session: Session, run_id: int, names: Sequence[str], *, after_step: int | None,
               before_step: int | None = None, limit: int | None = None) -> Block:
    """At most ``limit`` (default ``PAGE_ROWS``) points per series after ``after_step``; where a series had more,
    every series is cut at the same step, so the block's ``last_step`` is a cursor valid for all of them."""
    limit = limit or PAGE_ROWS
    pages = runs.series_pages(session, run_id, names, after_step=after_step, before_step=before_step, limit=limit)
    full = [page[-1][0] for page in pages.values() if len(page) == limit]
    if full:
        cut = min(full)
        kept = {name: [p for p in page if p[0] <= cut] for name, page in pages.items()}
        return Block({name: page for name, page in kept.items() if page}, cut, False)
    last = max((page[-1][0] for page in pages.values() if page), default=after_step)
    return Block({name: page for name, page in pages.items() if page}, last, True)


def _with_stable_names(session: Session, run_id: int, wanted: Sequence[str] | None,
                       read: Callable[[list[str]], T]) -> tuple[list[str], T]:
    """``read`` of the run's series (of ``wanted``), with the names read again after it until they did not change:
    a series whose first point was committed between the two reads is read too, or a cursor past it would skip
    that point for good."""
    names = runs.series_names(session, run_id, wanted)
    while True:
        result = read(names)
        again = runs.series_names(session, run_id, wanted)
        if again == names:
            return names, result
        names = again


def read_new(session: Session, run_id: int, wanted: Sequence[str] | None, *, after_step: int | None,
             before_step: int | None = None) -> tuple[list[str], Block]:
    """The run's series (of ``wanted``) and their next block."""
    return _with_stable_names(session, run_id, wanted, lambda names: read_block(
        session, run_id, names, after_step=after_step, before_step=before_step))


def read_new_json(session: Session, run_id: int, wanted: Sequence[str] | None, *, after_step: int | None,
                  before_step: int | None = None) -> tuple[list[str], bytes | None] | None:
    """On PostgreSQL, :func:`read_new` answered as the JSON of :class:`MetricsPublic`, built from the arrays the
    store aggregates (:func:`~backend.runs.repository.series_pages_json`): the points never become Python
    objects. ``(names, body)``; ``(names, None)`` when some series has more than a page (stream them:
    :func:`json_chunks`); ``None`` on SQLite (read the rows with :func:`read_new`)."""
    if session.get_bind().dialect.name != "postgresql":
        return None
    names, pages = _with_stable_names(session, run_id, wanted, lambda names: runs.series_pages_json(
        session, run_id, names, after_step=after_step, before_step=before_step, limit=PAGE_ROWS))
    if any(points >= PAGE_ROWS for points, _, _, _ in pages.values()):
        return names, None
    last = max((newest for _, newest, _, _ in pages.values()), default=after_step)
    series = ",".join(f'{json.dumps(name)}:{{"steps":{pages[name][2]},"values":{pages[name][3]}}}'
                      for name in names if name in pages)
    return names, (f'{{"run_id":{run_id},"series":{{{series}}},"last_step":{json.dumps(last)},"decimated":false,'
                   '"more_before":null}').encode()


def public(run_id: int, block: Block, *, more_before: int | None = None) -> MetricsPublic:
    return MetricsPublic(run_id=run_id, last_step=block.last_step, decimated=False, more_before=more_before,
                         series={name: SeriesPoints(steps=[s for s, _ in page], values=[v for _, v in page])
                                 for name, page in block.series.items()})


def window_start(session: Session, run_id: int, points: int) -> int | None:
    """Where a window of each series' ``points`` newest points begins, when some series has more (else None):
    an event stream's first event starts there and says older points exist before it."""
    starts = []
    for name in runs.series_names(session, run_id):
        if runs.nth_latest_step(session, run_id, name, points + 1) is not None:
            starts.append(runs.nth_latest_step(session, run_id, name, points))
    return max((s for s in starts if s is not None), default=None)


# ------------------------------------------------------------------------------------------------ decimation
class Decimator:
    """At most ``points`` points of a series of ``n``, fed in step order: ``points // 2`` buckets of consecutive
    points, each kept as its minimum and maximum in step order, so spikes and dips survive. A bucket with no
    finite value keeps its first point (``None``: where a run diverged). Memory O(points)."""

    def __init__(self, n: int, points: int) -> None:
        self.n, self.keep_all = n, n <= points
        self.buckets = max(1, points // 2)
        self.bucket, self.index = 0, 0
        self.end = n // self.buckets
        self.steps: list[int] = []
        self.values: list[float | None] = []
        self._first: tuple[int, int, float | None] | None = None
        self._low: tuple[float, int, int] | None = None
        self._high: tuple[float, int, int] | None = None

    def add(self, step: int, value: float | None) -> None:
        if self.keep_all:
            self.steps.append(step)
            self.values.append(value)
            return
        while self.index >= self.end and self.bucket < self.buckets - 1:
            self._flush()
            self.bucket += 1
            self.end = (self.bucket + 1) * self.n // self.buckets
        if self._first is None:
            self._first = (self.index, step, value)
        if value is not None:
            if self._low is None or value < self._low[0]:
                self._low = (value, self.index, step)
            if self._high is None or value > self._high[0]:
                self._high = (value, self.index, step)
        self.index += 1

    def _flush(self) -> None:
        if self._low is not None and self._high is not None:
            kept = sorted({(self._low[1], self._low[2], self._low[0]), (self._high[1], self._high[2], self._high[0])})
            for _, step, value in kept:
                self.steps.append(step)
                self.values.append(value)
        elif self._first is not None:
            self.steps.append(self._first[1])
            self.values.append(self._first[2])
        self._first = self._low = self._high = None

    def result(self) -> tuple[list[int], list[float | None]]:
        if not self.keep_all:
            self._flush()
        return self.steps, self.values


def decimate(steps: Sequence[int], values: Sequence[float | None], points: int) -> tuple[list[int], list[float | None]]:
    """:class:`Decimator` over lists held in memory."""
    decimator = Decimator(len(steps), points)
    for step, value in zip(steps, values, strict=True):
        decimator.add(step, value)
    return decimator.result()


def _pages(session: Session, run_id: int, name: str, after_step: int | None,
           before_step: int | None) -> Iterator[list[Point]]:
    cursor = after_step
    while True:
        page = runs.series_page(session, run_id, name, after_step=cursor, before_step=before_step, limit=PAGE_ROWS)
        if page:
            yield page
        if len(page) < PAGE_ROWS:
            return
        cursor = page[-1][0]


def decimated(session: Session, run_id: int, names: Sequence[str], *, points: int, after_step: int | None,
              before_step: int | None) -> MetricsPublic:
    """Each series decimated to at most ``points`` while its pages are read (one read transaction: the count
    and the pages see the same rows)."""
    out: dict[str, SeriesPoints] = {}
    last, thinned = after_step, False
    for name in names:
        n = runs.series_count(session, run_id, name, after_step=after_step, before_step=before_step)
        decimator = Decimator(n, points)
        for page in _pages(session, run_id, name, after_step, before_step):
            for step, value in page:
                decimator.add(step, value)
            last = page[-1][0] if last is None else max(last, page[-1][0])
        steps, values = decimator.result()
        thinned |= not decimator.keep_all
        if steps:
            out[name] = SeriesPoints(steps=steps, values=values)
    return MetricsPublic(run_id=run_id, series=out, last_step=last, decimated=thinned, more_before=None)


# ------------------------------------------------------------------------------------------------- streaming
class TimedStreamingResponse(StreamingResponse):
    """A ``StreamingResponse`` whose every send must complete within ``send_timeout`` seconds: a client that
    stops reading (its socket buffer full) has its stream ended, its reads stopped and its slot freed, instead of
    holding them for as long as it keeps the connection open."""

    def __init__(self, content: AsyncIterator[bytes], *, send_timeout: float, **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self.send_timeout = send_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def timed(message: Message) -> None:
            with anyio.fail_after(self.send_timeout):
                await send(message)

        try:
            await super().__call__(scope, receive, timed)
        except TimeoutError:
            logging.getLogger("anode.api").warning("a client stopped reading %s for %g s (ANODE_STREAM_SEND_TIMEOUT_"
                                                   "SECONDS): stream ended", scope.get("path"), self.send_timeout)
        finally:
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                await aclose()


def _page(db: Database, run_id: int, name: str, after_step: int | None, before_step: int | None) -> list[Point]:
    with db.session() as session:
        return runs.series_page(session, run_id, name, after_step=after_step, before_step=before_step,
                                limit=PAGE_ROWS)


def _newest(db: Database, run_id: int, name: str, before_step: int | None) -> int | None:
    with db.session() as session:
        page = runs.series_page(session, run_id, name, after_step=None, before_step=before_step, limit=1,
                                newest=True)
    return page[0][0] if page else None


async def _series_pages(db: Database, run_id: int, name: str, after_step: int | None,
                        before_step: int | None) -> AsyncIterator[list[Point]]:
    cursor = after_step
    while True:
        page = await to_thread.run_sync(_page, db, run_id, name, cursor, before_step)
        if page:
            yield page
        if len(page) < PAGE_ROWS:
            return
        cursor = page[-1][0]


async def json_chunks(db: Database, run_id: int, names: Sequence[str], *, after_step: int | None,
                      before_step: int | None) -> AsyncIterator[bytes]:
    """``MetricsPublic`` as JSON text, page by page: each series' steps, then its values, read up to the newest
    step it had when its turn came. If its rows changed between the two passes (a re-ingested journal filling
    a gap), the stream is cut rather than pair steps with the wrong values."""
    yield f'{{"run_id": {run_id}, "decimated": false, "more_before": null, "series": {{'.encode()
    last, comma = after_step, ""
    for name in names:
        newest = await to_thread.run_sync(_newest, db, run_id, name, before_step)
        if newest is None or (after_step is not None and newest <= after_step):
            continue  # no point in range: left out, as from a response read in one piece
        bound = newest + 1
        last = newest if last is None else max(last, newest)
        yield f'{comma}{json.dumps(name)}: {{"steps": ['.encode()
        comma = ", "
        digest, sep = 0, ""
        async for page in _series_pages(db, run_id, name, after_step, bound):
            steps = [s for s, _ in page]
            digest = zlib.crc32(array("q", steps).tobytes(), digest)
            yield (sep + json.dumps(steps)[1:-1]).encode()
            sep = ", "
        yield b'], "values": ['
        check, sep = 0, ""
        async for page in _series_pages(db, run_id, name, after_step, bound):
            check = zlib.crc32(array("q", [s for s, _ in page]).tobytes(), check)
            yield (sep + json.dumps([v for _, v in page])[1:-1]).encode()
            sep = ", "
        if check != digest:
            raise RuntimeError(f"run {run_id}'s series {name!r} changed while it was read; read it again")
        yield b"]}"
    yield f'}}, "last_step": {json.dumps(last)}}}'.encode()


async def csv_chunks(db: Database, run_id: int, names: Sequence[str]) -> AsyncIterator[bytes]:
    """One row per step, one column per series (empty where a series has no value), a block of pages at a
    time."""

    def block(after: int | None) -> Block:
        with db.session() as session:
            return read_block(session, run_id, names, after_step=after)

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["step", *names])
    yield buffer.getvalue().encode()
    cursor: int | None = None
    while True:
        got = await to_thread.run_sync(block, cursor)
        table: dict[int, dict[str, float | None]] = {}
        for name, page in got.series.items():
            for step, value in page:
                table.setdefault(step, {})[name] = value
        buffer.seek(0)
        buffer.truncate()
        for step in sorted(table):
            writer.writerow([step, *("" if table[step].get(n) is None else repr(table[step][n]) for n in names)])
        if table:
            yield buffer.getvalue().encode()
        if got.complete:
            return
        cursor = got.last_step


async def artifact_chunks(db: Database, run_id: int, name: str) -> AsyncIterator[bytes]:
    """A stored artifact's bytes, a chunk (:data:`~backend.runs.artifacts.CHUNK_BYTES`) at a time, each read in a
    short session on a worker thread."""

    def chunk(seq: int) -> bytes | None:
        with db.session() as session:
            return artifacts.chunk(session, run_id, name, seq)

    seq = 0
    while (data := await to_thread.run_sync(chunk, seq)) is not None:
        yield data
        seq += 1
