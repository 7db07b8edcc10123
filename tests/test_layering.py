"""The layering of the workspace: what ships, and what it may depend on.

The shipped members are ``libs/*`` and ``services/*``; test and lab support lives in the
workspace member ``testing/`` (``remsim_testing``, dev group only). A shipped member's
sources hold no test support and import none, its wheel carries none, its runtime
dependencies (as locked in uv.lock) never reach ``remsim-testing``, and it declares only
dependencies it imports.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import tomllib
import zipfile
from collections.abc import Iterator
from importlib.metadata import packages_distributions
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted(
    p.parent for p in [*ROOT.glob("libs/*/pyproject.toml"), *ROOT.glob("services/*/pyproject.toml")]
)
TESTING = "remsim-testing"

SUPPORT_FILES = {"testing.py", "testbed.py", "simulator.py"}
TEST_ONLY_IMPORTS = {"pytest", "hypothesis", "remsim_testing"}
# Dependencies the control plane brings, which a bankd or client must not need.
CONTROL_PLANE_DEPENDENCIES = {"redis", "nats-py"}
BUILD_TIMEOUT = 120.0  # seconds for building every wheel of the workspace (about 2 s here)

# Declared dependencies not imported today; strict xfails, to be removed as they are fixed.
KNOWN_UNIMPORTED: dict[str, set[str]] = {}


def project(member: Path) -> dict[str, Any]:
    return tomllib.loads((member / "pyproject.toml").read_text())


def name_of(member: Path) -> str:
    return canonicalize_name(project(member)["project"]["name"])


MEMBERS = {name_of(member): member for member in SHIPPED}


def members(marks: dict[str, pytest.MarkDecorator] | None = None) -> list[Any]:
    """One parameter per shipped member (by its project name), with the given marks."""
    marks = marks or {}
    return [
        pytest.param(name, id=name, marks=[marks[name]] if name in marks else [])
        for name in MEMBERS
    ]


def sources(name: str) -> Iterator[Path]:
    yield from sorted((MEMBERS[name] / "src").rglob("*.py"))


def imported_modules(path: Path) -> set[str]:
    """The top-level modules a file imports (absolute imports, anywhere in the file)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.partition(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.partition(".")[0])
    return found


def declared_dependencies(name: str) -> set[str]:
    return {
        canonicalize_name(Requirement(spec).name)
        for spec in project(MEMBERS[name])["project"].get("dependencies", [])
    }


def test_every_shipped_member_is_found() -> None:
    assert {"rspro", "vpcd", "remsim-control", "remsim-bankd", "remsim-client"} <= set(MEMBERS)
    assert TESTING not in MEMBERS


# --- (1) the sources -----------------------------------------------------------------------


@pytest.mark.parametrize("name", members())
def test_shipped_sources_hold_no_test_support(name: str) -> None:
    support = [str(p.relative_to(ROOT)) for p in sources(name) if p.name in SUPPORT_FILES]
    assert support == []


@pytest.mark.parametrize("name", members())
def test_shipped_sources_import_no_test_support(name: str) -> None:
    offending = {
        str(path.relative_to(ROOT)): sorted(imported_modules(path) & TEST_ONLY_IMPORTS)
        for path in sources(name)
    }
    assert {path: modules for path, modules in offending.items() if modules} == {}


