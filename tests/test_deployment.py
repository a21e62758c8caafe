"""The docker-compose deployment, checked without a Docker engine: the YAML is loaded, its variables are
interpolated from ``.env.example`` (secrets filled in) the way Compose does, and every command and setting in it
is checked against the real CLI parser and settings classes. The distributed end-to-end tests
(``test_service_e2e.py[distributed]``) run these settings (a PostgreSQL store, a password-protected Redis
queue) against real servers; ``test_health_probes_of_the_containers`` runs the health-check commands."""

from __future__ import annotations

import ast
import os
import re
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
GPU_HOST = ROOT / "docker-compose.gpu-host.yml"
SECRETS = {"POSTGRES_PASSWORD": "pg-secret", "REDIS_PASSWORD": "redis-secret", "ANODE_API_KEYS": "key-1,key-2",
           "ANODE_MAIN_HOST": "10.0.0.5"}
TORCH_SERVICES = ("api", "worker-cpu", "worker-gpu")
WORKER_GRACE_MIN_S = 60.0
VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|\$\$")


def env_example() -> dict[str, str]:
    values = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's ``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}`` and ``$$``, applied to every string."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name", "op", "arg")
        current = env.get(name)
        if op in (":-", "-") and (current is None or (op == ":-" and not current)):
            return arg
        if op in (":?", "?") and (current is None or (op == ":?" and not current)):
            raise KeyError(f"{name}: {arg}")
        return current or ""

    return VARIABLE.sub(one, value)


