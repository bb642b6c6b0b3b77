"""Part of the bad-input corpus (tests/corpus/) against the real testbed pod.

Each case runs ``clawguard restore`` as a user would (a separate process, the real
k3s target) and must exit 2 with its message, and the pod's /sandbox, read from
inside the pod, must be exactly what it was.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.corpus.cases import assert_messages, case_named, set_up

from .conftest import SANDBOX, clawguard, sandbox_snapshot

pytestmark = pytest.mark.integration

SUBSET = [
    "090-unknown-uid",  # refused only after reading the pod's /etc/passwd
    "091-unknown-user-name",
    "092-unknown-step-owner",
    "050-skill-symlink-absolute",
    "053-soul-symlink-outside-archive",
    "040-dest-dotdot-escape",
    "041-dest-absolute-outside-root",
    "047-layout-dir-outside-root",
    "110-duplicate-dest",
    "114-convention-script-collides-with-credentials",
    "066-openclaw-json-invalid",
]


@pytest.fixture(scope="module")
def quiet_pod(testbed: object) -> object:
    """A freshly restarted pod: no gateway runs in it, so nothing writes under /sandbox by itself
    and any change seen after a refused restore was made by clawguard."""
    testbed.restart(SANDBOX)  # type: ignore[attr-defined]
    first = sandbox_snapshot(testbed, SANDBOX)
    time.sleep(2)
    assert sandbox_snapshot(testbed, SANDBOX) == first, "something in the pod writes under /sandbox by itself"
    return testbed


@pytest.mark.parametrize("name", SUBSET)
def test_refused_restore_leaves_the_pod_untouched(quiet_pod: object, name: str, tmp_path: Path) -> None:
    case = case_named(name)
    assert case.exit == 2 and case.command == "restore"
    config, archive = set_up(case, tmp_path)
    pod = quiet_pod.container_id(SANDBOX)  # type: ignore[attr-defined]
    before = sandbox_snapshot(quiet_pod, SANDBOX)

    done = clawguard("--config", str(config), "restore")

    assert done.returncode == 2, done.stdout + done.stderr
    assert_messages(case, done.stdout, done.stderr, config, archive)
    assert quiet_pod.container_id(SANDBOX) == pod  # type: ignore[attr-defined]
    assert sandbox_snapshot(quiet_pod, SANDBOX) == before


def test_the_snapshot_sees_a_restore(quiet_pod: object, tmp_path: Path) -> None:
    """The check above means something: a valid restore into the same pod changes the snapshot."""
    case = case_named("090-unknown-uid")
    config, _archive = set_up(case, tmp_path)
    config.write_text(config.read_text().replace("user: 4242", "user: sandbox"))
    before = sandbox_snapshot(quiet_pod, SANDBOX)

    done = clawguard("--config", str(config), "restore", "--no-gateway")

    assert done.returncode == 0, done.stdout + done.stderr
    assert sandbox_snapshot(quiet_pod, SANDBOX) != before
