"""The locks agree with pyproject.toml: every dependency it names is pinned (with hashes) at a
version it allows, nothing it no longer names is pinned as a direct dependency, and the runtime
and dev locks pin shared packages alike. Reads only the repository's own files.

When this fails after an edit to pyproject.toml, run `make lock` and commit both locks.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
FIX = "pyproject.toml and {lock} disagree ({what}); run `make lock` and commit the locks"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")
_DIRECT = "mercato (pyproject.toml)"


def pins(lock: str) -> tuple[dict[str, str], set[str], set[str]]:
    """A lock's pins (name -> version), the names pinned because pyproject.toml names them,
    and the names pinned without a hash."""
    versions: dict[str, str] = {}
    direct: set[str] = set()
    unhashed: set[str] = set()
    current = ""
    hashed = True
    for line in (ROOT / lock).read_text().splitlines():
        found = _PIN.match(line)
        if found:
            if current and not hashed:
                unhashed.add(current)
            current = canonicalize_name(found.group(1))
            versions[current] = found.group(2)
            hashed = "--hash=" in line
        elif "--hash=sha256:" in line:
            hashed = True
        elif current and line.strip() in (f"# via {_DIRECT}", f"#   {_DIRECT}"):
            direct.add(current)
    if current and not hashed:
        unhashed.add(current)
    return versions, direct, unhashed


def project() -> dict[str, list[Requirement]]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return {
        "runtime": [Requirement(r) for r in data["project"]["dependencies"]],
        "dev": [Requirement(r) for r in data["project"]["optional-dependencies"]["dev"]],
        "build": [Requirement(r) for r in data["build-system"]["requires"]],
    }


@pytest.mark.parametrize(
    ("lock", "groups"),
    [("requirements.lock", ("runtime",)), ("requirements-dev.lock", ("runtime", "dev"))],
)
def test_every_dependency_is_pinned_with_hashes_at_an_allowed_version(
    lock: str, groups: tuple[str, ...]
) -> None:
    versions, direct, unhashed = pins(lock)
    wanted = [r for g in (*groups, "build") for r in project()[g]]
    missing = sorted(r.name for r in wanted if canonicalize_name(r.name) not in versions)
    assert not missing, FIX.format(lock=lock, what=f"not pinned: {', '.join(missing)}")
    outside = sorted(
        f"{r.name}=={versions[canonicalize_name(r.name)]} (wants {r.specifier})"
        for r in wanted
        if not r.specifier.contains(versions[canonicalize_name(r.name)], prereleases=True)
    )
    assert not outside, FIX.format(lock=lock, what=f"pin outside the range: {outside}")
    named = {canonicalize_name(r.name) for g in groups for r in project()[g]}
    stale = sorted(direct - named)
    assert not stale, FIX.format(lock=lock, what=f"no longer in pyproject.toml: {stale}")
    assert not unhashed, FIX.format(lock=lock, what=f"pinned without a hash: {sorted(unhashed)}")


def test_the_runtime_and_dev_locks_pin_shared_packages_alike() -> None:
    runtime, _, _ = pins("requirements.lock")
    dev, _, _ = pins("requirements-dev.lock")
    differ = sorted(f"{n}: {v} vs {dev.get(n)}" for n, v in runtime.items() if dev.get(n) != v)
    assert not differ, FIX.format(lock="requirements-dev.lock", what=f"pins differ: {differ}")
