"""The one place the dashboard speaks HTTP: :class:`ApiClient` wraps every endpoint of ``/api/v1``.

The base URL comes from ``ANODE_API_URL`` (default ``http://127.0.0.1:8000``; ``/api/v1`` is appended when it
is missing). The dashboard holds no API key of its own: a person signs in with theirs (``dashboard.access``), and
:meth:`ApiClient.with_key` sends it for their session only. Every request says ``X-Requested-With``, as the API
asks of a POST that is not a browser form. Failures become two exceptions:
:class:`ApiUnreachable` (no answer: the pages show a banner) and :class:`ApiError` (an answer with an error
status, carrying the API's ``detail`` and, for a 422, the per-field ``errors``).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict, TypeVar, cast

import httpx
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

API_PREFIX = "/api/v1"
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
"""Host names served when ``ANODE_ALLOWED_HOSTS`` is not set (the API's ``backend.settings.LOOPBACK_HOSTS``)."""
CLIENT_HEADER = {"X-Requested-With": "anode-lab-dashboard"}
T = TypeVar("T")
DEFAULT_URL = "http://127.0.0.1:8000"
PAGE = 100
"""Runs asked for per ``GET /runs`` (the API caps a page)."""


class RunProgress(TypedDict):
    done: int
    total: int
    note: str


class Run(TypedDict):
    """A run as ``GET /runs/{id}`` returns it (``backend.runs.schemas.RunPublic``); times are ISO strings."""

    id: int
    kind: str
    name: str
    tags: list[str]
    spec: dict[str, Any]
    status: str
    status_detail: str
    device: str
    attempt: int
    worker: str | None
    heartbeat: str | None
    cancel_requested: bool
    created_at: str
    started_at: str | None
    finished_at: str | None
    updated_at: str
    progress: RunProgress | None
    summary: dict[str, Any] | None
    message: str
    error: dict[str, Any] | None
    group_id: int | None


class RunsPage(TypedDict):
    data: list[Run]
    count: int


class SeriesPoints(TypedDict):
    steps: list[int]
    values: list[float | None]


class Metrics(TypedDict):
    """A metrics payload (``GET /runs/{id}/metrics``): ``values`` are ``None`` where a value was not finite."""

    series: dict[str, SeriesPoints]
    last_step: int | None
    decimated: bool


class Group(TypedDict):
    """Runs made side by side, one per gradient method (``POST /groups``)."""

    id: int
    kind: str
    name: str
    created_at: str
    runs: list[Run]


class ClientSettings(BaseSettings):
    """What the dashboard process is told, as ``ANODE_<NAME>`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="ANODE_", extra="ignore", frozen=True)

    api_url: str = Field(DEFAULT_URL, description="the API's address, with or without /api/v1")
    api_timeout: float = Field(10.0, gt=0, description="seconds to wait for one answer")
    allowed_hosts: str | None = Field(None, description="comma-separated Host names the dashboard answers "
                                      "(`*.lab.example`, `*`); default the loopback names")

    @property
    def base_url(self) -> str:
        url = self.api_url.rstrip("/")
        return url if url.endswith(API_PREFIX) else url + API_PREFIX

    @property
    def hosts(self) -> tuple[str, ...]:
        """The Host names served, lower-case: ``allowed_hosts``, else :data:`LOOPBACK_HOSTS`."""
        names = tuple(n.strip().lower() for n in (self.allowed_hosts or "").split(",") if n.strip())
        return names or LOOPBACK_HOSTS


class ApiUnreachable(Exception):
    """No answer from the API (refused, timed out, DNS): the server is down or the URL is wrong."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"the API at {url} did not answer ({reason})")
        self.url, self.reason = url, reason


@dataclass(eq=False)
class ApiError(Exception):
    """The API answered with an error status; ``errors`` lists pydantic errors for a 422."""

    status: int
    error: str
    detail: str
    errors: list[dict[str, Any]] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.status} {self.error}: {self.detail}"

    def field_errors(self) -> dict[str, str]:
        """``{"ode.steps": "Input should be …"}``: messages by dotted field path inside the spec; errors about
        the whole spec (model validators) are under ``""``, and errors outside the spec keep their full path."""
        out: dict[str, str] = {}
        for e in self.errors:
            loc = [str(part) for part in e.get("loc", []) if str(part) != "body"]
            if loc and loc[0] == "spec":
                loc = loc[1:]
            path = ".".join(loc)
            message = str(e.get("msg", "")).removeprefix("Value error, ")
            out[path] = f"{out[path]}; {message}" if path in out else message
        return out


