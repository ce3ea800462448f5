"""The installed Python packages against the versions MarrowDiff was tested with.

`constraints.txt` (beside `pyproject.toml`) pins every package of the install at the version the
whole test suite passed with; `scripts/run.sh`, `scripts/test.sh` and the Dockerfile install
exactly those. A machine whose packages were upgraded by other means (`pip install -U`, an
operating-system update, `MARROW_UNCONSTRAINED=1`) runs versions nobody tested; the System page
says which.
"""
from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

CONSTRAINTS = Path(__file__).resolve().parents[1] / "constraints.txt"


def pinned_versions(path: Path = CONSTRAINTS, python_full_version: str | None = None) -> dict[str, str]:
    """Package name (canonical) → pinned version, for a Python (default: this one): a pin with an
    environment marker serves only the interpreters it names."""
    env = {"python_full_version": python_full_version} if python_full_version else None
    pins = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate(env):
                (pin,) = req.specifier
                pins[canonicalize_name(req.name)] = pin.version
    return pins


@dataclass(frozen=True)
class Difference:
    package: str
    installed: str
    tested: str | None  # None: constraints.txt does not list it


def differences(path: Path = CONSTRAINTS) -> list[Difference]:
    """The installed packages whose version is not the tested one, by name. Pinned packages that
    are not installed are not differences: an install without the test extras lacks them."""
    tested = pinned_versions(path)
    installed: dict[str, str] = {}
    for dist in importlib.metadata.distributions():  # in import order: a shadowed copy is not the one in use
        installed.setdefault(canonicalize_name(dist.metadata["Name"]), dist.version)
    skip = {"marrowdiff", "pip", "wheel"}  # the application itself and the installer
    return [Difference(name, version, tested.get(name)) for name, version in sorted(installed.items())
            if name not in skip and tested.get(name) != version]
