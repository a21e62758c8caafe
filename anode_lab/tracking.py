"""Watch your own training loop in the lab: ``anode_lab.track`` logs a plain PyTorch loop's metrics to the API and
probes its gradients with every method (``anode_core.check``) while it trains.

::

    with anode_lab.track(name="latent-ode", probe=(model, batch, loss), probe_every=50) as run:
        for step in range(steps):
            ...                                  # your own forward, backward, optimizer step
            run.log(step, loss=loss.item(), accuracy=acc)

The run is of kind ``external`` (``POST /external``): written only by the key that opened it, ended by the block
(``succeeded``; ``failed`` with the exception's message when it raises; ``diverged`` when a logged loss was not
finite) and failed as lost by the service when the script dies without a word. ``loss`` and ``accuracy`` are
stored as ``train_loss`` and ``train_acc`` and each probe as ``<method>/probe_rel_error``, ``…/probe_cosine``, … so
the lab's pages draw them as they draw its own runs. Points go to the server from a background thread in batches:
``log`` never waits for the network, and a server that is down or slow never stops the training (the points are
kept in a folder, said once, and sent when it answers again, or later by ``anode-lab import FOLDER``). Without a
server (``url=None`` and no ``ANODE_URL``) the run is written to ``folder`` only.
"""

from __future__ import annotations

import json
import math
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from pydantic_settings import BaseSettings, SettingsConfigDict

from anode_lab.names import check_series_name

API_PREFIX = "/api/v1"
BATCH = 1000
"""Points per request: the API's limit (``backend.external.schemas.POINTS_PER_BATCH``)."""
ALIASES = {"loss": "train_loss", "accuracy": "train_acc", "acc": "train_acc"}
"""What a training loop calls its numbers, and the series the lab's own training runs use for them."""
PROBE_SERIES = {"rel_error": "probe_rel_error", "cosine": "probe_cosine", "sign_agreement": "probe_sign_agreement",
                "peak_bytes": "peak_memory_bytes", "seconds": "probe_seconds", "nfe_forward": "nfe_forward",
                "nfe_backward": "nfe_backward"}
"""A :class:`anode_core.instruments.check.MethodCheck` field, and its series (prefixed ``<method>/``)."""
RUN_FILE, POINTS_FILE = "run.json", "points.jsonl"


class TrackerSettings(BaseSettings):
    """What the tracker reads from the environment (``ANODE_URL``, ``ANODE_API_KEY``, ``ANODE_DASHBOARD_URL``)."""

    model_config = SettingsConfigDict(env_prefix="ANODE_", extra="ignore")

    url: str | None = None
    api_key: str | None = None
    dashboard_url: str = "http://127.0.0.1:8501"


def api_base(url: str) -> str:
    url = url.rstrip("/")
    return url if url.endswith(API_PREFIX) else url + API_PREFIX


def _say(text: str) -> None:
    print(f"anode-lab: {text}", file=sys.stderr, flush=True)


def _in_notebook() -> bool:
    return "ipykernel" in sys.modules


