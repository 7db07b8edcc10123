"""deploy/k8s checked offline: the base and every overlay rendered by ``kubectl kustomize``,
each rendering validated by ``kubernetes-validate --strict``, and the rendered objects held
to the deployment's rules (NetworkPolicies, PodDisruptionBudgets, hardened containers,
probes on the ports the programs are configured with) and against the settings models of
the programs they run (a typo in a ``REMSIM_*`` name fails here)."""

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from remsim_control.backends import BackendSettings

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
BASE = K8S / "base"
OVERLAYS = sorted(path.parent for path in (K8S / "overlays").glob("*/kustomization.yaml"))
RENDERINGS = [BASE, *OVERLAYS]
NAMES = [path.name for path in RENDERINGS]
REMSIM_IMAGES = {"remsim/server", "remsim/api"}
BASE_PLACEHOLDERS = {"192.0.2.0/24", "198.51.100.0/24"}
"""The RSPRO networks of the base (TEST-NET): every overlay puts its own in their place."""
OUTSIDE_ALLOWED = {("remsim-api", "http")}
"""(pod, port) that anything outside the namespace may reach."""
BACKEND_CLIENTS = {"remsim-server", "remsim-api"}
FILE_VARIABLES = ("REMSIM_TLS_CERT", "REMSIM_TLS_KEY", "REMSIM_TLS_CA", "REMSIM_API_TOKENS")
"""Settings naming files of the Secrets: left out where only the ports matter."""


def kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        pytest.skip("kubectl is not installed (it renders the kustomizations)")
    return found


def kustomize(directory: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        [kubectl(), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


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
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {path.name: kustomize(path) for path in RENDERINGS}


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    for doc in docs:
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    raise AssertionError(f"no {kind} {name}")


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def workloads(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] in ("Deployment", "StatefulSet")]


def containers(workload: dict[str, Any]) -> Iterator[dict[str, Any]]:
    pod = workload["spec"]["template"]["spec"]
    yield from pod.get("initContainers", [])
    yield from pod["containers"]


def matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A label selector (matchLabels and matchExpressions) applied to ``labels``."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values")
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def app(workload: dict[str, Any]) -> str:
    return pod_labels(workload)["app.kubernetes.io/name"]


def port_number(container: dict[str, Any], port: int | str) -> int:
    """A container's port by number or name."""
    if isinstance(port, int):
        assert port in [p["containerPort"] for p in container.get("ports", [])], port
        return port
    [number] = [p["containerPort"] for p in container.get("ports", []) if p.get("name") == port]
    return int(number)


def container_env(container: dict[str, Any], docs: list[dict[str, Any]]) -> dict[str, str]:
    """The environment a container starts with: its ConfigMaps, then its ``env``."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(find(docs, "ConfigMap", source["configMapRef"]["name"])["data"])
    env.update({var["name"]: var["value"] for var in container.get("env", [])})
    return env


def remsim_settings(
    container: dict[str, Any], docs: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> Any:
    """The settings of the remsim program in ``container`` (its image), from its environment
    without the Secrets' files."""
    from remsim_api.settings import ApiSettings
    from remsim_server.settings import ServerSettings

    image = container["image"].rpartition(":")[0]
    model = ServerSettings if image.endswith("/server") else ApiSettings
    with monkeypatch.context() as patch:
        for name in [name for name in os.environ if name.startswith("REMSIM_")]:
            patch.delenv(name)
        for name, value in container_env(container, docs).items():
            if name not in FILE_VARIABLES and name != "REMSIM_REQUIRE_TLS":
                patch.setenv(name, value)
        return model()


# --- rendering and validation -------------------------------------------------------------


def test_there_are_overlays_of_one_base() -> None:
    assert {path.name for path in OVERLAYS} >= {"dev", "production"}
    base = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    assert sorted(base["resources"]) == sorted(
        path.name for path in BASE.glob("*.yaml") if path.name != "kustomization.yaml"
    )
    for overlay in OVERLAYS:
        kustomization = yaml.safe_load((overlay / "kustomization.yaml").read_text())
        assert "../../base" in kustomization["resources"], overlay.name


