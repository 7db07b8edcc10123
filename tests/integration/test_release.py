"""The release artefacts and the install: ``uv build --all-packages`` makes a wheel and an
sdist of every member (here, or in CI before the tests: ``REMSIM_DIST`` names its dist/);
``scripts/install.sh`` (``make install``) installs the shipped wheels into a fresh virtual
environment under ``DESTDIR`` with the dependencies pinned by uv.lock, offline from uv's
cache; every console script starts from there (``--version``), the test support is not
installed, and the systemd units find what they point at and pass ``systemd-analyze verify``.
"""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

# The first test also builds and installs (the module's fixture): more than the default 120 s.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
MEMBERS = sorted(
    p.parent for p in [*ROOT.glob("libs/*/pyproject.toml"), *ROOT.glob("services/*/pyproject.toml")]
)
TESTING = "remsim-testing"
PREFIX = "/usr/local"
BUILD_TIMEOUT = 300.0  # seconds: wheels and sdists of every member (about 10 s here)
INSTALL_TIMEOUT = 300.0  # seconds: the venv from uv's cache (about 5 s here)
START_TIMEOUT = 60.0  # seconds for one `--version` (about 1 s here)
PATH = f"{Path.home() / '.local' / 'bin'}:{os.environ['PATH']}"  # where bootstrap puts uv


def project(member: Path) -> dict[str, object]:
    return tomllib.loads((member / "pyproject.toml").read_text())["project"]  # type: ignore[no-any-return]


VERSION = str(project(ROOT)["version"])
SCRIPTS = sorted(
    name
    for member in MEMBERS
    for name in project(member).get("scripts", {})  # type: ignore[attr-defined]
)