class Sender:
    """Sends a run's points from a background thread: batches every ``flush_seconds``, an empty batch as the
    heartbeat, and on a failure keeps the points (memory and ``folder``) and says so once."""

    def __init__(self, client: httpx.Client, run_id: int, folder: Path, flush_seconds: float,
                 heartbeat_seconds: float) -> None:
        self.client, self.run_id, self.folder = client, run_id, folder
        self.flush_seconds, self.heartbeat_seconds = flush_seconds, heartbeat_seconds
        self.queue: deque[dict[str, Any]] = deque()
        self.sent = 0
        self.closed_by_server: str | None = None
        self._down_said = False
        self._spilled = 0
        self._wake = threading.Event()
        self._stop = False
        self._last_post = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name=f"anode-track-{run_id}", daemon=True)
        self._thread.start()

    def put(self, point: dict[str, Any]) -> None:
        self.queue.append(point)

    def close(self, timeout: float = 30.0) -> int:
        """Send what is left (for at most ``timeout`` seconds); returns the number of points not sent."""
        self._stop = True
        self._wake.set()
        self._thread.join(timeout)
        return len(self.queue)

    def _loop(self) -> None:
        while True:
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            stopping = self._stop
            self._send()
            if stopping or self.closed_by_server:
                return

    def _send(self) -> None:
        while self.closed_by_server is None:
            batch = [self.queue[i] for i in range(min(BATCH, len(self.queue)))]
            if not batch and time.monotonic() - self._last_post < self.heartbeat_seconds:
                return
            try:
                response = self.client.post(f"/external/{self.run_id}/points", json={"points": batch})
            except httpx.HTTPError as error:
                self._down(f"{type(error).__name__}: {error}")
                return
            if response.status_code in (403, 404, 409, 422):
                self.closed_by_server = _detail(response)
                _say(f"run {self.run_id} takes no more points: {self.closed_by_server}")
                return
            if response.status_code >= 400:
                self._down(f"HTTP {response.status_code}: {_detail(response)}")
                return
            for _ in batch:
                self.queue.popleft()
            self.sent += len(batch)
            self._last_post = time.monotonic()
            if self._down_said:
                _say(f"the server answers again; run {self.run_id} is up to date")
                self._down_said = False
            if len(batch) < BATCH:
                return

    def _down(self, why: str) -> None:
        """Keep everything not yet sent in ``folder`` too (a crash of the script then loses nothing)."""
        pending = list(self.queue)[self._spilled - self.sent if self._spilled > self.sent else 0:]
        if pending:
            self.folder.mkdir(parents=True, exist_ok=True)
            with open(self.folder / POINTS_FILE, "a") as out:
                out.writelines(json.dumps(p) + "\n" for p in pending)
            self._spilled = self.sent + len(self.queue)
        if not self._down_said:
            _say(f"the server did not take the points ({why}); training goes on, the points are kept in "
                 f"{self.folder} and sent when it answers")
            self._down_said = True


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", response.text))
    except ValueError:
        return response.text[:200]


def _method_label(method: Any) -> str:
    """``anode``, ``anode(checkpoints=2)``, ``adjoint(reconstruct=False)``: a series-safe name of a method."""
    if isinstance(method, str):
        return method
    from anode_core.instruments.check import method_label

    return method_label(method).lower().replace(" ", "").replace("'", "")


class TrackedRun:
    """What ``track`` yields: :meth:`log` a step's numbers; :attr:`id` is the run's id (``None`` offline)."""

    def __init__(self, *, run_id: int | None, folder: Path, sender: Sender | None, link: str | None,
                 probe: tuple[Any, Any, Callable[..., Any]] | None, probe_every: int, methods: Sequence[Any],
                 steps: int | None, tensorboard: Path | None = None) -> None:
        self.id, self.folder, self.link = run_id, folder, link
        self._board = None
        if tensorboard is not None:
            from anode_lab.tensorboard import writer

            self._board = writer(tensorboard)
        self._sender = sender
        self._probe, self._probe_every, self._methods = probe, probe_every, tuple(methods)
        self._points_file = None if sender is not None else open(folder / POINTS_FILE, "a")
        self.steps_logged = 0
        self.probes = 0
        self.last: dict[str, float | None] = {}
        self.diverged_at: int | None = None
        self._bar = None
        if steps is not None and sys.stderr.isatty() and not _in_notebook():
            from tqdm import tqdm

            self._bar = tqdm(total=steps, desc=f"run {run_id}" if run_id else "run", unit="step", leave=False)

    def log(self, step: int, **values: float) -> None:
        """Record ``values`` at ``step``; every ``probe_every`` steps also the gradient probe of every method."""
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"`step` must be an integer ≥ 0; got {step!r}")
        point: dict[str, float | None] = {}
        for name, value in values.items():
            series = ALIASES.get(name, name)
            check_series_name(series)
            number = float(value)
            point[series] = number if math.isfinite(number) else None
            if not math.isfinite(number) and "loss" in series and self.diverged_at is None:
                self.diverged_at = step
        if self._probe is not None and step % self._probe_every == 0:
            point |= self.probe()
        self._emit({"step": step, "values": point})
        self.last |= point
        self.steps_logged += 1
        if self._bar is not None:
            self._bar.update(1)

    def probe(self) -> dict[str, float | None]:
        """``anode_core.check`` on the probe (the user's gradients are left as they were): per method, the relative
        error, cosine and sign agreement against the exact gradient, bytes held for backward, time and NFE."""
        import anode_core as ac

        assert self._probe is not None
        model, batch, loss = self._probe
        saved = {p: p.grad for p in model.parameters()}
        try:
            report = ac.check(model, batch, loss, methods=self._methods)
        finally:
            for p, grad in saved.items():
                p.grad = grad
        out: dict[str, float | None] = {}
        for row, method in zip(report.methods, ("direct", *self._non_direct()), strict=False):
            label = _method_label(method)
            for field, series in PROBE_SERIES.items():
                value = getattr(row, field)
                out[f"{label}/{series}"] = float(value) if value is not None and math.isfinite(value) else None
        self.probes += 1
        return out

    def _non_direct(self) -> list[Any]:
        return [m for m in self._methods if _method_label(m) != "direct"]

    def _emit(self, point: dict[str, Any]) -> None:
        if self._board is not None:
            from anode_lab.tensorboard import write_points

            write_points(self._board, [(point["step"], point["values"])])
        if self._sender is not None:
            self._sender.put(point)
        else:
            assert self._points_file is not None
            self._points_file.write(json.dumps(point) + "\n")

    def _close(self) -> None:
        if self._board is not None:
            self._board.close()
        if self._bar is not None:
            self._bar.close()
        if self._points_file is not None:
            self._points_file.close()


