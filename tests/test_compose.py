"""Static checks of Dockerfile, docker-compose.yml and .dockerignore against the code.

Docker is not available where the suite runs, so nothing here builds or starts a container.
Instead the files are parsed and cross-checked with what they configure: the `promptblame`
CLI commands they run, the `Settings` fields their PROMPTBLAME_* variables must name, and the
ClickHouse credentials that have to agree between the server and the URL the app dials.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import click
import pytest
import yaml

from promptblame.api.app import create_app
from promptblame.api.cli import main
from promptblame.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

APP_SERVICES = ("api", "worker")
CLICKHOUSE_HTTP_PORT = 8123

# Compose interpolation: $$ (a literal $), ${VAR}, ${VAR:-default}, ${VAR-default}, $VAR.
_INTERPOLATION = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?-)(?P<default>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


def interpolate(value: str) -> str:
    """Resolve compose interpolation as if no variable were set: every one needs a default."""

    def resolve(m: re.Match[str]) -> str:
        if m["escaped"]:
            return "$"
        name = m["braced"] or m["bare"]
        if m["op"] is None:
            raise AssertionError(f"${{{name}}} has no default in {value!r}")
        return m["default"]

    return _INTERPOLATION.sub(resolve, value)


def as_command(value: str | list[str]) -> list[str]:
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = compose.get("services")
    assert isinstance(found, dict)
    return found


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment (mapping or KEY=VALUE list), interpolated with defaults."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) if "=" in item else (item, "") for item in raw)
    return {str(k): interpolate(str(v)) for k, v in raw.items()}


def depends_on(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    raw = service.get("depends_on") or {}
    if isinstance(raw, list):
        return {name: {"condition": "service_started"} for name in raw}
    return {str(k): dict(v or {}) for k, v in raw.items()}


def published_ports(service: dict[str, Any]) -> list[tuple[int, int]]:
    """(host, container) pairs from short ("[ip:]host:container[/proto]") or long syntax."""
    pairs = []
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            pairs.append((int(port["published"]), int(port["target"])))
            continue
        spec = interpolate(str(port)).split("/", 1)[0]
        host, container = spec.rsplit(":", 1)
        pairs.append((int(host.rsplit(":", 1)[-1]), int(container)))
    return pairs


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with comments dropped and line continuations joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        pending += " " + stripped.removesuffix("\\").strip()
        if stripped.endswith("\\"):
            continue
        keyword, _, args = pending.strip().partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        pending = ""
    assert not pending, "Dockerfile ends in a line continuation"
    return instructions


def dockerfile_args(keyword: str) -> list[str]:
    return [args for kw, args in dockerfile_instructions() if kw == keyword]


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for args in dockerfile_args("ENV"):
        for token in shlex.split(args):
            key, sep, value = token.partition("=")
            assert sep, f"use ENV KEY=VALUE, not the legacy form: {args!r}"
            env[key] = value
    return env


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), f"use the exec (JSON) form: {args!r}"
    return [str(v) for v in value]


def container_command(service: dict[str, Any]) -> list[str]:
    """What the container runs: the image ENTRYPOINT plus the service's command (or CMD)."""
    entrypoints = dockerfile_args("ENTRYPOINT")
    cmds = dockerfile_args("CMD")
    entrypoint = exec_form(entrypoints[-1]) if entrypoints else []
    if "command" in service:
        return entrypoint + as_command(service["command"])
    return entrypoint + (exec_form(cmds[-1]) if cmds else [])


