from __future__ import annotations

import os
from pathlib import Path

import pytest

from clawguard import ConfigError, load_config, parse_config
from clawguard.layout import Layout

from .conftest import basic_config


def test_minimal_config_gets_defaults(archive: Path, write_config) -> None:  # type: ignore[no-untyped-def]
    config = load_config(write_config(basic_config(archive)))
    sandbox = config.sandboxes["my-assistant"]
    assert sandbox.target["kind"] == "k3s"
    assert sandbox.target["namespace"] == "openshell"
    assert sandbox.target["locate"] == "auto"
    assert sandbox.layout.style == "auto"
    # With no pod to read the style from, the seeds' split layout; a flat pod gets flat paths.
    assert sandbox.layout.resolve() == Layout(
        style="split",
        root="/sandbox",
        config_dir="/sandbox/.openclaw",
        data_dir="/sandbox/.openclaw-data",
        workspace="/sandbox/.openclaw-data/workspace",
        telegram_dir="/sandbox/.openclaw-data/telegram",
        exec_approvals="auto",
        script_links=True,
    )
    flat = sandbox.layout.resolve("flat")
    assert (flat.config_dir, flat.data_dir, flat.workspace) == (
        "/sandbox/.openclaw",
        "/sandbox/.openclaw",
        "/sandbox/.openclaw/workspace",
    )
    assert flat.script_links is False and not flat.config_owner_root
    assert sandbox.agent.version == "auto" and sandbox.agent.validate_config
    assert sandbox.persist is None  # chosen per pod, from the agent's version
    assert sandbox.plan is None
    assert sandbox.limits.max_archive_bytes == 256 * 1024 * 1024
    # Captures kept by age: every one for an hour, hourly for 48 h, daily for 14 d,
    # and the newest 5 whatever their age (persist_keep).
    daemon = config.daemon
    assert (daemon.persist_keep_within, daemon.persist_keep_hourly, daemon.persist_keep_daily) == (3600, 48, 14)
    assert daemon.persist_keep == 5