@contextmanager
def track(name: str = "", *, url: str | None = None, api_key: str | None = None, tags: Sequence[str] = (),
          group: str | None = None, gradient: str | None = None,
          probe: tuple[Any, Any, Callable[..., Any]] | None = None, probe_every: int = 50,
          methods: Sequence[Any] = ("direct", "anode", "adjoint"), steps: int | None = None,
          folder: str | Path | None = None, tensorboard: str | Path | None = None, flush_seconds: float = 1.0,
          heartbeat_seconds: float = 2.0) -> Iterator[TrackedRun]:
    """Track a training loop of your own as a lab run; see the module's docstring.

    ``url`` defaults to ``ANODE_URL`` and ``api_key`` to ``ANODE_API_KEY``; with neither ``url`` nor ``ANODE_URL``
    the run is written to ``folder`` (default ``./anode-runs/<name>-<time>``) for ``anode-lab import``. ``probe`` is
    ``(model, batch, loss)`` as ``anode_core.check`` takes them (``loss(model, batch)`` returns a scalar), run every
    ``probe_every`` steps on ``methods`` (``Direct``, the exact reference, is always among them). ``group`` puts
    runs opened with the same group name side by side, each labelled by its ``gradient`` (the method your loop
    trains with, e.g. ``"anode"``). ``steps`` sizes the progress bar (terminals only). With
    ``tensorboard=DIR`` the same series are also written as TensorBoard scalars there (the ``tensorboard`` extra).
    """
    if isinstance(probe_every, bool) or not isinstance(probe_every, int) or probe_every < 1:
        raise ValueError(f"`probe_every` must be an integer ≥ 1 (probe every k steps); got {probe_every!r}")
    if probe is not None and (not isinstance(probe, tuple) or len(probe) != 3 or not callable(probe[2])):
        raise ValueError("`probe` must be (model, batch, loss) with loss(model, batch) -> scalar tensor, as "
                         "anode_core.check takes them")
    labels = [_method_label(m) for m in methods]
    for label in labels:
        check_series_name(f"{label}/probe_rel_error")
    settings = TrackerSettings()
    url = url or settings.url
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    where = Path(folder) if folder is not None else Path("anode-runs") / f"{name or 'run'}-{stamp}"
    meta: dict[str, Any] = {"name": name, "tags": list(tags), "group": group, "gradient": gradient,
                            "methods": labels,
                            "probe_every": probe_every if probe is not None else None, "started_at": stamp}
    client: httpx.Client | None = None
    sender: Sender | None = None
    run_id: int | None = None
    link: str | None = None
    if url:
        key = api_key or settings.api_key
        client = httpx.Client(base_url=api_base(url), timeout=10,
                              headers={"X-API-Key": key} if key else {})
        opened = client.post("/external", json={k: meta[k] for k in ("name", "tags", "group", "gradient",
                                                                     "methods", "probe_every")})
        if opened.status_code != 201:
            client.close()
            raise RuntimeError(f"the lab at {url} refused the run (HTTP {opened.status_code}): {_detail(opened)}")
        run_id = int(opened.json()["id"])
        link = f"{settings.dashboard_url.rstrip('/')}/run_detail?run={run_id}"
        sender = Sender(client, run_id, where, flush_seconds, heartbeat_seconds)
        if _in_notebook():
            print(f"anode-lab run {run_id}: {link}")
    else:
        where.mkdir(parents=True, exist_ok=True)
        (where / RUN_FILE).write_text(json.dumps(meta | {"status": "running"}, indent=1))
    run = TrackedRun(run_id=run_id, folder=where, sender=sender, link=link, probe=probe, probe_every=probe_every,
                     methods=methods, steps=steps, tensorboard=Path(tensorboard) if tensorboard is not None else None)
    status, message, error_type = "succeeded", "", ""
    try:
        yield run
    except BaseException as error:
        status, error_type = "failed", type(error).__name__
        message = " ".join(str(error).split())[:4000] or error_type  # one line: stored text holds no control chars
        raise
    finally:
        if status == "succeeded" and run.diverged_at is not None:
            status, message = "diverged", f"a logged loss was not finite at step {run.diverged_at}"
        run._close()
        _finish(run, meta, client, sender, status, message, error_type)


