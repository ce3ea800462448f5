"""scripts/test.sh (THE test command), scripts/run.sh and .ci/run.

These run the real scripts with MARROW_SKIP_INSTALL=1 (the .venv as it is) against small
throw-away test folders, so they take seconds and install nothing.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from app.package_versions import pinned_versions

ROOT = Path(__file__).resolve().parents[2]
VENV_PY = ROOT / ".venv" / "bin" / "python"


def bash(*args: str, env_extra: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, **(env_extra or {}))
    env.pop("PYTEST_ADDOPTS", None)
    env.pop("PYTEST_CURRENT_TEST", None)
    return subprocess.run(["bash", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture
def venv() -> Path:
    if not VENV_PY.is_file():
        pytest.skip(f"{VENV_PY} is absent: run `bash scripts/test.sh` once to create it")
    return VENV_PY


def test_ci_calls_the_test_command():
    lines = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()
             if ln.strip() and not ln.lstrip().startswith("#")]
    assert "bash scripts/test.sh" in lines


def test_scripts_parse():
    for script in ("scripts/test.sh", "scripts/run.sh", "scripts/_install.sh", ".ci/run"):
        r = bash("-n", script)
        assert r.returncode == 0, f"{script}: {r.stderr}"


def test_no_tests_collected_fails(venv, tmp_path):
    (tmp_path / "test_nothing_here.py").write_text("X = 1\n")
    r = bash("scripts/test.sh", str(tmp_path), "-p", "no:cacheprovider", env_extra={"MARROW_SKIP_INSTALL": "1"})
    assert r.returncode != 0, r.stdout
    assert "collected no tests" in r.stdout, r.stdout


def test_pass_and_fail_are_reported(venv, tmp_path):
    (tmp_path / "test_some.py").write_text(
        "import pytest\n"
        "def test_a(): pass\n"
        "def test_b(): pass\n"
        "def test_c(): pytest.skip('not here')\n"
        "def test_d(): assert False\n")
    r = bash("scripts/test.sh", str(tmp_path), "-p", "no:cacheprovider", env_extra={"MARROW_SKIP_INSTALL": "1"})
    assert r.returncode == 1, r.stdout
    lines = r.stdout.strip().splitlines()
    assert lines[-1] == "tests: 2 passed, 1 failed, 1 skipped", lines[-3:]
    assert lines[-2].startswith("scripts/test.sh: FAILED: pytest exit 1"), lines[-3:]

    r = bash("scripts/test.sh", str(tmp_path), "-p", "no:cacheprovider", "-k", "not test_d",
             env_extra={"MARROW_SKIP_INSTALL": "1"})
    assert r.returncode == 0, r.stdout
    lines = r.stdout.strip().splitlines()
    assert lines[-2].startswith("scripts/test.sh: PASSED"), lines[-3:]
    assert lines[-1] == "tests: 2 passed, 0 failed, 1 skipped", lines[-3:]


def test_install_is_skipped_while_pyproject_is_unchanged(venv):
    """With the stamp matching pyproject.toml, the install step is quick and silent."""
    probe = ('source scripts/_install.sh && [ -f "$MARROW_STAMP" ] && '
             '[ "$(cat "$MARROW_STAMP")" = "$(_marrow_stamp_value "$MARROW_VENV/bin/python")" ]')
    if bash("-c", probe).returncode != 0:
        pytest.skip(".venv was not installed by scripts/test.sh (or pyproject.toml changed since)")
    t0 = time.monotonic()
    r = bash("-c", "source scripts/_install.sh && marrow_install_python")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "" and r.stderr == "", (r.stdout, r.stderr)
    assert time.monotonic() - t0 < 10


def test_stamp_follows_pyproject_and_constraints(tmp_path):
    """The stamp changes when pyproject.toml, constraints.txt or MARROW_UNCONSTRAINED does (so a
    dependency or version change reinstalls)."""
    fake = tmp_path / "repo"
    (fake / "scripts").mkdir(parents=True)
    (fake / "scripts" / "_install.sh").write_text((ROOT / "scripts" / "_install.sh").read_text())
    (fake / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    (fake / "constraints.txt").write_text("six==1.16.0\n")

    def stamp(unconstrained: str = "0") -> str:  # set either way: the suite itself may run under MARROW_UNCONSTRAINED=1
        r = subprocess.run(["bash", "-c", f'source scripts/_install.sh && _marrow_stamp_value "{sys.executable}"'],
                           cwd=fake, capture_output=True, text=True, check=True,
                           env=dict(os.environ, MARROW_UNCONSTRAINED=unconstrained))
        assert r.stderr == "", r.stderr
        return r.stdout.strip()

    first, second = stamp(), stamp()
    (fake / "pyproject.toml").write_text("[project]\nname = 'x'\ndependencies = ['six']\n")
    third = stamp()
    (fake / "constraints.txt").write_text("six==1.17.0\n")
    fourth = stamp()
    unconstrained = stamp("1")
    assert first and first == second
    assert len({first, third, fourth, unconstrained}) == 4


def test_constraints_allow_what_pyproject_asks_for():
    """Every dependency in pyproject.toml (extras too) is pinned in constraints.txt at a version
    its range accepts: a raised floor without new constraints fails here, not in pip's resolver."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]
    pins = pinned_versions()
    for req in map(Requirement, wanted):
        name = canonicalize_name(req.name)
        assert name in pins, f"constraints.txt does not pin {req.name}"
        assert req.specifier.contains(pins[name], prereleases=True), f"constraints.txt: {name}=={pins[name]} is outside {req}"


