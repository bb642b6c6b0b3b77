from __future__ import annotations

import io
import time
from pathlib import Path

from clawguard import log, parse_config
from clawguard.converge import converge
from clawguard.hooks import fire
from clawguard.state import StateStore

from .chroot_sandbox import ChrootTarget, context, make_sandbox_root
from .conftest import basic_config


def _recorder(tmp_path: Path, name: str) -> str:
    """An argument list that dumps the hook's CLAWGUARD_* environment to a file."""
    out = tmp_path / f"{name}.env"
    return f"[sh, -c, 'env | grep ^CLAWGUARD_ | sort > {out}']"


def _read_env(path: Path, timeout: float = 10) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while not path.exists() or not path.read_text():
        assert time.monotonic() < deadline, f"hook never wrote {path}"
        time.sleep(0.05)
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


def test_restored_and_failed_hooks_get_the_outcome(archive: Path, tmp_path: Path) -> None:
    log.configure("error", io.StringIO())
    hooks = f"hooks:\n  on_restored: {_recorder(tmp_path, 'restored')}\n  on_failed: {_recorder(tmp_path, 'failed')}\n"
    config = parse_config(hooks + basic_config(archive, "    gateway: {enabled: false}\n"), "c.yaml")
    sandbox = config.sandboxes["my-assistant"]
    target = ChrootTarget(make_sandbox_root(tmp_path / "root"))

    assert converge(context(sandbox, target)).ok
    env = _read_env(tmp_path / "restored.env")
    assert env["CLAWGUARD_EVENT"] == "restored"
    assert env["CLAWGUARD_SANDBOX"] == "my-assistant"
    assert env["CLAWGUARD_CONTAINER_ID"] == "0" * 64
    assert env["CLAWGUARD_OUTCOME"] == "ok"
    assert env["CLAWGUARD_FAILED_STEP"] == ""
    assert env["CLAWGUARD_CHANGED_STEPS"].startswith("exec-approvals,telegram,openclaw.json")
    assert float(env["CLAWGUARD_DURATION"]) > 0

    # A new pod whose image has no tar: every write really fails inside the sandbox.
    broken = make_sandbox_root(tmp_path / "broken")
    (broken / "bin" / "tar").unlink()
    result = converge(context(sandbox, ChrootTarget(broken)))
    assert not result.ok
    env = _read_env(tmp_path / "failed.env")
    assert env["CLAWGUARD_EVENT"] == "failed"
    assert env["CLAWGUARD_OUTCOME"] == "failed"
    assert env["CLAWGUARD_FAILED_STEP"] == "exec-approvals"
    deadline = time.monotonic() + 10
    while (StateStore().load("my-assistant").get("last_hook") or {}).get("event") != "on_failed":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert StateStore().load("my-assistant")["last_hook"]["exit_code"] == 0


def test_a_failing_or_hanging_hook_is_logged_and_never_raises(tmp_path: Path) -> None:
    out = io.StringIO()
    log.configure("info", out)
    hooks = {"on_failed": ["sh", "-c", "echo boom >&2; exit 3"], "on_drift": ["sleep", "5"], "timeout": 1}
    fire(hooks, "on_failed", {}, "a", wait=True)
    started = time.monotonic()
    fire(hooks, "on_drift", {}, "a", wait=True)
    assert time.monotonic() - started < 4
    text = out.getvalue()
    assert "outcome=failed" in text and "hook=on_failed exit_code=3 error=boom" in text
    assert "hook=on_drift exit_code=timeout" in text
    assert fire(hooks, "on_restored", {}, "a") is None  # not configured: nothing runs


def test_sandbox_hooks_override_global_ones(archive: Path) -> None:
    config = parse_config(
        "hooks: {on_failed: [/bin/a], on_drift: [/bin/b], timeout: 5}\n"
        + basic_config(archive, "    hooks: {on_drift: [/bin/c]}\n"),
        "c.yaml",
    )
    hooks = config.sandboxes["my-assistant"].hooks
    assert hooks == {"on_restored": [], "on_failed": ["/bin/a"], "on_drift": ["/bin/c"], "on_started": [], "timeout": 5}


def test_on_failed_fires_once_per_failure_episode(archive: Path, tmp_path: Path) -> None:
    """on_failed fires once per failure episode, and again only after a success in between;
    not at every retry of the same failure (about once a minute)."""
    log.configure("error", io.StringIO())
    record = tmp_path / "failed.log"
    hooks = f"hooks:\n  on_failed: [sh, -c, 'echo \"$CLAWGUARD_REASON\" >> {record}']\n"
    config = parse_config(hooks + basic_config(archive, "    gateway: {enabled: false}\n"), "c.yaml")
    sandbox = config.sandboxes["my-assistant"]
    broken = make_sandbox_root(tmp_path / "broken")
    (broken / "bin" / "tar").unlink()  # every write fails
    target = ChrootTarget(broken)

    def lines() -> list[str]:
        time.sleep(0.5)  # a hook runs in the background
        return record.read_text().splitlines() if record.exists() else []

    for _retry in range(3):
        assert not converge(context(sandbox, target), reason="pod replaced").ok
    assert lines() == ["pod replaced"]
    assert StateStore().load("my-assistant")["failing_since"] is not None
    (broken / "bin" / "tar").symlink_to("busybox")  # fixed: a success ends the episode
    assert converge(context(sandbox, target), reason="drift check").ok
    assert StateStore().load("my-assistant")["failing_since"] is None
    (broken / "bin" / "tar").unlink()
    (broken / "sandbox/.openclaw-data/workspace/SOUL.md").unlink()  # drift to repair, and it fails
    assert not converge(context(sandbox, target), reason="drift check").ok
    assert lines() == ["pod replaced", "drift check"]
