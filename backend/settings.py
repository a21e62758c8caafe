"""One settings object per process, read from ``ANODE_*`` environment variables and validated at start-up."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

if TYPE_CHECKING:
    from anode_lab.specs.cost import RunLimits

DeviceClass = Literal["cpu", "gpu"]
DEVICE_CLASSES: tuple[DeviceClass, ...] = ("cpu", "gpu")

LOOPBACK_NAMES = {"localhost", "ip6-localhost"}
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
"""The Host names served when ``ANODE_ALLOWED_HOSTS`` is not set (``dashboard.access`` keeps the same list)."""
RUN_MEMORY_FRACTION = 0.5
"""Default ``ANODE_MAX_RUN_BYTES``: this share of the machine's memory for one run."""


def default_max_run_bytes() -> int:
    """Half the machine's physical memory (8 GiB where the machine does not say)."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") * RUN_MEMORY_FRACTION)
    except (ValueError, OSError):
        return 8 * 2**30


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


API_PREFIX = "/api/v1"
"""Where the API's routes live (the dashboard, the launcher and the health probe build their URLs on it)."""


class Settings(BaseSettings):
    """Everything a service process may be told; each field is ``ANODE_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="ANODE_", extra="ignore", frozen=True)

    data_dir: Path = Field(Path("~/.local/share/anode-lab"), description="runs, SQLite files and artifacts")
    database_url: str | None = Field(None, description="postgresql+psycopg://… (several hosts) or sqlite:///PATH; "
                                     "default SQLite at data_dir/anode.db")
    queue_url: str | None = Field(None, description="redis://… for RedisHuey; default SqliteHuey at data_dir/queue.db")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    dashboard_port: int = Field(8501, ge=1, le=65535, description="where `anode-lab up` serves the dashboard")
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="comma-separated; required when host is not loopback"
    )
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="comma-separated Host names the API answers (`*.lab.example` for "
        "subdomains, `*` for any, behind a proxy that checks them); default the loopback names and `host`. A request "
        "for any other name (a DNS-rebinding page) gets 400 before anything else happens"
    )
    max_body_bytes: int = Field(1_048_576, ge=1024, description="largest request body accepted")
    request_timeout_seconds: float = Field(10.0, gt=0, le=300, description="a connection whose request (line, "
                                           "headers and body) has not arrived whole this long after it opened or "
                                           "after the request's first byte is answered 408 and closed")
    api_processes: int = Field(1, ge=1, le=64, description="processes `anode-lab api` serves from, sharing its "
                               "port: more answer a busy lab's clients sooner (`bench/service.py` on PostgreSQL, 2 "
                               "cores: p99 fell with each of 2, 3 and 4). Each keeps its own caps (connections per "
                               "peer, streams, create rate), so a client spread over N of them may reach N times those")
    max_connections_per_peer: int = Field(128, ge=1, description="connections one peer address may hold open at "
                                           "once; more are answered 429 and closed (peers in trusted_proxies are "
                                           "not capped)")
    heartbeat_seconds: float = Field(1.0, gt=0, description="how often a worker renews its lease")
    heartbeat_timeout_seconds: float = Field(8.0, gt=0, description="a lease older than this is stale: a run on a "
                                             "dead worker of another host moves again about this much later")
    reaper_seconds: float = Field(1.0, gt=0, description="how often a worker looks for stale runs and for dead "
                                  "workers of its own host")
    retry_limit: int = Field(2, ge=0, description="re-queues after a lost worker before the run fails")
    poll_seconds: float = Field(0.1, gt=0, le=5, description="queue poll interval of an idle worker")
    metrics_flush_seconds: float = Field(0.25, ge=0, description="a worker writes buffered metrics this often, "
                                         "one transaction each (a run's child sends them every 0.1 s)")
    cancel_poll_seconds: float = Field(0.1, ge=0, description="a worker reads the cancel flag at most this often")
    worker_nice: int = Field(10, ge=0, le=19, description="how far a worker and its runs yield the CPU to the API, "
                             "the store and the dashboard on the same host: a Linux nice value, also given to the "
                             "worker's session (its autogroup) when the worker leads one, as under `anode-lab up`; "
                             "0: not at all")
    torch_threads: int | None = Field(None, ge=1, le=256, description="intra-op threads of a worker's torch; "
                                      "default torch's own (set 1 when several workers share few cores)")
    fan_out: bool = Field(True, description="a compare sweep's parts run as their own queue messages on every "
                          "worker of its queue (false: one worker runs the whole sweep)")
    sse_poll_seconds: float = Field(0.5, gt=0, description="how often an event stream looks for news")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="comma-separated origins allowed to call the API from a browser; "
        "default none (CORS closed)"
    )
    create_rate_per_minute: float = Field(120.0, gt=0, description="runs one client (API key, else address) may "
                                          "create per minute, after a burst of `create_burst`")
    create_burst: int = Field(60, ge=1, description="runs one client may create at once before the rate applies")
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="comma-separated addresses (or CIDR networks) of reverse proxies whose "
        "X-Forwarded-For names the client; default none (the peer address is the client)"
    )
    sse_window_points: int = Field(1000, ge=1, le=100_000, description="points per series in an event stream's "
                                   "first event; older ones are paged back with GET /runs/{id}/metrics?before_step")
    max_streams: int = Field(64, ge=1, description="event streams and metric reads served at once, in all")
    max_streams_per_client: int = Field(8, ge=1, description="event streams and metric reads one client (API key, "
                                        "else address) may hold at once")
    stream_send_timeout_seconds: float = Field(30.0, gt=0, description="a stream whose client reads nothing for "
                                               "this long is ended")
    min_free_disk_bytes: int = Field(1 << 30, ge=0, description="/health reports low disk below this many free "
                                     "bytes under data_dir")
    data_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list, description="comma-separated folders a run's data `root` must lie under (symlinks "
        "and `..` resolved); default data_dir/datasets"
    )
    max_run_bytes: int = Field(default_factory=default_max_run_bytes, ge=2**20, description="a spec whose "
                               "estimated peak memory is larger is refused (422); a run's child process gets this "
                               "much memory beyond its start-up size; default half the machine's memory")
    max_run_steps: int = Field(10**8, ge=1, description="a spec that would take more ODE solver steps (forward and "
                               "backward, over every block and training step or sweep cell) is refused (422)")
    max_external_points: int = Field(5_000_000, ge=1000, description="metric points one external run (a user's "
                                     "own training loop, anode_lab.track) may store")
    max_run_disk_bytes: int = Field(2 * 2**30, ge=2**20, description="a spec whose estimated disk (metric rows, "
                                    "checkpoints, artifacts) is larger is refused (422); a run keeps at most this "
                                    "much of artifacts (or a checkpoint) in the store")
    max_run_seconds: float = Field(24 * 3600.0, gt=0, description="a run still going after this long is stopped "
                                   "and fails with \"time limit\"")

    @field_validator("data_dir")
    @classmethod
    def _expand(cls, path: Path) -> Path:
        return path.expanduser().resolve()

    @field_validator("data_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("data_roots")
    @classmethod
    def _resolve_roots(cls, roots: list[Path]) -> list[Path]:
        return [root.expanduser().resolve() for root in roots]

    @field_validator("api_keys", "cors_origins", "trusted_proxies", "allowed_hosts", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value

    @field_validator("allowed_hosts")
    @classmethod
    def _host_patterns(cls, names: list[str]) -> list[str]:
        for name in names:
            if "*" in name[1:] or (name.startswith("*") and name != "*" and not name.startswith("*.")):
                raise ValueError(f"`ANODE_ALLOWED_HOSTS`: {name!r} is not a host name; a wildcard may only start "
                                 "a name (`*.lab.example`) or stand alone (`*`)")
        return names

    @field_validator("queue_url")
    @classmethod
    def _known_queue(cls, url: str | None) -> str | None:
        if url and not url.startswith(("redis://", "rediss://", "unix://", "sqlite:///")):
            raise ValueError("`ANODE_QUEUE_URL` must be redis://…, rediss://…, unix://… or sqlite:///PATH; "
                             f"got {url!r}")
        return url

    @field_validator("database_url")
    @classmethod
    def _known_store(cls, url: str | None) -> str | None:
        if url and not url.startswith(("sqlite:///", "postgresql+psycopg://")):
            raise ValueError("`ANODE_DATABASE_URL` must be postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB (the "
                             f"`postgres` extra) or sqlite:///PATH; got {url.split(':', 1)[0]}:…")
        return url

    @model_validator(mode="after")
    def _lease_outlasts_heartbeats(self) -> Settings:
        if self.heartbeat_seconds * 2 > self.heartbeat_timeout_seconds:
            raise ValueError(
                f"`ANODE_HEARTBEAT_SECONDS` ({self.heartbeat_seconds:g}) must be at most half of "
                f"`ANODE_HEARTBEAT_TIMEOUT_SECONDS` ({self.heartbeat_timeout_seconds:g}): a worker writes into its "
                "run only while its last renewal is younger than half the lease; lower the first or raise the second")
        return self

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'anode.db'}"

    @property
    def queue_path(self) -> Path:
        """The SqliteHuey file when no Redis URL is given."""
        if self.queue_url and self.queue_url.startswith("sqlite:///"):
            return Path(self.queue_url.removeprefix("sqlite:///"))
        return self.data_dir / "queue.db"

    @property
    def served_hosts(self) -> list[str]:
        """``allowed_hosts``, else the loopback names plus ``host`` when it names one address (not 0.0.0.0 or ::)."""
        if self.allowed_hosts:
            return [name.lower() for name in self.allowed_hosts]
        own = f"[{self.host}]" if ":" in self.host else self.host
        wildcard = self.host in ("0.0.0.0", "::", "")
        return [*LOOPBACK_HOSTS, *([] if wildcard or own in LOOPBACK_HOSTS else [own.lower()])]

    @property
    def runs_dir(self) -> Path:
        return self.data_dir / "runs"

    @property
    def allowed_data_roots(self) -> tuple[Path, ...]:
        """``data_roots``, or ``data_dir/datasets`` when none is configured (resolved)."""
        return tuple(self.data_roots) or ((self.data_dir / "datasets").resolve(),)

    @property
    def run_limits(self) -> RunLimits:
        """What one spec may ask for, as the spec checks (:func:`anode_lab.specs.cost.admit`) take it."""
        from anode_lab.specs.cost import RunLimits

        return RunLimits(max_bytes=self.max_run_bytes, max_steps=self.max_run_steps,
                         data_roots=self.allowed_data_roots, max_disk_bytes=self.max_run_disk_bytes)

    def run_dir(self, run_id: int) -> Path:
        """Working folder of one run: checkpoints, the metrics journal and ``artifacts/``."""
        return self.runs_dir / str(run_id)

    def check_bind(self) -> None:
        """Refuse to serve beyond loopback without API keys (called by the API entry point)."""
        if not is_loopback(self.host) and not self.api_keys:
            raise ValueError(
                f"binding {self.host} exposes the API beyond this machine: set ANODE_API_KEYS "
                "(comma-separated) or bind 127.0.0.1"
            )