# --- (2) the wheels ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[PurePosixPath]]:
    """The file list of the wheel of every workspace member, built once (offline: the
    build backend comes from uv's cache)."""
    uv = os.environ.get("UV") or shutil.which("uv")
    if uv is None:
        pytest.fail("uv is not installed")
    out = tmp_path_factory.mktemp("wheels")
    build = subprocess.run(
        [uv, "build", "--wheel", "--all-packages", "--offline", "--quiet", "-o", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    assert build.returncode == 0, f"uv build failed (is hatchling in uv's cache?)\n{build.stderr}"
    contents: dict[str, list[PurePosixPath]] = {}
    for wheel in out.glob("*.whl"):
        with zipfile.ZipFile(wheel) as archive:
            contents[canonicalize_name(wheel.name.split("-")[0])] = [
                PurePosixPath(entry) for entry in archive.namelist()
            ]
    return contents


@pytest.mark.parametrize("name", members())
def test_shipped_wheels_carry_no_test_support(
    wheels: dict[str, list[PurePosixPath]], name: str
) -> None:
    assert name in wheels, f"no wheel built for {name}"
    support = [
        str(entry)
        for entry in wheels[name]
        if entry.name in SUPPORT_FILES or "remsim_testing" in entry.parts
    ]
    assert support == []


# --- (3) the locked runtime dependencies ---------------------------------------------------


def locked_packages() -> dict[str, list[dict[str, Any]]]:
    """uv.lock's [[package]] entries by name (a name may be locked more than once)."""
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    packages: dict[str, list[dict[str, Any]]] = {}
    for package in lock["package"]:
        packages.setdefault(canonicalize_name(package["name"]), []).append(package)
    return packages


def runtime_closure(name: str) -> set[str]:
    """Every package a member needs at run time per uv.lock: its dependencies, transitively
    (with the extras asked for; never dev groups)."""
    packages = locked_packages()
    seen: set[tuple[str, tuple[str, ...]]] = set()
    todo: list[tuple[str, tuple[str, ...]]] = [(name, ())]
    while todo:
        current, extras = todo.pop()
        for package in packages.get(current, []):
            deps = list(package.get("dependencies", []))
            for extra in extras:
                deps += package.get("optional-dependencies", {}).get(extra, [])
            for dep in deps:
                needed = (canonicalize_name(dep["name"]), tuple(dep.get("extra", ())))
                if needed not in seen:
                    seen.add(needed)
                    todo.append(needed)
    return {dep for dep, _ in seen}


@pytest.mark.parametrize("name", members())
def test_the_lock_is_current_for(name: str) -> None:
    locked = locked_packages()[name][0]
    assert {canonicalize_name(d["name"]) for d in locked.get("dependencies", [])} == (
        declared_dependencies(name)
    ), "uv.lock does not match the pyproject.toml: run `uv lock`"


@pytest.mark.parametrize("name", members())
def test_no_shipped_member_needs_the_test_support(name: str) -> None:
    assert TESTING not in runtime_closure(name)


@pytest.mark.parametrize("name", ["remsim-bankd", "remsim-client"])
def test_bankd_and_client_do_not_need_the_control_plane_backends(name: str) -> None:
    assert runtime_closure(name) & CONTROL_PLANE_DEPENDENCIES == set()


# --- (4) declared dependencies are imported ------------------------------------------------


def import_names(dependency: str) -> set[str]:
    """The top-level modules a dependency provides: a workspace member's wheel packages, or
    what the installed distribution's metadata says."""
    for member in [*SHIPPED, ROOT / "testing"]:
        if name_of(member) == dependency:
            packages = project(member)["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
            return {PurePosixPath(package).name for package in packages}
    return {
        module
        for module, distributions in packages_distributions().items()
        if dependency in {canonicalize_name(d) for d in distributions}
    }


@pytest.mark.parametrize(
    "name",
    members(
        {
            name: pytest.mark.xfail(
                strict=True,
                reason=f"declared, never imported: {', '.join(sorted(unimported))}",
            )
            for name, unimported in KNOWN_UNIMPORTED.items()
        }
    ),
)
def test_every_declared_dependency_is_imported(name: str) -> None:
    imported = set().union(*(imported_modules(path) for path in sources(name)))
    provided = {dependency: import_names(dependency) for dependency in declared_dependencies(name)}
    assert {dep: modules for dep, modules in provided.items() if not modules} == {}, (
        "installed? (cannot tell what these provide)"
    )
    assert sorted(dep for dep, modules in provided.items() if not modules & imported) == []
