"""An explicit layout the agent's version cannot honour is a config error.

OpenClaw 2026.8.1 and later keep exec approvals in SQLite. A real exec-approvals.json there
(``layout.exec_approvals: file``) is imported once and deleted, then blocks every approval and
every `openclaw skills list` ("Legacy exec approvals exist ... Run `openclaw doctor --fix`"):
the gateway serves, the agent is broken, and a restore that wrote it reported ok. Now it is
refused like the symlinked approvals were: exit 2, the file, key and line, the version seen and
what would work, before anything is written, by restore, check and doctor alike.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from clawguard import ConfigError, parse_config
from clawguard.agent import Version, capabilities
from clawguard.api import Clawguard
from clawguard.plan import build_plan
from clawguard.sandboxfs import APPLY_SCRIPT

from .chroot_sandbox import ChrootTarget, make_sandbox_root, snapshot
from .conftest import basic_config

SQLITE_AGENT = "2026.9.6"  # approvals in its database (docs/compatibility.md)
FILE_AGENT = "2026.6.10"  # approvals in a file, read (not written) through a symlink


def _config(archive: Path, layout: str = "", plan: str = "", version: str | None = SQLITE_AGENT) -> str:
    extra = "    gateway: {enabled: false}\n"
    if version is not None:
        extra += f'    agent: {{version: "{version}"}}\n'
    if layout:
        extra += f"    layout:\n      exec_approvals: {layout}\n"
    if plan:
        extra += f"    plan:\n      - {plan}\n"
    return basic_config(archive, extra)


@pytest.mark.parametrize(
    ("how", "because"),
    [
        ("file", "keeps exec approvals in its SQLite database"),
        ("symlink", "refuses a symlinked exec-approvals.json"),
    ],
)
def test_an_approvals_layout_a_sqlite_agent_cannot_use_is_refused_at_its_line(
    archive: Path, how: str, because: str
) -> None:
    sandbox = parse_config(_config(archive, layout=how), "c.yaml").sandboxes["my-assistant"]
    with pytest.raises(ConfigError) as info:
        build_plan(sandbox)
    err = info.value
    assert (err.file, err.key, err.line) == ("c.yaml", "sandboxes.my-assistant.layout.exec_approvals", 12)
    assert f"exec_approvals: {how}: OpenClaw {SQLITE_AGENT} {because}" in err.message  # the version seen
    assert "use auto or cli" in err.message  # what would work
    assert str(err).startswith("c.yaml:12: sandboxes.my-assistant.layout.exec_approvals: ")


def test_the_file_layout_names_what_the_agent_then_does(archive: Path) -> None:
    sandbox = parse_config(_config(archive, layout="file"), "c.yaml").sandboxes["my-assistant"]
    with pytest.raises(ConfigError, match=r"Legacy exec approvals exist .* Run `openclaw doctor --fix`"):
        build_plan(sandbox)


def test_a_steps_own_layout_is_refused_at_the_steps_key(archive: Path) -> None:
    sandbox = parse_config(_config(archive, plan="{kind: exec_approvals, layout: file}"), "c.yaml").sandboxes[
        "my-assistant"
    ]
    with pytest.raises(ConfigError) as info:
        build_plan(sandbox)
    assert info.value.key == "sandboxes.my-assistant.plan[0].layout" and info.value.line == 12
    assert "use cli, or leave it out" in info.value.message


@pytest.mark.parametrize(
    ("version", "how"),
    [
        (SQLITE_AGENT, "cli"),
        (SQLITE_AGENT, "auto"),
        (FILE_AGENT, "file"),
        (FILE_AGENT, "symlink"),  # read-only through a symlink: a warning, as before
        ("2026.3.31", "symlink"),
    ],
)
def test_layouts_the_version_can_use_still_plan(archive: Path, version: str, how: str) -> None:
    sandbox = parse_config(_config(archive, layout=how, version=version), "c.yaml").sandboxes["my-assistant"]
    plan = build_plan(sandbox)
    assert any(step.step.kind == "exec_approvals" for step in plan.steps)


def test_the_table_says_which_layouts_each_version_refuses() -> None:
    sqlite = capabilities(Version(2026, 8, 1))
    assert sqlite.refuses_approvals("file") and sqlite.refuses_approvals("symlink")
    assert sqlite.refuses_approvals("cli") is None and sqlite.refuses_approvals("auto") is None
    older = capabilities(Version(2026, 8, 0))
    assert all(older.refuses_approvals(how) is None for how in ("file", "symlink", "auto"))


# ----------------------------------------------------------- known only from the pod


@pytest.fixture
def sqlite_pod(tmp_path: Path) -> ChrootTarget:
    """A pod whose agent says it is 2026.9.6: the config pins no version, so only the pod tells."""
    return ChrootTarget(make_sandbox_root(tmp_path / "root", agent=SQLITE_AGENT))


def test_restore_refuses_it_once_the_pod_tells_the_version_and_writes_nothing(
    archive: Path, tmp_path: Path, sqlite_pod: ChrootTarget
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(_config(archive, layout="file", version=None))
    guard = Clawguard.load(config, targets={"my-assistant": sqlite_pod})
    before = snapshot(sqlite_pod.root)
    with pytest.raises(ConfigError) as info:
        guard.restore("my-assistant", gateway=False)
    err = info.value
    assert (err.file, err.key, err.line) == (str(config), "sandboxes.my-assistant.layout.exec_approvals", 11)
    assert f"OpenClaw {SQLITE_AGENT} keeps exec approvals in its SQLite database" in err.message
    assert err.exit_code == 2
    assert not any(APPLY_SCRIPT in arg for call in sqlite_pod.calls for arg in call), "a write ran"
    assert snapshot(sqlite_pod.root) == before


def test_check_names_it_from_the_pod_and_offline_cannot_know(
    archive: Path, tmp_path: Path, sqlite_pod: ChrootTarget, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    import io

    from clawguard import log
    from clawguard.cli import main

    config = tmp_path / "config.yaml"
    config.write_text(_config(archive, layout="file", version=None))
    monkeypatch.setattr("clawguard.context.make_target", lambda _name, _values: sqlite_pod)
    try:
        assert main(["--config", str(config), "check"]) == 2
        err = capsys.readouterr().err
        assert f"{config}:11: sandboxes.my-assistant.layout.exec_approvals: exec_approvals: file: " in err
        assert f"OpenClaw {SQLITE_AGENT}" in err and "use auto or cli" in err
        # --offline reads no pod, so it cannot know the version (none is pinned): it passes.
        assert main(["--config", str(config), "check", "--offline"]) == 0
    finally:
        log.configure("error", io.StringIO())  # main logged to capsys's stream, closed after this test