def _finish(run: TrackedRun, meta: dict[str, Any], client: httpx.Client | None, sender: Sender | None,
            status: str, message: str, error_type: str) -> None:
    ended = {"status": status, "message": message, "error_type": error_type}
    if client is None or sender is None:
        (run.folder / RUN_FILE).write_text(json.dumps(meta | ended, indent=1))
        where = f"written to {run.folder}; upload it with `anode-lab import {run.folder}`"
    else:
        unsent = sender.close()
        if sender.closed_by_server is None:
            try:
                response = client.post(f"/external/{run.id}/end", json=ended)
                if response.status_code >= 400:
                    _say(f"run {run.id} could not be ended as {status}: {_detail(response)}")
            except httpx.HTTPError as error:
                _say(f"run {run.id} could not be ended as {status} ({error}); the service fails it as lost")
        client.close()
        if unsent:
            run.folder.mkdir(parents=True, exist_ok=True)
            (run.folder / RUN_FILE).write_text(json.dumps(meta | ended, indent=1))
            _say(f"{unsent} points were not sent; they are in {run.folder} (`anode-lab import {run.folder}` "
                 "uploads the whole run as a new one)")
        where = run.link or ""
    if not _in_notebook():
        loss = run.last.get("train_loss")
        shown = f", loss {loss:.4g}" if isinstance(loss, float) else ""
        print(f"anode-lab: run {run.id if run.id is not None else ''} {status}: {run.steps_logged} steps{shown}, "
              f"{run.probes} probes · {where}", file=sys.stderr, flush=True)


def import_folder(folder: Path, *, url: str | None = None, api_key: str | None = None) -> int:
    """Upload a run that ``track`` wrote offline (``run.json`` and ``points.jsonl``); returns its new id."""
    settings = TrackerSettings()
    url = url or settings.url or "http://127.0.0.1:8000"
    meta_file, points_file = folder / RUN_FILE, folder / POINTS_FILE
    if not meta_file.is_file():
        raise FileNotFoundError(f"{folder} holds no {RUN_FILE}: it is not a folder that anode_lab.track wrote")
    meta: Mapping[str, Any] = json.loads(meta_file.read_text())
    key = api_key or settings.api_key
    with httpx.Client(base_url=api_base(url), timeout=30, headers={"X-API-Key": key} if key else {}) as client:
        opened = client.post("/external", json={k: meta.get(k) for k in ("name", "tags", "group", "gradient",
                                                                         "methods", "probe_every")})
        if opened.status_code != 201:
            raise RuntimeError(f"the lab at {url} refused the run (HTTP {opened.status_code}): {_detail(opened)}")
        run_id = int(opened.json()["id"])
        batch: list[dict[str, Any]] = []
        lines = points_file.read_text().splitlines() if points_file.is_file() else []
        for line in lines:
            batch.append(json.loads(line))
            if len(batch) == BATCH:
                _post(client, f"/external/{run_id}/points", {"points": batch})
                batch = []
        if batch:
            _post(client, f"/external/{run_id}/points", {"points": batch})
        status = meta.get("status", "running")
        ended = {"status": status if status in ("succeeded", "failed", "diverged") else "failed",
                 "message": meta.get("message") or ("" if status != "running" else
                                                    "the script ended without saying how (imported as failed)"),
                 "error_type": meta.get("error_type", "")}
        _post(client, f"/external/{run_id}/end", ended)
    return run_id


def _post(client: httpx.Client, path: str, body: dict[str, Any]) -> None:
    response = client.post(path, json=body)
    if response.status_code >= 400:
        raise RuntimeError(f"POST {path} failed (HTTP {response.status_code}): {_detail(response)}")
