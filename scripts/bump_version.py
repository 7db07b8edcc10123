"""Set the one version of remsim: in the workspace's and every member's pyproject.toml (its
version and its pins on the other members), in CHANGELOG.md (the Unreleased section becomes
the new version's, dated, under a new empty Unreleased section), in the image tags of the
Kubernetes overlays (``newTag:``) and in uv.lock (``uv lock``, which records every member's
version).

    uv run --no-sync python scripts/bump_version.py 0.2.0 [--date 2026-12-24] [--no-lock]

Every member shares one version (``tests/test_versions.py``): they are released together, and
a wheel of one version is meant to run with the others of the same version. The procedure
around it is in docs/upgrading.md, "Releases".
"""

from __future__ import annotations

import argparse
import datetime
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.version import InvalidVersion, Version

ROOT = Path(__file__).resolve().parents[1]
UNRELEASED = "## [Unreleased]"


def pyprojects(root: Path) -> list[Path]:
    """The workspace's pyproject.toml and every member's (as [tool.uv.workspace] lists them)."""
    workspace = root / "pyproject.toml"
    patterns = tomllib.loads(workspace.read_text())["tool"]["uv"]["workspace"]["members"]
    members = sorted({p for pattern in patterns for p in root.glob(f"{pattern}/pyproject.toml")})
    return [workspace, *members]


def version_of(text: str) -> str:
    """The [project] version of a pyproject.toml's text."""
    return str(tomllib.loads(text)["project"]["version"])


def member_names(files: list[Path]) -> set[str]:
    """The project names of the members (the workspace itself is no package)."""
    return {str(tomllib.loads(path.read_text())["project"]["name"]) for path in files[1:]}


def set_version(pyproject: Path, version: str, members: set[str]) -> None:
    """Rewrite the ``version = "…"`` line of the [project] table and the pins on the other
    members (``"rspro==0.1.0"``: the members of one release install together), nothing else."""
    text = pyproject.read_text()
    old = version_of(text)
    new, count = re.subn(
        rf'^(\[project\]\n(?:(?!\[).*\n)*?)version = "{re.escape(old)}"$',
        rf'\g<1>version = "{version}"',
        text,
        count=1,
        flags=re.M,
    )
    if count != 1 or version_of(new) != version:
        raise SystemExit(f"bump_version: cannot find the [project] version in {pyproject}")
    names = "|".join(re.escape(name) for name in sorted(members))
    new = re.sub(rf'"({names})=={re.escape(old)}"', rf'"\g<1>=={version}"', new)
    pyproject.write_text(new)


def overlays(root: Path) -> list[Path]:
    """The kustomizations that pin the images' tags (``make images`` tags them VERSION)."""
    return sorted(root.glob("deploy/k8s/**/kustomization.yaml"))  # the base's and overlays'


def set_image_tags(kustomization: Path, old: str, new: str) -> None:
    text = kustomization.read_text()
    kustomization.write_text(
        re.sub(rf"^(\s*newTag: )['\"]?{re.escape(old)}['\"]?$", rf"\g<1>{new}", text, flags=re.M)
    )


def release_changelog(changelog: Path, version: str, date: str) -> None:
    """``## [Unreleased]`` and its entries become ``## [VERSION] - DATE``, under a new empty
    Unreleased section. An empty Unreleased section is refused: nothing to release."""
    text = changelog.read_text()
    head, found, rest = text.partition(f"{UNRELEASED}\n")
    if not found:
        raise SystemExit(f"bump_version: {changelog} has no '{UNRELEASED}' section")
    if f"## [{version}]" in text:
        raise SystemExit(f"bump_version: {changelog} already has a section for {version}")
    entries = rest.split("\n## [", 1)[0]
    if not entries.strip():
        raise SystemExit(f"bump_version: {changelog}: the Unreleased section is empty")
    changelog.write_text(f"{head}{UNRELEASED}\n\n## [{version}] - {date}\n{rest}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("version", help="the new version, e.g. 0.2.0 (PEP 440)")
    parser.add_argument("--date", default=datetime.date.today().isoformat(),
                        help="the release date in CHANGELOG.md (default: today)")  # fmt: skip
    parser.add_argument("--no-lock", action="store_true", help="leave uv.lock alone")
    parser.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        new = Version(args.version)
    except InvalidVersion:
        parser.error(f"not a PEP 440 version: {args.version!r}")
    files = pyprojects(args.root)
    versions = {version_of(pyproject.read_text()) for pyproject in files}
    if len(versions) != 1:
        raise SystemExit(f"bump_version: the members disagree on their version: {sorted(versions)}")
    (old,) = versions
    if new <= Version(old):
        raise SystemExit(f"bump_version: {new} is not newer than {old}")
    release_changelog(args.root / "CHANGELOG.md", str(new), args.date)
    for pyproject in files:
        set_version(pyproject, str(new), member_names(files))
    for kustomization in overlays(args.root):
        set_image_tags(kustomization, old, str(new))
    if not args.no_lock:
        subprocess.run(["uv", "lock", "--quiet"], cwd=args.root, check=True)
    lock = "" if args.no_lock else ", uv.lock"
    print(f"remsim {old} -> {new}: {len(files)} pyproject.toml, CHANGELOG.md, "
          f"{len(overlays(args.root))} overlays{lock}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
