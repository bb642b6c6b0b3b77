"""Integration tests run against the real testbed: Docker, containerd, overlay rootfs.

Without a reachable Docker engine they skip, except under CI (CI=true), where a
missing engine is a failure: CI must prove the real thing works.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SANDBOX = "my-assistant"
OTHER = "other-uid"
OTHER_UID = 1234


def require_docker() -> None:
    """Skip without a reachable Docker engine; under CI=true, fail instead."""
    try:
        import docker

        docker.from_env(timeout=10).ping()
    except Exception as exc:
        message = f"no Docker engine reachable ({exc}); run scripts/setup-host.sh"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def testbed() -> Iterator[object]:
    require_docker()
    from testbed import Testbed

    bed = Testbed()
    bed.up()
    for name, uid in ((SANDBOX, 998), (OTHER, OTHER_UID)):
        # The tests are written for the stand-in's split layout; scripts/demo.sh leaves a real agent here.
        bed.ensure_sandbox(name, uid=uid)
    yield bed
    if os.environ.get("CLAWGUARD_KEEP_TESTBED") != "1":
        bed.down()


def fresh_sandbox(bed: object, name: str, **kwargs: object) -> Iterator[str]:
    """Sandbox ``name`` made anew for one test (``add_sandbox``'s keywords), removed after it."""
    bed.remove_sandbox(name)  # type: ignore[attr-defined]  # left by an interrupted run: nothing if absent
    bed.add_sandbox(name, **kwargs)  # type: ignore[attr-defined]
    yield name
    bed.remove_sandbox(name)  # type: ignore[attr-defined]


def wait_for(what: str, condition: Callable[[], object], timeout: float = 60, every: float = 0.1) -> float:
    """Poll until ``condition()`` is truthy; returns how long it took."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)
    return time.monotonic() - started


def sandbox_exec(bed: object, name: str, argv: list[str], user: str | None = None) -> str:
    code, out, err = bed.exec_in_sandbox(name, argv, user=user)  # type: ignore[attr-defined]
    assert code == 0, f"{argv} failed in {name}: {err.decode(errors='replace')}"
    return out.decode()


def sandbox_snapshot(bed: object, name: str) -> str:
    """Every path under /sandbox with its mode, owner, size and content hash, seen from inside."""
    return sandbox_exec(
        bed,
        name,
        [
            "sh",
            "-c",
            "find /sandbox -exec stat -c '%n %f %u %g %s' {} + | sort; "
            "find /sandbox -type f -exec sha256sum {} + | sort",
        ],
    )


def write_config(tmp_path: Path, archive: Path = REPO / "restore-archive", extra: str = "") -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        f"""version: 1
sandboxes:
  {SANDBOX}:
    target:
      kind: k3s
      cluster: openshell-cluster-nemoclaw
    archive: {archive}
    user: sandbox
{extra}  {OTHER}:
    target:
      kind: k3s
      cluster: openshell-cluster-nemoclaw
    archive: {archive}
"""
    )
    return path


# Figures the integration tests measure (timings, RPO), kept for a reader after the run.
FIGURES_DIR = Path(tempfile.gettempdir()) / "clawguard-integration-figures"

# Each test's state (locks, state.json, persisted captures) lives in its own directory, tmp_path/state, out of the user's
# home. A shared one let a capture left by an earlier test be restored into a later test's fresh pod.
_state_home = Path(tempfile.gettempdir()) / "clawguard-integration-state"


@pytest.fixture(autouse=True)
def _own_state_home(tmp_path: Path) -> Iterator[None]:
    global _state_home
    previous, _state_home = _state_home, tmp_path / "state"
    yield
    _state_home = previous


def clawguard_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "XDG_STATE_HOME": str(_state_home), **extra}


def clawguard(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a user would: a separate process."""
    return subprocess.run(
        [sys.executable, "-m", "clawguard", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env or clawguard_env(),
    )