class ApiClient:
    """Typed-enough calls to every endpoint; returns the API's JSON as plain dicts and lists."""

    def __init__(self, settings: ClientSettings | None = None, *, transport: httpx.BaseTransport | None = None,
                 key: str | None = None) -> None:
        self.settings = settings or ClientSettings()
        self._http = httpx.Client(base_url=self.settings.base_url, headers=CLIENT_HEADER,
                                  timeout=self.settings.api_timeout, transport=transport)
        self._headers = {"X-API-Key": key} if key else {}

    def with_key(self, key: str | None) -> ApiClient:
        """This client (its connection pool) sending ``key`` as ``X-API-Key``: one person's view of the API."""
        view = copy.copy(self)
        view._headers = {"X-API-Key": key} if key else {}
        return view

    @property
    def base_url(self) -> str:
        return self.settings.base_url

    def close(self) -> None:
        self._http.close()

    # ------------------------------------------------------------------------------------------ service
    def health(self) -> dict[str, Any]:
        return self._json(dict[str, Any], "GET", "/health")

    def catalog(self) -> dict[str, Any]:
        return self._json(dict[str, Any], "GET", "/catalog")

    # --------------------------------------------------------------------------------------------- runs
    def create_run(self, kind: str, spec: Mapping[str, Any], *, name: str = "",
                   tags: Sequence[str] = ()) -> Run:
        """Queue a run; a bad spec raises :class:`ApiError` (422) with per-field ``errors``."""
        body = {"kind": kind, "spec": dict(spec), "name": name, "tags": list(tags)}
        return self._json(Run, "POST", "/runs", json=body)

    def create_group(self, spec: Mapping[str, Any], methods: Sequence[Mapping[str, Any]], *, name: str = "",
                     tags: Sequence[str] = ()) -> Group:
        """One training run per gradient method in ``methods``, otherwise identical; all or none are made."""
        body = {"kind": "train", "spec": dict(spec), "methods": [dict(m) for m in methods], "name": name,
                "tags": list(tags)}
        return self._json(Group, "POST", "/groups", json=body)

    def get_group(self, group_id: int) -> Group:
        return self._json(Group, "GET", f"/groups/{group_id}")

    def list_runs(self, *, status: str | None = None, kind: str | None = None, tag: str | None = None,
                  offset: int = 0, limit: int = PAGE) -> RunsPage:
        """``{"data": [...], "count": n}``, newest first."""
        params = {k: v for k, v in (("status", status), ("kind", kind), ("tag", tag)) if v is not None}
        return self._json(RunsPage, "GET", "/runs", params={**params, "offset": offset, "limit": limit})

    def recent_runs(self, *, status: str | None = None, kind: str | None = None, tag: str | None = None,
                    most: int = 500) -> RunsPage:
        """Up to ``most`` runs, newest first, read in pages of :data:`PAGE`; ``{"data", "count"}`` as one page."""
        data: list[Run] = []
        count = 0
        while len(data) < most:
            page = self.list_runs(status=status, kind=kind, tag=tag, offset=len(data),
                                  limit=min(PAGE, most - len(data)))
            data.extend(page["data"])
            count = page["count"]
            if not page["data"] or len(data) >= count:
                break
        return {"data": data, "count": count}

    def get_run(self, run_id: int) -> Run:
        return self._json(Run, "GET", f"/runs/{run_id}")

    def cancel_run(self, run_id: int) -> Run:
        return self._json(Run, "POST", f"/runs/{run_id}/cancel")

    def rerun(self, run_id: int) -> Run:
        return self._json(Run, "POST", f"/runs/{run_id}/rerun")

    def delete_run(self, run_id: int) -> None:
        self._request("DELETE", f"/runs/{run_id}")

    # ------------------------------------------------------------------------------------------ metrics
    def metrics(self, run_id: int, *, series: Iterable[str] | None = None, after_step: int | None = None,
                points: int | None = None) -> Metrics:
        """``{"series": {name: {"steps", "values"}}, "last_step", "decimated"}``; pass the previous
        ``last_step`` as ``after_step`` to get only newer points, ``points`` to let the API decimate."""
        params: list[tuple[str, str | int]] = [("series", s) for s in series or ()]
        if after_step is not None:
            params.append(("after_step", after_step))
        if points is not None:
            params.append(("points", points))
        return self._json(Metrics, "GET", f"/runs/{run_id}/metrics", params=params)

    def metrics_csv(self, run_id: int) -> bytes:
        """Every series at full resolution, one row per step."""
        return self._request("GET", f"/runs/{run_id}/metrics", params={"format": "csv"}).content

    # ---------------------------------------------------------------------------------------- artifacts
    def artifacts(self, run_id: int) -> list[dict[str, Any]]:
        return list(self._json(dict[str, Any], "GET", f"/runs/{run_id}/artifacts")["data"])

    def artifact(self, run_id: int, name: str) -> bytes:
        return self._request("GET", f"/runs/{run_id}/artifacts/{name}").content

    # ------------------------------------------------------------------------------------------ plumbing
    def _json(self, shape: type[T], method: str, path: str, **kwargs: Any) -> T:
        """The JSON object the API answered, of the ``shape`` its OpenAPI schema gives for ``path``."""
        response = self._request(method, path, **kwargs)
        body = response.json()
        if not isinstance(body, dict):  # every endpoint answers an object; anything else is not this API
            raise ApiError(response.status_code, "unexpected_response", f"{path} answered a {type(body).__name__}")
        return cast(T, body)

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, headers=self._headers, **kwargs)
        except httpx.TransportError as exc:
            raise ApiUnreachable(self.base_url, type(exc).__name__ + (f": {exc}" if str(exc) else "")) from exc
        if response.is_error:
            raise _error_of(response)
        return response


def _error_of(response: httpx.Response) -> ApiError:
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    detail = body.get("detail")
    if not isinstance(detail, str):
        detail = response.text[:500] or response.reason_phrase
    return ApiError(response.status_code, str(body.get("error", "http_error")), detail, list(body.get("errors") or []))
