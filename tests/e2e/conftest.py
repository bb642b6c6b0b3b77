"""Shared set-up for the end-to-end tests: a wheelhouse of clawguard and its dependencies."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """clawguard's wheel and every dependency's, built from this checkout as a release would be."""
    wheels = tmp_path_factory.mktemp("wheels")
    source = tmp_path_factory.mktemp("src") / "clawguard"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".venv", ".git", "*.egg-info", "__pycache__", "build"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "-w", str(wheels), str(source)], check=True, timeout=600
    )
    wheels.chmod(0o755)
    for wheel in wheels.iterdir():
        wheel.chmod(0o644)
    return wheels
