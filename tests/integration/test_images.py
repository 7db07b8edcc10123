"""The images: what deploy/docker/Dockerfile builds from, and how. The build context is computed
from ``.dockerignore`` by the Docker SDK's own rules (``docker.utils.build.exclude_paths``, what
``docker build`` sends); the Dockerfile's layers are read instruction by instruction. With a
Docker engine (``docker info`` answers) the images are built (``make images``) and the Compose
stack is run end to end (``make compose-smoke``); without one those tests are skipped."""

from __future__ import annotations

import glob
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from docker.utils.build import exclude_paths

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "deploy" / "docker" / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
SERVICES = ("server", "api", "bankd", "client")
KEPT_OUT = (".venv", ".git", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache",
            ".hypothesis", "tests")  # fmt: skip
CONTEXT_LIMIT = 10_000_000
"""Bytes the build context may have (it was 326 MB with .venv and .git)."""
ENGINE_TIMEOUT = 15


def ignore_patterns() -> list[str]:
    """``.dockerignore``'s patterns, read as docker-py's ``build`` reads them."""
    lines = (line.strip() for line in DOCKERIGNORE.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def context(root: Path) -> set[str]:
    """The files ``docker build`` would send from ``root`` with this repository's
    ``.dockerignore``."""
    return set(exclude_paths(str(root), ignore_patterns(), dockerfile=str(DOCKERFILE)))


Instruction = tuple[str, str]


def stages() -> dict[str, list[Instruction]]:
    """The Dockerfile's stages by name: their instructions (continuation lines joined)."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result: dict[str, list[Instruction]] = {}
    current: list[Instruction] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        if keyword.upper() == "FROM":
            current = result.setdefault(rest.split()[-1], [])
        current.append((keyword.upper(), " ".join(rest.split())))
    return result


def workspace_members() -> list[str]:
    root = tomllib.loads((REPO / "pyproject.toml").read_text())
    members: list[str] = []
    for pattern in root["tool"]["uv"]["workspace"]["members"]:
        members += sorted(
            str(Path(path).relative_to(REPO)) for path in glob.glob(str(REPO / pattern))
        )
    return members


def docker_engine() -> str | None:
    """Why no Docker engine can be used here, or None."""
    if shutil.which("docker") is None:
        return "no docker command"
    try:
        info = subprocess.run(
            ["docker", "info"], capture_output=True, timeout=ENGINE_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        return "docker info did not answer"
    return None if info.returncode == 0 else "no Docker engine answers (docker info failed)"


# --- the build context ---------------------------------------------------------------------------


def test_dockerignore_keeps_venvs_git_and_caches_out(tmp_path: Path) -> None:
    """On a tree holding everything a developer's checkout holds."""
    for path in (".venv/lib/python3.11/site-packages/x.py", ".git/objects/ab/cdef",
                 "libs/common/src/remsim_common/__pycache__/logs.cpython-311.pyc",
                 ".mypy_cache/3.11/x.json", ".ruff_cache/x", ".pytest_cache/v/x",
                 ".hypothesis/examples/x", "services/bankd/tests/test_x.py", "dist/x.whl",
                 "libs/common/src/remsim_common/logs.py", "uv.lock", "pyproject.toml",
                 "services/bankd/profiles/card0.json"):  # fmt: skip
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("x")
    sent = context(tmp_path)
    assert {"libs/common/src/remsim_common/logs.py", "uv.lock", "pyproject.toml",
            "services/bankd/profiles/card0.json"} <= sent  # fmt: skip
    for path in sent:
        parts = Path(path).parts
        assert not set(parts) & set(KEPT_OUT), path
        assert parts[0] != "dist" and not path.endswith(".pyc"), path


def test_the_repository_context_is_small_and_holds_what_the_dockerfile_copies() -> None:
    sent = context(REPO)
    for path in sent:
        assert not set(Path(path).parts) & set(KEPT_OUT), path
    size = sum((REPO / path).stat().st_size for path in sent if (REPO / path).is_file())
    assert size < CONTEXT_LIMIT, f"build context of {size} bytes"
    for stage in stages().values():
        for keyword, args in stage:
            if keyword == "COPY" and not args.startswith("--from"):
                for source in args.split()[:-1]:
                    assert any(p == source or p.startswith(f"{source}/") for p in sent), source


# --- the Dockerfile ------------------------------------------------------------------------------


def test_no_syntax_directive() -> None:
    """``# syntax=`` makes BuildKit pull a frontend image from a registry: offline builds fail."""
    for line in DOCKERFILE.read_text().splitlines():
        if not line.startswith("#"):
            break
        assert not re.match(r"#\s*syntax\s*=", line, re.I), line


def test_the_base_image_and_uv_are_pinned_and_a_mirror_can_be_given() -> None:
    text = DOCKERFILE.read_text()
    [base] = re.findall(r"^ARG BASE_IMAGE=(\S+)$", text, re.M)
    # a full Python version in the tag (or a digest), never a moving tag
    assert re.fullmatch(r"python:3\.\d+\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base), base
    for name, stage in stages().items():
        froms = [args for keyword, args in stage if keyword == "FROM"]
        image = froms[0].split()[0]
        assert image == "${BASE_IMAGE}" or image in stages(), (name, image)
    [uv] = re.findall(r"^ARG UV_VERSION=(\S+)$", text, re.M)
    assert re.fullmatch(r"\d+\.\d+\.\d+", uv), uv
    assert '"uv==$UV_VERSION"' in text
    assert any(k == "ARG" and a.startswith("PIP_INDEX_URL=") for k, a in stages()["build"])
    assert '--index-url "$PIP_INDEX_URL"' in text  # uv itself, then the locked packages:
    assert "UV_DEFAULT_INDEX=${PIP_INDEX_URL}" in text


def test_every_service_has_a_dependency_layer_before_its_sources() -> None:
    """Each build-<service> stage installs the locked dependencies from uv.lock and the
    pyproject files alone, then copies the sources, then installs the workspace packages."""
    all_stages = stages()
    base = all_stages["build"]
    copied = [source for k, args in base if k == "COPY" for source in args.split()[:-1]]
    assert {"pyproject.toml", "uv.lock"} <= set(copied)
    for member in workspace_members():
        assert f"{member}/pyproject.toml" in copied, member
    assert not any(source in ("libs", "services", "testing", ".") for source in copied)
    for service in SERVICES:
        steps = all_stages[f"build-{service}"]
        kinds = [keyword for keyword, _ in steps]
        deps = next(i for i, (k, a) in enumerate(steps) if k == "RUN" and "uv export" in a)
        sources = next(i for i, (k, a) in enumerate(steps) if k == "COPY")
        install = next(i for i, (k, a) in enumerate(steps) if k == "RUN" and "uv sync" in a)
        assert deps < sources < install, (service, kinds)
        for index in (deps, install):
            assert f"--package remsim-{service}" in steps[index][1]
            assert "--frozen" in steps[index][1]
            assert "--mount=type=cache,target=/root/.cache/uv" in steps[index][1]
        assert "--no-emit-workspace" in steps[deps][1]


def test_the_bankd_image_runs_its_supervisor() -> None:
    bankd = stages()["bankd"]
    assert ("ENTRYPOINT", '["remsim-bankd-supervisor"]') in bankd
    scripts = tomllib.loads((REPO / "services/bankd/pyproject.toml").read_text())["project"]
    assert scripts["scripts"]["remsim-bankd-supervisor"] == "remsim_bankd.supervisor:main"
    assert any(k == "RUN" and "pcscd vsmartcard-vpcd" in a for k, a in bankd)


# --- with a Docker engine ------------------------------------------------------------------------


@pytest.mark.timeout(1800)
def test_make_images_builds_every_image() -> None:
    if (why := docker_engine()) is not None:
        pytest.skip(f"make images needs a Docker engine: {why}")
    result = subprocess.run(["make", "-C", str(REPO), "images"], check=False, timeout=1700)
    assert result.returncode == 0


@pytest.mark.timeout(1800)
def test_make_compose_smoke() -> None:
    if (why := docker_engine()) is not None:
        pytest.skip(f"compose-smoke needs a Docker engine: {why}")
    script = REPO / "scripts" / "compose_smoke.py"
    result = subprocess.run([sys.executable, str(script)], check=False, timeout=1700)
    assert result.returncode == 0


def test_without_an_engine_make_images_and_compose_smoke_say_so() -> None:
    if docker_engine() is None:
        pytest.skip("a Docker engine answers here: the targets run for real above")
    images = subprocess.run(["make", "-s", "-C", str(REPO), "images"], capture_output=True,
                            text=True, timeout=60, check=False)  # fmt: skip
    assert images.returncode != 0
    assert "make images: no Docker engine answers" in images.stderr
    smoke = subprocess.run([sys.executable, str(REPO / "scripts" / "compose_smoke.py")],
                           capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert smoke.returncode == 2
    [line] = smoke.stderr.splitlines()
    assert line.startswith("compose-smoke: ") and "Docker engine" in line
