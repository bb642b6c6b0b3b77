"""The test bed's `install-openshell` never replaces an openshell it did not write."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed import Testbed, TestbedError


def test_install_openshell_replaces_its_own_copy(tmp_path: Path) -> None:
    first = Testbed.install_openshell(tmp_path)
    first.write_bytes(first.read_bytes() + b"\n# an older copy\n")
    again = Testbed.install_openshell(tmp_path)
    assert again == first and not again.read_bytes().endswith(b"# an older copy\n")


def test_install_openshell_refuses_a_foreign_file(tmp_path: Path) -> None:
    real = tmp_path / "openshell"
    real.write_bytes(b"\x7fELF the real OpenShell CLI")
    with pytest.raises(TestbedError, match="not the testbed's openshell stand-in"):
        Testbed.install_openshell(tmp_path)
    assert real.read_bytes() == b"\x7fELF the real OpenShell CLI"
