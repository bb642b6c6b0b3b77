"""The public façade alone drives a restore, a capture and a status on the testbed.

Only ``clawguard.Clawguard`` is imported from clawguard: what an embedding program
(or the CLI) would use, with the gateway started over the OpenShell SSH proxy.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from clawguard import Clawguard

from .conftest import SANDBOX, sandbox_exec, write_config

pytestmark = pytest.mark.integration
MEMORY = "/sandbox/.openclaw-data/workspace/MEMORY.md"


def test_the_facade_restores_captures_and_reports_status(
    testbed: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    testbed.install_openshell(bin_dir)  # type: ignore[attr-defined]
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    guard = Clawguard.load(write_config(tmp_path))

    first_pod = testbed.restart(SANDBOX)  # type: ignore[attr-defined]
    (restored,) = guard.restore(SANDBOX)
    assert restored.ok and restored.container_id == first_pod, restored.report.to_dict()
    assert restored.gateway is not None and restored.gateway.healthy
    assert restored.report.changed == len(restored.report.steps)
    soul = (Path(__file__).resolve().parents[2] / "restore-archive" / "SOUL.md").read_text()
    assert sandbox_exec(testbed, SANDBOX, ["cat", "/sandbox/.openclaw-data/workspace/SOUL.md"], user="sandbox") == soul

    # The agent writes its memory; a capture through the façade takes it.
    sandbox_exec(testbed, SANDBOX, ["sh", "-c", f"echo 'the user likes tea' >> {MEMORY}"], user="sandbox")
    written = sandbox_exec(testbed, SANDBOX, ["cat", MEMORY])
    ((name, taken),) = guard.capture(SANDBOX)
    assert name == SANDBOX and taken.outcome == "saved" and taken.capture is not None

    status = {row["sandbox"]: row for row in guard.status()["sandboxes"]}[SANDBOX]
    assert status["container_id"] == first_pod
    assert status["last_restore"]["outcome"] == "ok"
    assert status["persist"]["last_capture_generation"] == taken.capture.generation

    # A new pod: the façade brings back the archive and the captured memory, read from inside.
    second_pod = testbed.restart(SANDBOX)  # type: ignore[attr-defined]
    (again,) = guard.restore(SANDBOX)
    assert again.ok and again.container_id == second_pod, again.report.to_dict()
    assert sandbox_exec(testbed, SANDBOX, ["cat", MEMORY], user="sandbox").startswith(written)
    assert {row["sandbox"]: row for row in guard.status()["sandboxes"]}[SANDBOX]["container_id"] == second_pod
