"""Shared fixtures for the whole suite. Keep the fixture names stable: other tests use them.

- `real_cells_dir`: the folder of real bone-marrow cells (one sub-folder per class code), from
  `--data-dir DIR`, else `$MARROW_TEST_DATA`, else `../shared/data/bone-marrow-7` beside the
  repository. Tests that use it skip, with the reason, when it is absent.
- `random_checkpoint`: a random-weights ReXNet-150 checkpoint directory, built once per session.
- `repo_root`: the repository root.

Tests under tests/integration/ are marked `integration`, under tests/e2e/ `e2e`, and tests using
`real_cells_dir` `realdata`, so `-m "not integration"` etc. select them.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "bone-marrow-7"
DATA_ENV = "MARROW_TEST_DATA"
CLASS_CODES = ("BLA", "EOS", "LYT", "MON", "NGS", "NIF", "PMO")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--data-dir", action="store", default=None, metavar="DIR",
        help=f"folder of real cells, one sub-folder per class (default: ${DATA_ENV}, "
             f"else ../shared/data/bone-marrow-7 beside the repository)")


def _data_dir(config: pytest.Config) -> Path:
    """Where the real cells are meant to be: --data-dir, then $MARROW_TEST_DATA, then the default.

    A relative path is taken from the repository root.
    """
    raw = config.getoption("--data-dir") or os.environ.get(DATA_ENV) or str(DEFAULT_DATA_DIR)
    path = Path(raw).expanduser()
    return path if path.is_absolute() else (REPO_ROOT / path)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        try:
            parts = item.path.relative_to(REPO_ROOT / "tests").parts
        except ValueError:
            parts = ()
        if "integration" in parts:
            item.add_marker(pytest.mark.integration)
        if "e2e" in parts:
            item.add_marker(pytest.mark.e2e)
        if "real_cells_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.realdata)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def real_cells_dir(pytestconfig: pytest.Config) -> Path:
    """The real-cell folder (ImageFolder layout: BLA/, EOS/, ... each holding JPEGs); skips if absent."""
    path = _data_dir(pytestconfig)
    if not path.is_dir():
        pytest.skip(f"real cells not found at {path} (set --data-dir DIR or ${DATA_ENV}=DIR; "
                    f"default ../shared/data/bone-marrow-7 beside the repository)")
    classes = [c for c in CLASS_CODES if (path / c).is_dir() and any((path / c).glob("*.jpg"))]
    if not classes:
        pytest.skip(f"{path} holds no class folders with .jpg cells (expected {', '.join(CLASS_CODES)})")
    return path


@pytest.fixture(scope="session")
def random_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A MarrowDiff checkpoint directory with random (seeded) ReXNet-150 weights, built once."""
    import torch

    from app.ml.card import ModelCard

    from app.ml.checkpoint import build_model, save_checkpoint

    out = tmp_path_factory.mktemp("random-checkpoint")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model()
    return save_checkpoint(model, ModelCard(version="it-random", notes="random weights, for tests"), out)