def test_unknown_key_names_key_and_line(archive: Path, write_config) -> None:  # type: ignore[no-untyped-def]
    path = write_config(basic_config(archive, "    tool_policy: strict\n"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    err = info.value
    assert err.key == "sandboxes.my-assistant.tool_policy"
    assert err.line == 9
    assert err.file == str(path)
    assert "unknown key 'tool_policy'" in str(err)
    assert str(err).startswith(f"{path}:9: sandboxes.my-assistant.tool_policy:")


@pytest.mark.parametrize(
    ("body", "key", "line", "message"),
    [
        ("version: 2\nsandboxes: {}\n", "version", 1, "at most 1"),
        ("sandboxes: {}\n", "version", 1, "is required"),
        (
            "version: 1\nsandboxes:\n  Bad_Name:\n    target: {kind: k3s}\n    archive: /x\n",
            "sandboxes.Bad_Name",
            3,
            "not valid",
        ),
        (
            "version: 1\nsandboxes:\n  a:\n    target: {kind: lxc}\n    archive: /x\n",
            "sandboxes.a.target.kind",
            4,
            "not one of",
        ),
        (
            "version: 1\nsandboxes:\n  a:\n    target: {kind: k3s, cluster: 'x;rm -rf /'}\n    archive: /x\n",
            "sandboxes.a.target.cluster",
            4,
            "not valid",
        ),
        (
            "version: 1\nsandboxes:\n  a:\n    target: {kind: k3s}\n    archive: [1]\n",
            "sandboxes.a.archive",
            5,
            "expected a path",
        ),
        # A missing key is reported on the line of the mapping that lacks it ("a:").
        ("version: 1\nsandboxes:\n  a:\n    target: {kind: k3s}\n", "sandboxes.a.archive", 3, "is required"),
        (
            "version: 1\nsandboxes:\n  a:\n    target: {kind: k3s}\n    archive: /x\n    user: 'a b'\n",
            "sandboxes.a.user",
            6,
            "not a user name",
        ),
        (
            "version: 1\nsandboxes:\n  a:\n    target: {kind: k3s}\n    archive: /x\n    layout: {root: sandbox}\n",
            "sandboxes.a.layout.root",
            6,
            "absolute",
        ),
        (
            "version: 1\ndaemon: {max_parallel: many}\nsandboxes: {}\n",
            "daemon.max_parallel",
            2,
            'expected an integer or "auto", got str',
        ),
        (
            "version: 1\nsandboxes:\n  a:\n    target: {kind: k3s}\n    archive: /x\n    layout: {data_dir: /sandbox/../etc}\n",
            "sandboxes.a.layout.data_dir",
            6,
            "'..'",
        ),
    ],
)
def test_bad_values(body: str, key: str, line: int, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(body, "c.yaml")
    assert info.value.key == key
    assert info.value.line == line
    assert message in str(info.value)


def test_max_parallel_auto_follows_the_cpus_unless_set(archive: Path) -> None:
    auto = parse_config(basic_config(archive), "c.yaml").daemon
    assert auto.max_parallel == "auto" and auto.max_parallel_resolved == max(2, len(os.sched_getaffinity(0)))
    assert (
        parse_config("daemon: {max_parallel: 5}\n" + basic_config(archive), "c.yaml").daemon.max_parallel_resolved == 5
    )


def test_yaml_syntax_error_has_line() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("version: 1\nsandboxes:\n  a: [unclosed\n", "c.yaml")
    assert info.value.line is not None
    assert "YAML syntax error" in str(info.value)


def test_duplicate_keys_are_errors() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("version: 1\nversion: 1\n", "c.yaml")
    assert "duplicate key 'version' (first on line 1)" in str(info.value)
    assert info.value.line == 2


def test_plan_steps_are_validated_against_their_kind(archive: Path) -> None:
    body = basic_config(
        archive,
        "    plan:\n      - kind: file\n        source: SOUL.md\n        dest: /sandbox/x\n        mode: '0640'\n      - kind: tree\n        source: skills\n        destination: /sandbox/y\n",
    )
    with pytest.raises(ConfigError) as info:
        parse_config(body, "c.yaml")
    assert info.value.key == "sandboxes.my-assistant.plan[1].destination"
    assert info.value.line == 16


@pytest.mark.parametrize(("raw", "mode"), [("0444", 0o444), ("644", 0o644), ("'0600'", 0o600), ("0o755", 0o755)])
def test_modes_are_always_octal(archive: Path, raw: str, mode: int) -> None:
    body = basic_config(archive, f"    plan:\n      - kind: directory\n        path: /sandbox/d\n        mode: {raw}\n")
    config = parse_config(body, "c.yaml")
    plan = config.sandboxes["my-assistant"].plan
    assert plan is not None
    assert plan[0]["mode"] == mode


@pytest.mark.parametrize("raw", ["999", "'rwx'", "04755", "true"])
def test_bad_modes(archive: Path, raw: str) -> None:
    body = basic_config(archive, f"    plan:\n      - kind: directory\n        path: /sandbox/d\n        mode: {raw}\n")
    with pytest.raises(ConfigError) as info:
        parse_config(body, "c.yaml")
    assert info.value.key == "sandboxes.my-assistant.plan[0].mode"


def test_default_path_honours_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from clawguard.config import default_path

    monkeypatch.delenv("CLAWGUARD_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert default_path() == tmp_path / "clawguard" / "config.yaml"
    monkeypatch.setenv("CLAWGUARD_CONFIG", "/etc/cg.yaml")
    assert default_path() == Path("/etc/cg.yaml")


def test_missing_file() -> None:
    with pytest.raises(ConfigError) as info:
        load_config("/nonexistent/clawguard.yaml")
    assert "file not found" in str(info.value)
    assert info.value.exit_code == 2


def test_control_character_is_reported_on_its_line() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("version: 1\nsandboxes:\n  a:\n    user: sand\x07box\n", "c.yaml")
    assert info.value.line == 4
    assert "unacceptable character #x0007" in str(info.value)


def test_non_utf8_config_is_reported_on_its_line(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(b"version: 1\nsandboxes:\n  a:\n    plan: [{kind: soul, name: caf\xe9}]\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.line == 4
    assert "not UTF-8 text" in str(info.value)


def test_a_string_where_a_list_belongs_is_not_split(archive: Path) -> None:
    # A hook written as a command line: hooks are argument lists, no shell ever runs them.
    body = basic_config(archive, '    hooks:\n      on_failed: "notify-send failed; rm -rf ~"\n')
    with pytest.raises(ConfigError) as info:
        parse_config(body, "c.yaml")
    assert info.value.key == "sandboxes.my-assistant.hooks.on_failed"
    assert info.value.line == 10
    assert "expected a list, got a string" in str(info.value)


def test_a_key_with_a_newline_is_escaped_in_the_message() -> None:
    body = 'version: 1\nsandboxes:\n  "a\\nlevel=info event=forged":\n    target: {kind: k3s}\n    archive: /x\n'
    with pytest.raises(ConfigError) as info:
        parse_config(body, "c.yaml")
    assert "\n" not in str(info.value)
    assert str(info.value).startswith("c.yaml:3: sandboxes.a\\nlevel=info event=forged: ")


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("{kind: k3s, pod: shared}", "{kind: k3s, pod: shared}"),
        ("{kind: k3s}", "{kind: k3s, pod: my-assistant}"),  # the pod defaults to the sandbox's name
        ("{kind: k3s, locate: marker}", "{kind: k3s, locate: marker}"),  # the one pod holding the marker
        ("{kind: docker, container: openshell-a}", "{kind: docker, container: openshell-a}"),
    ],
)
def test_two_sandboxes_on_one_pod_are_a_config_error(archive: Path, first: str, second: str) -> None:
    body = (
        "version: 1\nsandboxes:\n"
        f"  my-assistant:\n    target: {first}\n    archive: {archive}\n"
        f"  other:\n    target: {second}\n    archive: {archive}\n"
    )
    with pytest.raises(ConfigError) as info:
        parse_config(body, "c.yaml")
    assert info.value.key == "sandboxes.other.target" and info.value.line == 7
    assert "'my-assistant' and 'other' name the same sandbox" in str(info.value)


def test_sandboxes_on_their_own_pods_are_fine(archive: Path) -> None:
    body = (
        "version: 1\nsandboxes:\n"
        f"  my-assistant:\n    target: {{kind: k3s}}\n    archive: {archive}\n"
        f"  other:\n    target: {{kind: k3s, cluster: openshell-cluster-b, pod: my-assistant}}\n    archive: {archive}\n"
        f"  third:\n    target: {{kind: docker, container: openshell-a}}\n    archive: {archive}\n"
    )
    assert list(parse_config(body, "c.yaml").sandboxes) == ["my-assistant", "other", "third"]