@dataclass(frozen=True)
class Installed:
    dist: Path
    destdir: Path

    def path(self, absolute: str) -> Path:
        """Where an absolute path of the installed system is under DESTDIR."""
        return self.destdir / absolute.lstrip("/")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """``make dist`` and ``make install DESTDIR=…``, offline, outside the working tree; or
    the install alone, of the artefacts CI built (``REMSIM_DIST``: its ``dist/``)."""
    top = tmp_path_factory.mktemp("release")
    if "REMSIM_DIST" in os.environ:
        return install(Installed(Path(os.environ["REMSIM_DIST"]), top / "root"))
    uv = shutil.which("uv", path=PATH)
    if uv is None:
        pytest.fail("uv is not installed")
    dist, destdir = top / "dist", top / "root"
    env = {**os.environ, "UV_OFFLINE": "1", "PATH": PATH}
    build = subprocess.run(
        [uv, "build", "--all-packages", "--quiet", "--out-dir", str(dist)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False,
    )  # fmt: skip
    assert build.returncode == 0, f"uv build failed (is hatchling in uv's cache?)\n{build.stderr}"
    for testing in dist.glob("remsim_testing-*"):  # as make dist does: never shipped
        testing.unlink()
    return install(Installed(dist, destdir))


def install(into: Installed) -> Installed:
    """scripts/install.sh (make install) of the wheels of ``into.dist`` into its DESTDIR."""
    env = {
        **os.environ,
        "PATH": PATH,
        "UV_OFFLINE": "1",
        "DIST": str(into.dist),
        "DESTDIR": str(into.destdir),
        "PREFIX": PREFIX,
        "PYTHON": sys.executable,
    }
    done = subprocess.run(
        [str(ROOT / "scripts" / "install.sh")],
        env=env, cwd=into.destdir.parent, capture_output=True, text=True, timeout=INSTALL_TIMEOUT,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return into


def test_every_member_has_a_wheel_and_an_sdist_of_the_one_version(installed: Installed) -> None:
    expected = set()
    for member in MEMBERS:
        stem = f"{str(project(member)['name']).replace('-', '_')}-{VERSION}"
        expected |= {f"{stem}-py3-none-any.whl", f"{stem}.tar.gz"}
    built = {path.name for path in installed.dist.iterdir() if path.name != ".gitignore"}
    assert built == expected


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_installed_program_starts(installed: Installed, script: str, tmp_path: Path) -> None:
    program = installed.path(f"{PREFIX}/bin/{script}")
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    done = subprocess.run(
        [str(program), "--version"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=START_TIMEOUT, check=False,
    )  # fmt: skip
    assert (done.returncode, done.stdout.strip()) == (0, f"{script} {VERSION}"), done.stderr


def test_the_installed_programs_run_from_the_installed_environment(installed: Installed) -> None:
    """Not from the working tree (the venv is built from the wheels only), and without the
    test support or its dependencies."""
    python = installed.path(f"{PREFIX}/lib/remsim/bin/python")
    code = (
        "import importlib.util as u, remsim_server; print(remsim_server.__file__); "
        "print([m for m in ('remsim_testing', 'pytest') if u.find_spec(m)])"
    )
    done = subprocess.run(
        [str(python), "-c", code], cwd="/", capture_output=True, text=True, timeout=START_TIMEOUT,
        check=True,
    )  # fmt: skip
    where, test_support = done.stdout.splitlines()
    assert Path(where).is_relative_to(installed.path(f"{PREFIX}/lib/remsim"))
    assert test_support == "[]"


# --- the installed systemd units --------------------------------------------------------------

UNITS = sorted(unit.name for unit in (ROOT / "deploy" / "systemd").glob("*.service"))


def service_section(text: str) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    return parser["Service"]


def unit_values(text: str, key: str) -> list[str]:
    """Every value of ``key`` in the unit (a key may be given more than once)."""
    return [m.group(1) for m in re.finditer(rf"^{key}=(.*)$", text, flags=re.M)]


def installed_unit(installed: Installed, name: str) -> str:
    return installed.path(f"{PREFIX}/lib/systemd/system/{name}").read_text()


@pytest.mark.parametrize("name", UNITS)
def test_the_installed_unit_finds_what_it_points_at(installed: Installed, name: str) -> None:
    text = installed_unit(installed, name)
    program = unit_values(text, "ExecStart")[0].split()[0]
    assert program.startswith(f"{PREFIX}/bin/")
    assert os.access(installed.path(program), os.X_OK), program
    documentation = [doc for line in unit_values(text, "Documentation") for doc in line.split()]
    assert documentation
    for doc in documentation:
        assert doc.startswith("file://") and installed.path(doc.removeprefix("file://")).is_file()
    for directory in unit_values(text, "WorkingDirectory"):
        assert installed.path(directory).is_dir()
    for environment_file in unit_values(text, "EnvironmentFile"):
        if "%i" not in environment_file:  # the st2 client's per-instance file is the admin's
            assert installed.path(environment_file.removeprefix("-")).is_file(), environment_file


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
@pytest.mark.parametrize("name", UNITS)
def test_the_installed_unit_passes_systemd_analyze_verify(
    installed: Installed, name: str, tmp_path: Path
) -> None:
    """The unit as installed, its absolute paths moved under DESTDIR (where the files are)."""
    text = re.sub(
        r"(?<=[=\s/-])(/(?:usr/local|etc)/)",
        lambda m: f"{installed.destdir}{m.group(1)}",
        installed_unit(installed, name),
    )
    text = text.replace("EnvironmentFile=/", "EnvironmentFile=-/")  # the per-instance file
    copy = tmp_path / name.replace("@.", "@modem1.")
    copy.write_text(text)
    assert str(installed.destdir) in service_section(text)["ExecStart"]
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(copy)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    # Only what concerns our unit: the host's own units may have findings of their own.
    ours = [line for line in done.stderr.splitlines() if copy.name in line or copy.stem in line]
    assert not ours, done.stderr


def test_the_default_files_and_the_udev_rule_are_installed(installed: Installed) -> None:
    for default in (ROOT / "deploy" / "systemd").glob("*.default"):
        target = installed.path(f"/etc/default/{default.stem}")
        assert target.read_text() == default.read_text()
    assert installed.path("/etc/udev/rules.d/60-remsim-simtrace2.rules").is_file()


def test_an_existing_default_file_is_kept(installed: Installed, tmp_path: Path) -> None:
    """The files in /etc/default are the admin's: an install (an upgrade) never replaces one."""
    ours = tmp_path / "root" / "etc" / "default" / "remsim-bankd"
    ours.parent.mkdir(parents=True)
    ours.write_text("REMSIM_BANKD_BANK_ID=7\n")
    again = install(Installed(installed.dist, tmp_path / "root"))
    assert ours.read_text() == "REMSIM_BANKD_BANK_ID=7\n"
    assert again.path("/etc/default/remsim-server").is_file()