def test_debian_12s_own_python_gets_its_extra_package_pinned_too():
    """Debian 12's python3.11 (3.11.2) makes redis install async-timeout, which 3.11.3 and later do
    not need: its pin holds there and nowhere else."""
    debian, later = pinned_versions(python_full_version="3.11.2"), pinned_versions(python_full_version="3.11.7")
    assert debian["async-timeout"] == "5.0.1"
    assert debian.keys() - later.keys() == {"async-timeout"}


def test_the_installed_venv_holds_the_constrained_versions(venv):
    """.venv as scripts/test.sh installs it holds exactly constraints.txt's versions: no package
    of the install floats to a newer release."""
    probe = ('source scripts/_install.sh && [ -f "$MARROW_STAMP" ] && '
             '[ "$(cat "$MARROW_STAMP")" = "$(_marrow_stamp_value "$MARROW_VENV/bin/python")" ]')
    if bash("-c", probe, env_extra={"MARROW_UNCONSTRAINED": "0"}).returncode != 0:
        pytest.skip(".venv was not installed by scripts/test.sh with constraints.txt (MARROW_UNCONSTRAINED=1, or a change since)")
    freeze = subprocess.run([str(venv), "-m", "pip", "freeze", "--all", "--exclude", "pip", "--exclude-editable"], capture_output=True,
                            text=True, check=True).stdout  # what constraints.txt is written from
    installed = {canonicalize_name(name): version for name, version in
                 (line.split("==") for line in freeze.splitlines() if "==" in line)}
    version = subprocess.run([str(venv), "-c", "import platform; print(platform.python_version())"],
                             capture_output=True, text=True, check=True).stdout.strip()
    pins = pinned_versions(python_full_version=version)
    assert {n: v for n, v in installed.items() if pins.get(n) != v} == {}, "installed at other versions than constraints.txt"
    assert sorted(set(pins) - set(installed)) == [], "pinned but not installed: constraints.txt lists packages the install no longer needs"


def test_run_command_starts_marrow_run(venv):
    """scripts/run.sh ends in `marrow run --host 127.0.0.1 --port 8000` (here with --help, so
    that it prints and exits instead of serving)."""
    r = bash("scripts/run.sh", "--help", env_extra={"MARROW_SKIP_INSTALL": "1"}, timeout=120)
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
    assert "--port" in r.stdout and "--host" in r.stdout, r.stdout
