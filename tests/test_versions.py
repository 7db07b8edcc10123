"""One version for the whole workspace, recorded in every pyproject.toml, in uv.lock and in
CHANGELOG.md; ``scripts/bump_version.py`` moves all of them at once."""

from __future__ import annotations

import importlib.util
import re
import shutil
import tomllib
from pathlib import Path
from types import ModuleType

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def load_bump() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "bump_version", ROOT / "scripts" / "bump_version.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bump = load_bump()
PYPROJECTS = bump.pyprojects(ROOT)


def versions(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): bump.version_of(path.read_text())
        for path in bump.pyprojects(root)
    }


def test_every_member_is_found() -> None:
    names = {str(path.parent.relative_to(ROOT)) for path in PYPROJECTS}
    assert {".", "libs/rspro", "libs/common", "services/server", "testing"} <= names


def test_every_member_shares_one_version() -> None:
    assert len(set(versions(ROOT).values())) == 1, versions(ROOT)


def test_every_member_pins_the_other_members_at_that_version() -> None:
    """A wheel of one release needs the others of that release (``Requires-Dist: rspro==…``)."""
    version = bump.version_of((ROOT / "pyproject.toml").read_text())
    members = bump.member_names(PYPROJECTS)
    for path in PYPROJECTS[1:]:
        for spec in tomllib.loads(path.read_text())["project"].get("dependencies", []):
            requirement = Requirement(spec)
            if requirement.name in members:
                assert str(requirement.specifier) == f"=={version}", f"{path}: {spec}"


def test_the_lock_records_that_version_for_every_member() -> None:
    version = bump.version_of((ROOT / "pyproject.toml").read_text())
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    names = {tomllib.loads(p.read_text())["project"]["name"] for p in PYPROJECTS[1:]}
    locked = {p["name"]: p["version"] for p in lock["package"] if p["name"] in names}
    assert locked == dict.fromkeys(names, version)


def test_the_kubernetes_overlays_pin_the_images_of_that_version() -> None:
    version = bump.version_of((ROOT / "pyproject.toml").read_text())
    assert bump.overlays(ROOT)
    for overlay in bump.overlays(ROOT):
        assert set(re.findall(r"newTag: (\S+)", overlay.read_text())) == {version}, overlay


def test_the_changelog_has_an_unreleased_section_and_one_for_that_version() -> None:
    version = bump.version_of((ROOT / "pyproject.toml").read_text())
    changelog = (ROOT / "CHANGELOG.md").read_text()
    headings = [line for line in changelog.splitlines() if line.startswith("## [")]
    assert headings[0] == bump.UNRELEASED
    assert any(line.startswith(f"## [{version}] - ") for line in headings)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of what the bump touches: every pyproject.toml, CHANGELOG.md, the overlays."""
    for path in [*PYPROJECTS, ROOT / "CHANGELOG.md", *bump.overlays(ROOT)]:
        target = tmp_path / path.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    return tmp_path


def test_a_bump_sets_the_version_everywhere_and_dates_the_unreleased_entries(tree: Path) -> None:
    before = (tree / "CHANGELOG.md").read_text()
    entries = before.partition(f"{bump.UNRELEASED}\n")[2].split("\n## [", 1)[0]
    assert bump.main(["99.0.0", "--date", "2030-01-02", "--no-lock", "--root", str(tree)]) == 0
    assert set(versions(tree).values()) == {"99.0.0"}
    server = (tree / "services" / "server" / "pyproject.toml").read_text()
    assert '"rspro==99.0.0"' in server and "==0." not in server
    after = (tree / "CHANGELOG.md").read_text()
    assert f"{bump.UNRELEASED}\n\n## [99.0.0] - 2030-01-02\n{entries}" in after
    for overlay in bump.overlays(tree):
        assert set(re.findall(r"newTag: (\S+)", overlay.read_text())) == {"99.0.0"}
    # Nothing else in the pyproject files changed.
    for path in PYPROJECTS:
        version = bump.version_of(path.read_text())
        old = path.read_text().replace(f'version = "{version}"', "").replace(f"=={version}", "")
        new = (tree / path.relative_to(ROOT)).read_text()
        assert new.replace('version = "99.0.0"', "").replace("==99.0.0", "") == old


def test_a_bump_refuses_an_older_version_and_an_empty_unreleased_section(tree: Path) -> None:
    with pytest.raises(SystemExit, match="not newer"):
        bump.main(["0.0.1", "--no-lock", "--root", str(tree)])
    bump.main(["99.0.0", "--no-lock", "--root", str(tree)])
    with pytest.raises(SystemExit, match="Unreleased section is empty"):
        bump.main(["99.1.0", "--no-lock", "--root", str(tree)])
    assert set(versions(tree).values()) == {"99.0.0"}