@pytest.mark.parametrize("name", NAMES)
def test_every_rendering_passes_strict_validation(
    name: str, rendered: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    manifest = tmp_path / f"{name}.yaml"
    manifest.write_text(yaml.safe_dump_all(rendered[name]))
    result = kubernetes_validate(manifest)
    assert result.returncode == 0, result.stdout + result.stderr


def test_kubernetes_validation_is_not_vacuous(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    service = yaml.safe_load((BASE / "api.yaml").read_text().split("---")[1])
    service["spec"]["portz"] = service["spec"].pop("ports")
    broken.write_text(yaml.safe_dump(service))
    assert kubernetes_validate(broken).returncode != 0


@pytest.mark.parametrize("name", [path.name for path in OVERLAYS])
def test_each_overlay_has_its_namespace_under_the_restricted_pod_security(
    name: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    docs = rendered[name]
    [namespace] = of_kind(docs, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == namespace["metadata"]["name"], doc["kind"]


# --- every container --------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_every_container_is_hardened(name: str, rendered: dict[str, list[dict[str, Any]]]) -> None:
    """Non-root, read-only root file system, no privilege escalation, no capabilities, the
    runtime's seccomp profile: the "restricted" Pod Security Standard and more."""
    for workload in workloads(rendered[name]):
        pod = workload["spec"]["template"]["spec"]
        assert pod.get("automountServiceAccountToken") is False, app(workload)
        for container in containers(workload):
            where = f"{app(workload)}/{container['name']}"
            context = {**pod.get("securityContext", {}), **container["securityContext"]}
            assert context["runAsNonRoot"] is True, where
            assert context.get("runAsUser", 1) != 0, where
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["capabilities"] == {"drop": ["ALL"]}, where
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}, where
            assert "privileged" not in context, where


@pytest.mark.parametrize("name", NAMES)
def test_every_container_has_requests_and_limits(
    name: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    for workload in workloads(rendered[name]):
        for container in containers(workload):
            resources = container["resources"]
            assert set(resources) == {"requests", "limits"}, container["name"]
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources[kind]), (container["name"], kind)


@pytest.mark.parametrize("name", NAMES)
def test_every_container_is_probed_on_a_port_it_has(
    name: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    for workload in workloads(rendered[name]):
        for container in containers(workload):
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                if probe not in container:
                    assert probe == "startupProbe", (container["name"], probe)
                    continue
                check = container[probe]
                if "httpGet" in check:
                    port_number(container, check["httpGet"]["port"])
                elif "tcpSocket" in check:
                    port_number(container, check["tcpSocket"]["port"])
                else:
                    assert "exec" in check, (container["name"], probe)


@pytest.mark.parametrize("name", NAMES)
def test_remsim_probes_ask_health_endpoints_on_the_configured_ports(
    name: str, rendered: dict[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """/healthz (alive) and /readyz (ready) over HTTPS, on the port the program's settings
    give its REST port; the RSPRO port the container exposes is the one the core binds."""
    docs = rendered[name]
    for deployment in ("remsim-server", "remsim-api"):
        [container] = find(docs, "Deployment", deployment)["spec"]["template"]["spec"]["containers"]
        settings = remsim_settings(container, docs, monkeypatch)
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            if probe in container:
                get = container[probe]["httpGet"]
                assert get["scheme"] == "HTTPS", (deployment, probe)
                assert port_number(container, get["port"]) == settings.rest_port, probe
        if deployment == "remsim-server":
            assert port_number(container, "rspro") == settings.rspro_port


@pytest.mark.parametrize("name", NAMES)
def test_nats_and_redis_are_probed_on_the_ports_they_are_started_with(
    name: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    docs = rendered[name]
    [nats] = find(docs, "Deployment", "nats")["spec"]["template"]["spec"]["containers"]
    args = nats["args"]
    assert port_number(nats, "monitor") == int(args[args.index("--http_port") + 1])
    assert port_number(nats, "client") == int(args[args.index("--port") + 1])
    assert nats["livenessProbe"]["httpGet"]["path"] == "/healthz"
    [redis] = find(docs, "StatefulSet", "redis")["spec"]["template"]["spec"]["containers"]
    args = redis["args"]
    port = int(args[args.index("--port") + 1])
    assert port_number(redis, "redis") == port
    command = redis["readinessProbe"]["exec"]["command"]
    assert int(command[command.index("-p") + 1]) == port


# --- availability -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_replicated_workloads_have_a_disruption_budget_that_lets_drains_pass(
    name: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    docs = rendered[name]
    budgets = of_kind(docs, "PodDisruptionBudget")
    for workload in workloads(docs):
        replicas = workload["spec"].get("replicas", 1)
        mine = [b for b in budgets if matches(b["spec"]["selector"], pod_labels(workload))]
        if replicas < 2:
            # A budget on one replica would block every node drain.
            assert not mine, app(workload)
            continue
        [budget] = mine
        assert 1 <= budget["spec"]["minAvailable"] < replicas, app(workload)
    assert {app(w) for w in workloads(docs) if w["spec"].get("replicas", 1) >= 2} >= {
        "remsim-server",
        "remsim-api",
    }


@pytest.mark.parametrize("name", NAMES)
def test_redis_keeps_its_append_only_file_on_a_persistent_volume(
    name: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    redis = find(rendered[name], "StatefulSet", "redis")
    [container] = redis["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    data = args[args.index("--dir") + 1]
    [claim] = redis["spec"]["volumeClaimTemplates"]
    assert {"name": claim["metadata"]["name"], "mountPath": data} in container["volumeMounts"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]


# --- network policies -------------------------------------------------------------------------


def admitted(docs: list[dict[str, Any]], workload: dict[str, Any]) -> list[tuple[str, Any]]:
    """(port name, peer) for every source the NetworkPolicies let reach ``workload``'s pods;
    the peer ``None``: anything."""
    [container] = workload["spec"]["template"]["spec"]["containers"]
    names = {p["containerPort"]: p["name"] for p in container["ports"]}
    found = []
    for policy in of_kind(docs, "NetworkPolicy"):
        if not matches(policy["spec"]["podSelector"], pod_labels(workload)):
            continue
        assert "Ingress" in policy["spec"]["policyTypes"]
        for rule in policy["spec"].get("ingress", []):
            ports = [p["port"] for p in rule.get("ports", [])] or list(names.values())
            for port in ports:
                port_number(container, port)  # a port the pod has
                peers = rule.get("from") or [None]
                found += [(names.get(port, port), peer) for peer in peers]
    return found


def is_outside(peer: Mapping[str, Any] | None) -> bool:
    """Whether ``peer`` admits sources outside the namespace."""
    return peer is None or "ipBlock" in peer or "namespaceSelector" in peer


@pytest.mark.parametrize("name", NAMES)
def test_ingress_is_denied_unless_a_policy_admits_it(
    name: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    deny = find(rendered[name], "NetworkPolicy", "default-deny-ingress")["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress"]}


@pytest.mark.parametrize("name", NAMES)
def test_only_the_api_is_reachable_from_outside_the_namespace(
    name: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    """...and RSPRO, from the banks' and modems' networks only."""
    docs = rendered[name]
    for workload in workloads(docs):
        for port, peer in admitted(docs, workload):
            if not is_outside(peer) or (app(workload), port) in OUTSIDE_ALLOWED:
                continue
            assert (app(workload), port) == ("remsim-server", "rspro"), (app(workload), port)
            assert peer is not None and set(peer) == {"ipBlock"}, peer
            assert peer["ipBlock"]["cidr"] not in ("0.0.0.0/0", "::/0"), peer
    rspro = [peer for port, peer in admitted(docs, find(docs, "Deployment", "remsim-server"))]
    assert any(peer and "ipBlock" in peer for peer in rspro)


@pytest.mark.parametrize("name", [path.name for path in OVERLAYS])
def test_every_overlay_names_its_own_rspro_networks(
    name: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    docs = rendered[name]
    cidrs = {
        peer["ipBlock"]["cidr"]
        for port, peer in admitted(docs, find(docs, "Deployment", "remsim-server"))
        if port == "rspro" and peer and "ipBlock" in peer
    }
    assert cidrs and not cidrs & BASE_PLACEHOLDERS, cidrs


@pytest.mark.parametrize("name", NAMES)
def test_redis_and_nats_take_connections_from_the_cores_and_the_api_only(
    name: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    docs = rendered[name]
    others = [w for w in workloads(docs) if app(w) not in BACKEND_CLIENTS]
    clients = [w for w in workloads(docs) if app(w) in BACKEND_CLIENTS]
    for backend in (find(docs, "StatefulSet", "redis"), find(docs, "Deployment", "nats")):
        peers = admitted(docs, backend)
        assert peers, app(backend)
        for _, peer in peers:
            assert peer is not None and set(peer) == {"podSelector"}, peer
            assert all(matches(peer["podSelector"], pod_labels(w)) for w in clients)
            assert not any(matches(peer["podSelector"], pod_labels(w)) for w in others)


# --- the remsim pods ----------------------------------------------------------------------------


def test_server_cores_take_rspro_on_tcp_9998(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["base"]
    service = find(docs, "Service", "remsim-server")
    assert [(p["port"], p.get("protocol", "TCP")) for p in service["spec"]["ports"]] == [
        (9998, "TCP")
    ]
    deployment = find(docs, "Deployment", "remsim-server")
    assert deployment["spec"]["replicas"] >= 2
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


@pytest.mark.parametrize("name", NAMES)
def test_every_service_targets_a_port_of_its_pods(
    name: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    docs = rendered[name]
    for service in of_kind(docs, "Service"):
        selector = {"matchLabels": service["spec"]["selector"]}
        [workload] = [w for w in workloads(docs) if matches(selector, pod_labels(w))]
        [container] = workload["spec"]["template"]["spec"]["containers"]
        for port in service["spec"]["ports"]:
            port_number(container, port["targetPort"])


def test_remsim_pods_read_the_config_map(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["base"]
    config = find(docs, "ConfigMap", "remsim-config")["data"]
    for name in ("remsim-server", "remsim-api"):
        [container] = find(docs, "Deployment", name)["spec"]["template"]["spec"]["containers"]
        assert container["envFrom"] == [{"configMapRef": {"name": "remsim-config"}}]
    # The variables open_backends reads, and where the cluster's services are.
    for attribute in ("redis_url", "nats_url", "lease_ttl"):
        assert hasattr(BackendSettings, attribute)
        assert f"REMSIM_{attribute.upper()}" in config
    assert config["REMSIM_REDIS_URL"].startswith("redis://redis:6379")
    assert config["REMSIM_NATS_URL"] == "nats://nats:4222"
    find(docs, "Service", "redis")
    find(docs, "Service", "nats")


def pod_secret_files(
    docs: list[dict[str, Any]], name: str
) -> tuple[dict[str, str], dict[str, str]]:
    """A Deployment's environment, and the Secret mounted at each of its mount paths."""
    pod = find(docs, "Deployment", name)["spec"]["template"]["spec"]
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


@pytest.mark.parametrize("name", NAMES)
def test_the_server_cores_take_tls_and_tokens_from_secrets(
    name: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    env, mounts = pod_secret_files(rendered[name], "remsim-server")
    assert env["REMSIM_REQUIRE_TLS"] == "true"
    # cert-manager's Secret layout: tls.crt, tls.key, ca.crt.
    assert secret_of(env["REMSIM_TLS_CERT"], mounts) == ("remsim-server-tls", "tls.crt")
    assert secret_of(env["REMSIM_TLS_KEY"], mounts) == ("remsim-server-tls", "tls.key")
    assert secret_of(env["REMSIM_TLS_CA"], mounts) == ("remsim-server-tls", "ca.crt")
    assert secret_of(env["REMSIM_API_TOKENS"], mounts) == ("remsim-api-tokens", "api-tokens")


@pytest.mark.parametrize("name", NAMES)
def test_the_api_takes_https_and_tokens_from_secrets(
    name: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    env, mounts = pod_secret_files(rendered[name], "remsim-api")
    assert secret_of(env["REMSIM_TLS_CERT"], mounts) == ("remsim-api-tls", "tls.crt")
    assert secret_of(env["REMSIM_TLS_KEY"], mounts) == ("remsim-api-tls", "tls.key")
    assert secret_of(env["REMSIM_API_TOKENS"], mounts) == ("remsim-api-tokens", "api-tokens")


def test_the_remsim_variables_are_settings_of_the_programs(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    from remsim_api.settings import ApiSettings
    from remsim_bankd.config import BankdSettings
    from remsim_client.options import ClientSettings
    from remsim_common.settings import SHARED_FIELDS
    from remsim_server.settings import ServerSettings

    docs = rendered["base"]
    server_fields = {f"REMSIM_{field.upper()}" for field in ServerSettings.model_fields}
    api_fields = {f"REMSIM_{field.upper()}" for field in ApiSettings.model_fields}
    config = set(find(docs, "ConfigMap", "remsim-config")["data"])
    assert config <= server_fields
    assert set(pod_secret_files(docs, "remsim-server")[0]) <= server_fields
    assert set(pod_secret_files(docs, "remsim-api")[0]) <= api_fields
    assert {"api_tokens", "api_hosts", "tls_cert", "tls_key"} <= set(ApiSettings.model_fields)
    # REMSIM_TLS_* reach the bankd and the clients too, whatever their own prefixes.
    for cls in (BankdSettings, ClientSettings):
        assert {"tls_cert", "tls_key", "tls_ca", "require_tls"} <= set(cls.model_fields)
    assert {"tls_cert", "tls_key", "tls_ca", "require_tls"} <= SHARED_FIELDS
    assert "REMSIM_API_HOSTS" in config


@pytest.mark.parametrize("name", NAMES)
def test_the_rspro_service_keeps_the_peers_source_address(
    name: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    """Clients are given the address a bankd's control connection comes from (no SNAT), and
    the NetworkPolicy sees the peers' own addresses."""
    service = find(rendered[name], "Service", "remsim-server")
    assert service["spec"]["type"] in ("LoadBalancer", "NodePort")
    assert service["spec"]["externalTrafficPolicy"] == "Local"
    if name == "production":
        assert service["spec"]["type"] == "LoadBalancer"


def test_the_config_map_shows_how_to_set_bankd_addresses(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    from remsim_server.settings import ServerSettings

    text = (BASE / "configmap.yaml").read_text()
    [example] = [
        line.strip().removeprefix("# ")
        for line in text.splitlines()
        if line.strip().startswith("# REMSIM_BANKD_ADDRESSES:")
    ]
    value = yaml.safe_load(example)["REMSIM_BANKD_ADDRESSES"]
    settings = ServerSettings(bankd_addresses=json.loads(value))
    assert settings.bankd_addresses[1] == "bankd-1.example.net:9999"
    config = find(rendered["base"], "ConfigMap", "remsim-config")["data"]
    assert config["REMSIM_BANKD_PORT"] == "9999"


# --- images -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_images_are_pinned(name: str, rendered: dict[str, list[dict[str, Any]]]) -> None:
    for workload in workloads(rendered[name]):
        for container in containers(workload):
            image, _, tag = container["image"].rpartition(":")
            assert image and tag and tag != "latest", container["image"]
            assert container["imagePullPolicy"] == "IfNotPresent", container["name"]


@pytest.mark.parametrize("overlay", OVERLAYS, ids=[path.name for path in OVERLAYS])
def test_every_overlay_sets_the_remsim_images(
    overlay: Path, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    """The base names them as ``make images`` tags them; each overlay's ``images:`` says
    which build to run (and, for production, from which registry)."""
    kustomization = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    assert {image["name"] for image in kustomization["images"]} == REMSIM_IMAGES
    pinned = {image["name"]: image for image in kustomization["images"]}
    for workload in workloads(rendered[overlay.name]):
        for container in containers(workload):
            base = find(rendered["base"], workload["kind"], workload["metadata"]["name"])
            [original] = [c for c in containers(base) if c["name"] == container["name"]]
            name = original["image"].rpartition(":")[0]
            if name in pinned:
                expected = pinned[name].get("newName", name) + ":" + pinned[name]["newTag"]
                assert container["image"] == expected
    if overlay.name == "production":
        for image in kustomization["images"]:
            assert image["newName"].startswith("registry.example.com/"), image