def settings_for(
    service: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Settings:
    """Settings as the container builds them: image ENV overlaid by the compose environment."""
    for key in list(os.environ):
        if key.startswith("PROMPTBLAME_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    env = {**dockerfile_env(), **environment(service)}
    for key, value in env.items():
        if key.startswith("PROMPTBLAME_"):
            monkeypatch.setenv(key, value)
    return Settings()


def command_path(argv: list[str]) -> list[str]:
    """Resolve `promptblame <group> <command> ...` through the click tree; return the names."""
    assert argv and argv[0] == "promptblame", f"{argv} does not run promptblame"
    node: click.Command = main
    names = []
    for word in argv[1:]:
        if word.startswith("-") or not isinstance(node, click.Group):
            break
        child = node.commands.get(word)
        assert child is not None, f"{word!r} is not a promptblame command (argv {argv})"
        node = child
        names.append(word)
    assert not isinstance(node, click.Group), f"{argv} names a group, not a command"
    return names


# -- docker-compose.yml: services ------------------------------------------------------------


def test_compose_defines_the_clickhouse_api_and_worker_services(
    services: dict[str, dict[str, Any]],
) -> None:
    assert {"clickhouse", "api", "worker"} <= services.keys()


def test_clickhouse_runs_a_pinned_official_server_image(
    services: dict[str, dict[str, Any]],
) -> None:
    image = services["clickhouse"]["image"]
    repo, _, tag = image.partition(":")
    assert repo == "clickhouse/clickhouse-server"
    assert re.fullmatch(r"\d+\.\d+(\.\d+)*(-alpine)?", tag), f"pin a version, got {tag!r}"
    assert int(tag.split(".")[0]) >= 24


def test_clickhouse_keeps_its_data_in_a_named_volume(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in services["clickhouse"]["volumes"]}
    volume = mounts.get("/var/lib/clickhouse")
    assert volume, "no volume on /var/lib/clickhouse"
    assert volume in (compose.get("volumes") or {}), f"{volume!r} is not a named volume"


def test_clickhouse_raises_the_open_files_limit(services: dict[str, dict[str, Any]]) -> None:
    nofile = services["clickhouse"]["ulimits"]["nofile"]
    soft, hard = (nofile["soft"], nofile["hard"]) if isinstance(nofile, dict) else (nofile,) * 2
    assert int(soft) >= 262144 and int(hard) >= 262144


def test_clickhouse_sets_a_user_and_password_with_access_management(
    services: dict[str, dict[str, Any]],
) -> None:
    env = environment(services["clickhouse"])
    assert env.get("CLICKHOUSE_USER")
    assert env.get("CLICKHOUSE_PASSWORD")
    assert env.get("CLICKHOUSE_DEFAULT_ACCESS_MANAGEMENT") == "1"


def test_clickhouse_has_a_healthcheck_that_queries_or_pings_the_server(
    services: dict[str, dict[str, Any]],
) -> None:
    test = services["clickhouse"]["healthcheck"]["test"]
    command = " ".join(as_command(test))
    assert ("clickhouse-client" in command and "SELECT 1" in command) or "/ping" in command


def test_api_and_worker_start_only_once_clickhouse_is_healthy(
    services: dict[str, dict[str, Any]],
) -> None:
    for name in APP_SERVICES:
        deps = depends_on(services[name])
        assert deps.get("clickhouse", {}).get("condition") == "service_healthy", name


def test_api_and_worker_are_built_from_this_repository(
    services: dict[str, dict[str, Any]],
) -> None:
    for name in APP_SERVICES:
        build = services[name].get("build")
        context = build.get("context") if isinstance(build, dict) else build
        assert context in (".", "./"), f"{name} is not built from the repository root"


# -- docker-compose.yml: ports, URL, credentials ---------------------------------------------


def test_api_publishes_the_port_it_binds(services: dict[str, dict[str, Any]]) -> None:
    port = int(environment(services["api"])["PROMPTBLAME_PORT"])
    assert (port, port) in published_ports(services["api"])


def test_api_healthcheck_requests_healthz_on_the_bound_port(
    services: dict[str, dict[str, Any]],
) -> None:
    port = environment(services["api"])["PROMPTBLAME_PORT"]
    command = as_command(services["api"]["healthcheck"]["test"])
    assert command[:3] == ["CMD", "python", "-c"]
    assert "urllib" in command[3]
    assert f":{port}/healthz" in command[3]


def test_api_and_worker_dial_the_same_clickhouse_url(
    services: dict[str, dict[str, Any]],
) -> None:
    urls = {
        name: environment(services[name]).get("PROMPTBLAME_CLICKHOUSE_URL") for name in APP_SERVICES
    }
    assert urls["api"], "api sets no PROMPTBLAME_CLICKHOUSE_URL"
    assert urls["api"] == urls["worker"]


def test_clickhouse_url_points_at_the_clickhouse_service_http_port(
    services: dict[str, dict[str, Any]],
) -> None:
    url = urlparse(environment(services["api"])["PROMPTBLAME_CLICKHOUSE_URL"])
    assert url.scheme == "http"
    assert url.hostname == "clickhouse"
    assert url.hostname in services
    assert url.port == CLICKHOUSE_HTTP_PORT


def test_clickhouse_url_credentials_match_the_clickhouse_service(
    services: dict[str, dict[str, Any]],
) -> None:
    url = urlparse(environment(services["api"])["PROMPTBLAME_CLICKHOUSE_URL"])
    server = environment(services["clickhouse"])
    assert unquote(url.username or "") == server["CLICKHOUSE_USER"]
    assert unquote(url.password or "") == server["CLICKHOUSE_PASSWORD"]


def test_clickhouse_credentials_come_from_the_same_variables_everywhere() -> None:
    """Overriding CLICKHOUSE_PASSWORD must change the server and the URL together."""
    text = COMPOSE_FILE.read_text()
    for var in ("CLICKHOUSE_USER", "CLICKHOUSE_PASSWORD"):
        defaults = set(re.findall(r"\$\{" + var + r":?-([^}]*)\}", text))
        assert len(defaults) == 1, f"${{{var}}} has differing defaults: {defaults}"


# -- docker-compose.yml against the CLI and Settings ------------------------------------------


def test_api_runs_promptblame_serve(services: dict[str, dict[str, Any]]) -> None:
    assert command_path(container_command(services["api"])) == ["serve"]


def test_worker_runs_promptblame_worker(services: dict[str, dict[str, Any]]) -> None:
    assert command_path(container_command(services["worker"])) == ["worker"]


def test_the_documented_key_command_is_a_real_cli_command() -> None:
    header = COMPOSE_FILE.read_text().split("\nservices:", 1)[0]
    match = re.search(r"docker compose exec api (promptblame keys create[^\n]*)", header)
    assert match, "the header does not say how to create an API key"
    argv = shlex.split(match[1])
    assert command_path(argv) == ["keys", "create"]
    create = main.commands["keys"]
    assert isinstance(create, click.Group)
    options = {o for p in create.commands["create"].params for o in p.opts}
    assert {a for a in argv if a.startswith("-")} <= options


def test_every_promptblame_variable_in_compose_and_dockerfile_is_a_settings_field() -> None:
    text = COMPOSE_FILE.read_text() + DOCKERFILE.read_text()
    names = set(re.findall(r"\bPROMPTBLAME_([A-Z0-9_]+)", text))
    assert names
    unknown = {n for n in names if n.lower() not in Settings.model_fields}
    assert not unknown, f"not Settings fields: {sorted('PROMPTBLAME_' + n for n in unknown)}"


def test_api_environment_selects_the_server_store_on_all_interfaces_with_auth_on(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = settings_for(services["api"], monkeypatch, tmp_path)
    assert settings.clickhouse_url == environment(services["api"])["PROMPTBLAME_CLICKHOUSE_URL"]
    assert settings.host == "0.0.0.0"
    assert settings.port == int(environment(services["api"])["PROMPTBLAME_PORT"])
    assert settings.auth_disabled is False
    create_app(settings)  # refuses a non-loopback host with auth disabled; opens no store yet


def test_worker_environment_selects_the_server_store(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = settings_for(services["worker"], monkeypatch, tmp_path)
    assert settings.clickhouse_url
    assert urlparse(settings.clickhouse_url).hostname == "clickhouse"


# -- Dockerfile and .dockerignore ------------------------------------------------------------


def test_dockerfile_base_image_is_python_3_11_or_newer() -> None:
    base = dockerfile_args("FROM")[-1].split()[0]
    match = re.fullmatch(r"(?:docker\.io/)?(?:library/)?python:(\d+)\.(\d+)[^\s]*", base)
    assert match, f"not a python image: {base!r}"
    version = (int(match[1]), int(match[2]))
    required = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    minimum = re.fullmatch(r">=\s*(\d+)\.(\d+)", required)
    assert minimum, f"unexpected requires-python {required!r}"
    assert version >= (int(minimum[1]), int(minimum[2])) >= (3, 11)


def test_dockerfile_installs_the_package_without_editable_mode() -> None:
    copied = {shlex.split(a)[-1].rstrip("/") for a in dockerfile_args("COPY") if " . " in f" {a} "}
    installs = [
        shlex.split(step.strip())
        for run in dockerfile_args("RUN")
        for step in re.split(r"&&|;", run)
        if re.search(r"\bpip install\b", step)
    ]
    assert installs, "no pip install"
    for argv in installs:
        assert "-e" not in argv and "--editable" not in argv, argv
    targets = {a.rstrip("/") for argv in installs for a in argv if not a.startswith("-")}
    assert targets & ({"."} | copied), f"pip installs none of {copied or {'.'}}"


def test_dockerfile_runs_as_a_non_root_user() -> None:
    users = dockerfile_args("USER")
    assert users, "no USER: the container would run as root"
    assert users[-1].split(":")[0] not in ("root", "0")


def test_dockerfile_default_command_is_promptblame_serve() -> None:
    assert command_path(container_command({})) == ["serve"]


def test_dockerfile_binds_all_interfaces_and_exposes_the_serve_port() -> None:
    env = dockerfile_env()
    assert env["PROMPTBLAME_HOST"] == "0.0.0.0"
    assert "PROMPTBLAME_AUTH_DISABLED" not in env
    port = env.get("PROMPTBLAME_PORT", str(Settings.model_fields["port"].default))
    exposed = {p.split("/")[0] for args in dockerfile_args("EXPOSE") for p in args.split()}
    assert port in exposed


def test_dockerignore_keeps_local_state_out_and_the_package_in() -> None:
    patterns = {
        line.strip().rstrip("/")
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv"} <= patterns
    assert not patterns & {"promptblame", "pyproject.toml", "README.md", "*", "**"}
