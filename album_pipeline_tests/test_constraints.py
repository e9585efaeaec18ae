"""constraints.txt (issue 22): every package the project asks for is pinned, inside the range pyproject.toml
declares, so the README's first command installs exactly what CI tested."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "album_pipeline"


def pinned_releases() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        specifiers = list(requirement.specifier)
        assert len(specifiers) == 1 and specifiers[0].operator == "==", f"not an exact pin: {line!r}"
        pins[canonicalize_name(requirement.name)] = Version(specifiers[0].version)
    return pins


def declared_requirements() -> list[Requirement]:
    """The dependencies and the test extra's packages (the extras it names, resolved), without the project."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted = [Requirement(text) for text in project["dependencies"]]
    pending = ["test"]
    while pending:
        for text in extras[pending.pop()]:
            requirement = Requirement(text)
            if canonicalize_name(requirement.name) == canonicalize_name(PROJECT):
                pending.extend(requirement.extras)
            else:
                wanted.append(requirement)
    return wanted


def test_every_declared_package_is_pinned_inside_its_declared_range():
    pins = pinned_releases()
    for requirement in declared_requirements():
        name = canonicalize_name(requirement.name)
        assert name in pins, (
            f"{requirement.name} is declared in pyproject.toml but not pinned in constraints.txt; run "
            ".ci/newest-releases --refresh"
        )
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt pins {requirement.name}=={pins[name]}, outside pyproject.toml's "
            f"{requirement}; run .ci/newest-releases --refresh"
        )


def test_the_project_itself_is_not_pinned():
    assert canonicalize_name(PROJECT) not in pinned_releases()


@pytest.mark.parametrize("command", ["README.md", ".ci/run"])
def test_the_readme_and_ci_install_through_the_constraints(command):
    assert 'pip install -c constraints.txt -e ".[test]"' in (ROOT / command).read_text().replace(
        "--quiet ", ""
    )