def load(path: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    return interpolate(yaml.safe_load(path.read_text()), {**env_example(), **SECRETS} if env is None else env)


def seconds(duration: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load(COMPOSE)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def anode_commands(service: dict[str, Any]) -> list[list[str]]:
    """The service's command and health check, where they are ``anode-lab`` command lines."""
    found = [service.get("command", [])]
    test = service.get("healthcheck", {}).get("test", [])
    if test and test[0] == "CMD":
        found.append(test[1:])
    return [command for command in found if command and command[0] == "anode-lab"]


def test_compose_has_the_services_with_health_checks_and_restart_policies(
        services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == {"api", "dashboard", "worker-cpu", "worker-gpu", "redis", "postgres"}
    for name, service in services.items():
        assert service["restart"] == "unless-stopped", name
        assert service["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name
        assert seconds(service["healthcheck"]["interval"]) > 0, name
    for name in ("api", "dashboard", "worker-cpu", "worker-gpu"):
        assert "api" in services[name].get("depends_on", {}) or name == "api"
    assert set(services["api"]["depends_on"]) == {"postgres", "redis"}
    conditions = {dep["condition"] for service in services.values() for dep in service.get("depends_on", {}).values()}
    assert conditions == {"service_healthy"}


def test_workers_stop_gracefully_longer_than_a_step_and_checkpoint(services: dict[str, dict[str, Any]]) -> None:
    for name in ("worker-cpu", "worker-gpu"):
        assert services[name].get("stop_signal", "SIGTERM") == "SIGTERM"
        assert seconds(services[name]["stop_grace_period"]) >= WORKER_GRACE_MIN_S, name
    gpu_host = load(GPU_HOST)["services"]["worker-gpu"]
    assert seconds(gpu_host["stop_grace_period"]) >= WORKER_GRACE_MIN_S


def test_every_command_is_a_real_anode_lab_subcommand(services: dict[str, dict[str, Any]]) -> None:
    from anode_lab.cli import build_parser

    parser = build_parser()
    seen = set()
    for name in TORCH_SERVICES:
        commands = anode_commands(services[name])
        assert len(commands) == 2, f"{name}: its command and its health check are anode-lab command lines"
        for command in commands:
            args = parser.parse_args(command[1:])
            assert callable(args.run)
            seen.add(command[1])
    assert seen == {"api", "worker", "health"}
    assert services["worker-cpu"]["command"][1:] == ["worker", "--device", "cpu"]
    assert services["worker-gpu"]["command"][1:] == ["worker", "--device", "gpu"]
    assert services["worker-cpu"]["healthcheck"]["test"][1:] == ["anode-lab", "health", "--worker"]


@pytest.mark.parametrize("name", TORCH_SERVICES)
def test_service_settings_are_valid_anode_settings(services: dict[str, dict[str, Any]], name: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from sqlalchemy.engine import make_url

    from backend.settings import Settings

    env = services[name]["environment"]
    fields = {f"ANODE_{field.upper()}" for field in Settings.model_fields}
    assert {key for key in env if key.startswith("ANODE_")} <= fields, f"{name}: unknown ANODE_* variables"
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    settings = Settings()
    url = make_url(settings.db_url)
    assert (url.drivername, url.host, url.password, url.database) == ("postgresql+psycopg", "postgres", "pg-secret",
                                                                       "anode")
    assert settings.queue_url == "redis://:redis-secret@redis:6379/0"  # the shape the distributed tests use
    assert str(settings.data_dir) == "/data"
    # no data volume is shared (a named volume or a host folder would be): artifacts and checkpoints are in the store
    assert all(":" not in volume for volume in services[name].get("volumes", [])), services[name].get("volumes")
    if name != "api":
        assert services[name]["volumes"] == ["/data"]  # each worker container its own scratch
    if name == "api":
        assert settings.host == "0.0.0.0" and settings.api_keys == ["key-1", "key-2"]
        settings.check_bind()  # a public bind with keys is allowed


def test_gpu_worker_reserves_one_nvidia_gpu_and_gets_a_cuda_torch(services: dict[str, dict[str, Any]]) -> None:
    for service in (services["worker-gpu"], load(GPU_HOST)["services"]["worker-gpu"]):
        devices = service["deploy"]["resources"]["reservations"]["devices"]
        assert len(devices) == 1 and devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
        assert devices[0]["device_ids"] == ["0"]  # one worker per GPU: ANODE_GPU picks which
        assert "/whl/cu" in service["build"]["args"]["TORCH_INDEX_URL"]
        assert service["command"] == ["anode-lab", "worker", "--device", "gpu"]
    assert services["worker-gpu"]["profiles"] == ["gpu"]
    picked = load(COMPOSE, {**env_example(), **SECRETS, "ANODE_GPU": "3"})["services"]["worker-gpu"]
    assert picked["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"] == ["3"]


def test_gpu_host_file_starts_only_gpu_workers_against_the_main_store(monkeypatch: pytest.MonkeyPatch) -> None:
    from backend.settings import Settings

    gpu_host = load(GPU_HOST)["services"]
    assert list(gpu_host) == ["worker-gpu"]
    for key, value in gpu_host["worker-gpu"]["environment"].items():
        monkeypatch.setenv(key, str(value))
    settings = Settings()
    assert settings.db_url == "postgresql+psycopg://anode:pg-secret@10.0.0.5:5432/anode"
    assert settings.queue_url == "redis://:redis-secret@10.0.0.5:6379/0"
    assert gpu_host["worker-gpu"]["volumes"] == ["/data"]  # its own scratch: no folder shared with the main machine
    with pytest.raises(KeyError, match="ANODE_MAIN_HOST"):
        load(GPU_HOST, {**env_example(), **SECRETS, "ANODE_MAIN_HOST": ""})


def test_stores_have_passwords_volumes_and_append_only(compose: dict[str, Any],
                                                       services: dict[str, dict[str, Any]]) -> None:
    redis, postgres = services["redis"], services["postgres"]
    config = redis_config(compose, redis)
    assert config["appendonly"] == "yes" and config["appendfsync"] == "everysec"
    assert config["requirepass"] == "redis-secret"
    assert postgres["environment"]["POSTGRES_PASSWORD"] == "pg-secret"
    assert any(v.endswith(":/var/lib/postgresql/data") for v in postgres["volumes"])
    assert any(v.endswith(":/data") for v in redis["volumes"])


def redis_config(compose: dict[str, Any], redis: dict[str, Any]) -> dict[str, str]:
    """The directives of the config file the redis command line names, as Compose writes it into the container."""
    path = redis["command"][1]
    mounted = [c for c in redis["configs"] if c["target"] == path]
    assert len(mounted) == 1, f"{path} is not mounted from a Compose config"
    lines = compose["configs"][mounted[0]["source"]]["content"].splitlines()
    return dict(line.split(None, 1) for line in lines if line.strip() and not line.startswith("#"))


def test_redis_runs_as_its_own_user_with_its_password_off_every_command_line(
        services: dict[str, dict[str, Any]]) -> None:
    """Finding 20.9: Redis was started through ``sh -c`` as root with ``--requirepass`` in its argv, and its health
    check passed the password with ``-a``: both visible in ``ps``. Now the image's entrypoint ``exec``s
    redis-server directly as the ``redis`` user, the password is in a config file, and redis-cli reads it from
    ``REDISCLI_AUTH``."""
    redis = services["redis"]
    assert redis["user"] == "redis"
    assert redis["command"] == ["redis-server", "/usr/local/etc/redis/redis.conf"]
    assert redis["environment"] == {"REDISCLI_AUTH": "redis-secret"}
    test = redis["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL" and "redis-cli ping" in test[1]
    assert "-a " not in test[1] and "--pass" not in test[1] and "--user" not in test[1]


def test_the_redis_config_and_health_check_work_on_a_real_redis(compose: dict[str, Any],
                                                                services: dict[str, dict[str, Any]],
                                                                tmp_path: Path) -> None:
    """The config Compose writes, served by a real redis-server (on a free loopback port): a client needs the
    password, the health check passes with ``REDISCLI_AUTH`` and fails without the right one, and the server's
    command line holds no password."""
    import shutil
    import subprocess

    from conftest import missing
    from service_helpers import free_port, wait_for

    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server is None or cli is None:
        missing("redis-server and redis-cli are not installed (scripts/test installs Debian's redis)")
    redis = services["redis"]
    port = free_port()
    conf = tmp_path / "redis.conf"
    conf.write_text(compose["configs"]["redis-conf"]["content"] + f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n")
    process = subprocess.Popen([server, str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    check = redis["healthcheck"]["test"][1].replace("redis-cli", f"redis-cli -p {port}")

    def health(password: str | None) -> bool:
        env = {"PATH": os.environ["PATH"], **({"REDISCLI_AUTH": password} if password is not None else {})}
        return subprocess.run(["sh", "-c", check], env=env, timeout=10, check=False).returncode == 0

    try:
        wait_for(lambda: health(redis["environment"]["REDISCLI_AUTH"]), 20, "redis-server to answer the health check")
        assert not health(None) and not health("wrong")
        assert b"redis-secret" not in Path(f"/proc/{process.pid}/cmdline").read_bytes()
        assert (tmp_path / "appendonlydir").is_dir()  # append-only, as configured
    finally:
        process.terminate()
        process.wait(10)


@pytest.mark.parametrize("path", [COMPOSE, GPU_HOST], ids=["compose", "gpu-host"])
def test_no_secret_is_on_a_command_line(path: Path) -> None:
    """Command lines and health checks are argv, which ``ps`` and ``docker inspect`` show to anyone on the host."""
    for name, service in load(path)["services"].items():
        argv = [*service.get("command", []), *service.get("healthcheck", {}).get("test", [])]
        for secret in (*SECRETS.values(), *SECRETS["ANODE_API_KEYS"].split(",")):
            if secret != SECRETS["ANODE_MAIN_HOST"]:
                assert not any(secret in word for word in argv), f"{name}: {secret} on its command line"


def memory_bytes(value: str) -> int:
    """Compose's byte values: a number with an optional b, k, m or g (powers of 1024)."""
    match = re.fullmatch(r"(\d+)([bkmg]?)b?", str(value).lower())
    assert match, f"{value!r} is not a Compose byte value"
    return int(match.group(1)) * 1024 ** "bkmg".index(match.group(2) or "b")


WORKER_OVERHEAD_BYTES = 2 * 2**30
"""What a worker container needs besides one run's ``ANODE_MAX_RUN_BYTES``: the worker and its forkserver (each
with torch imported) and the run child's start-up size, over which its limit counts (0.3 GiB of PSS measured on a
CPU worker running a small training run; a GPU worker's CUDA runtime adds host memory)."""


@pytest.mark.parametrize("env", [{}, {"ANODE_MAX_RUN_BYTES": str(12 * 2**30), "ANODE_WORKER_MEMORY": "14g"}],
                         ids=["defaults", "operator's values"])
def test_workers_memory_limits_match_the_run_limit(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Finding 20.9: no container had a memory limit, while each worker may let a run take half of its host. Each
    worker container is limited to what one run may take plus the worker itself, without swap, and the API admits
    runs by the same ``ANODE_MAX_RUN_BYTES`` (a container's default would be half the *host's* memory)."""
    from backend.settings import Settings

    values = {**env_example(), **SECRETS, **env}
    services = load(COMPOSE, values)["services"]
    workers = [services["worker-cpu"], services["worker-gpu"], load(GPU_HOST, values)["services"]["worker-gpu"]]
    for worker in [services["api"], *workers]:
        for key, value in worker["environment"].items():
            monkeypatch.setenv(key, str(value))
        assert Settings().max_run_bytes == int(values["ANODE_MAX_RUN_BYTES"])  # one value: API and every worker
    for worker in workers:
        limit = memory_bytes(worker["mem_limit"])
        assert limit >= int(values["ANODE_MAX_RUN_BYTES"]) + WORKER_OVERHEAD_BYTES
        assert limit <= int(values["ANODE_MAX_RUN_BYTES"]) + 2 * WORKER_OVERHEAD_BYTES  # matched, not just any
        assert memory_bytes(worker["memswap_limit"]) == limit  # no swap beyond it


@pytest.mark.parametrize("secret", ["POSTGRES_PASSWORD", "REDIS_PASSWORD", "ANODE_API_KEYS"])
def test_secrets_come_from_env_and_the_example_holds_none(secret: str) -> None:
    example = env_example()
    assert example[secret] == ""  # committed without secrets
    with pytest.raises(KeyError, match=secret):
        load(COMPOSE, {**example, **SECRETS, secret: ""})  # Compose refuses to start without it
    used = set(VARIABLE.findall(COMPOSE.read_text() + GPU_HOST.read_text()))
    assert {name for name, _, _ in used if name} <= set(example), "every variable is documented in .env.example"
    ignored = (ROOT / ".gitignore").read_text().split()
    assert "/.env" in ignored or ".env" in ignored
    assert ".env" in (ROOT / ".dockerignore").read_text().split()  # nor sent to an image build


PORT = re.compile(r"\$\{(?P<var>ANODE_[A-Z_]+):-127\.0\.0\.1\}:(?P<published>\d+):(?P<target>\d+)")


def test_published_ports_default_to_loopback(services: dict[str, dict[str, Any]]) -> None:
    """Every published port names its host address, from a variable the operator sets, loopback by default: a port
    written ``8000:8000`` would be published on every interface."""
    raw = yaml.safe_load(COMPOSE.read_text())["services"]
    published = {name: service.get("ports", []) for name, service in raw.items()}
    assert {name for name, ports in published.items() if ports} == {"api", "dashboard", "redis", "postgres"}
    for name, ports in published.items():
        for port in ports:
            assert isinstance(port, str) and PORT.fullmatch(port), f"{name} publishes {port!r}"
        for port in services[name].get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback by default"
    assert "ports" not in yaml.safe_load(GPU_HOST.read_text())["services"]["worker-gpu"]
    chosen = load(COMPOSE, {**env_example(), **SECRETS, "ANODE_PUBLISH_HOST": "10.1.2.3"})["services"]
    assert chosen["api"]["ports"] == ["10.1.2.3:8000:8000"]  # only where the operator says so


def test_dashboard_image_has_no_torch_and_all_it_imports(services: dict[str, dict[str, Any]]) -> None:
    dashboard = services["dashboard"]
    assert dashboard["command"][:3] == ["streamlit", "run", "dashboard/app.py"]
    assert dashboard["environment"]["ANODE_API_URL"] == "http://api:8000/api/v1"
    from dashboard.api_client import ClientSettings

    fields = {f"ANODE_{field.upper()}" for field in ClientSettings.model_fields}
    assert set(dashboard["environment"]) <= fields
    dockerfile = (ROOT / dashboard["build"]["dockerfile"]).read_text()
    assert "pip install --no-deps ." in dockerfile
    assert not re.search(r"COPY (anode_core|backend)", dockerfile)
    requirements = {re.split(r"[<>=!~;\[ ]", line)[0].lower(): line.strip()
                    for line in (ROOT / "docker/requirements-dashboard.txt").read_text().splitlines()
                    if line.strip() and not line.startswith("#")}
    assert "torch" not in requirements and "torchvision" not in requirements
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    declared = {re.split(r"[<>=!~;\[ ]", spec)[0].lower(): spec for spec in project}
    assert {name: declared.get(name) for name in requirements} == requirements  # same specifiers as the project
    imported = set()
    for path in (ROOT / "dashboard").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = {name.replace("_", "-") for name in imported - set(sys.stdlib_module_names) - {"dashboard"}}
    assert third_party <= set(requirements), f"the dashboard imports {third_party - set(requirements)} too"


# --------------------------------------------------------------------------------- PostgreSQL migrations
def test_migrations_match_the_models_on_postgres(postgres_server: Any, tmp_path: Path) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from backend.db import make_engine, migrate, schema_is_current
    from backend.models import Base

    url = postgres_server.new_url()
    engine = make_engine(url)
    assert not schema_is_current(engine)
    migrate(url, tmp_path)
    assert schema_is_current(engine)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    engine.dispose()


def test_api_processes_on_two_hosts_migrate_once(postgres_server: Any, tmp_path: Path) -> None:
    """Two API processes start together on two hosts (no shared lock file): the advisory lock serialises them."""
    from backend.db import make_engine, migrate, schema_is_current

    url = postgres_server.new_url()
    errors: list[BaseException] = []

    def start(host: str) -> None:
        try:
            migrate(url, tmp_path / host)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(host,)) for host in ("host-a", "host-b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    engine = make_engine(url)
    assert schema_is_current(engine)
    engine.dispose()


def test_json_columns_store_non_finite_numbers_as_null_on_postgres(postgres_server: Any, tmp_path: Path) -> None:
    from backend.db import Database, migrate
    from backend.runs import lifecycle, repository as runs

    url = postgres_server.new_url()
    migrate(url, tmp_path)
    db = Database(url)
    with db.session(write=True) as session:
        run_id = runs.add(session, kind="compare", name="", spec={}, device="cpu", tags=[]).id
        lease = lifecycle.claim(session, run_id, "w", "cpu")
        assert lease is not None
        assert runs.finish(session, lease, status="succeeded",
                           summary={"slope": float("nan"), "rows": [1.0, float("inf")], "ok": 2.5})
    with db.session() as session:
        run = runs.get(session, run_id)
        assert run is not None and run.summary == {"slope": None, "rows": [1.0, None], "ok": 2.5}
    db.dispose()


@pytest.mark.parametrize(("url", "ok"), [("postgresql+psycopg://anode:pw@db:5432/anode", True),
                                         ("sqlite:////tmp/anode.db", True),
                                         ("postgresql://anode:pw@db/anode", False), ("mysql://db/anode", False)])
def test_store_url_is_sqlite_or_postgresql_with_psycopg(url: str, ok: bool) -> None:
    from pydantic import ValidationError

    from backend.settings import Settings

    if ok:
        assert Settings(database_url=url).db_url == url
    else:
        with pytest.raises(ValidationError, match="postgresql\\+psycopg://USER:PASSWORD@HOST:PORT/DB"):
            Settings(database_url=url)
