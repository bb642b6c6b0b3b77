"""The wheel a user installs holds clawguard alone: the test bed stays in the checkout."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path


def test_the_wheel_holds_no_test_bed_and_installs_without_it(wheelhouse: Path, tmp_path: Path) -> None:
    [wheel] = wheelhouse.glob("clawguard-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert any(name.startswith("clawguard/") for name in names)
    assert not [name for name in names if "testbed" in name or name.startswith(("tests/", "bench/"))]

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    install = [python, "-m", "pip", "install", "--quiet", "--no-index", "--find-links", str(wheelhouse), "clawguard"]
    subprocess.run(install, check=True, timeout=600)
    # Run from the empty tmp_path: a checkout on sys.path would hide a missing package.
    found = subprocess.run(
        [python, "-c", "import clawguard; import clawguard.testbed"], cwd=tmp_path, capture_output=True, text=True
    )
    assert found.returncode != 0 and "No module named 'clawguard.testbed'" in found.stderr
    found = subprocess.run([python, "-c", "import testbed"], cwd=tmp_path, capture_output=True, text=True)
    assert found.returncode != 0 and "No module named 'testbed'" in found.stderr
