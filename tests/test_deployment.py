"""The docker-compose deployment, checked without a Docker engine: the YAML is loaded, its variables are
interpolated from ``.env.example`` (secrets filled in) the way Compose does, and every command and setting in it
is checked against the real CLI parser and settings classes. The distributed end-to-end tests
(``test_service_e2e.py[distributed]``) run these settings (a PostgreSQL store, a password-protected Redis
queue) against real servers; ``test_health_probes_of_the_containers`` runs the health-check commands."""

from __future__ import annotations

import ast
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
    assert str(settings.data_dir) == "/data" and "/data" in {v.split(":")[-1] for v in services[name]["volumes"]}
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
    with pytest.raises(KeyError, match="ANODE_MAIN_HOST"):
        load(GPU_HOST, {**env_example(), **SECRETS, "ANODE_MAIN_HOST": ""})


def test_stores_have_passwords_volumes_and_append_only(services: dict[str, dict[str, Any]]) -> None:
    redis, postgres = services["redis"], services["postgres"]
    assert "--appendonly yes" in " ".join(redis["command"]) and "--requirepass" in " ".join(redis["command"])
    assert redis["environment"]["REDIS_PASSWORD"] == "redis-secret"
    assert "$REDIS_PASSWORD" in " ".join(redis["healthcheck"]["test"])
    assert postgres["environment"]["POSTGRES_PASSWORD"] == "pg-secret"
    assert any(v.endswith(":/var/lib/postgresql/data") for v in postgres["volumes"])
    assert any(v.endswith(":/data") for v in redis["volumes"])


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


def test_published_ports_default_to_loopback(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback by default"


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
