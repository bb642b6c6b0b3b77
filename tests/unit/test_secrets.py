"""A token in the config, a credential file, an environment variable and a
URL never reaches any output, whichever log path runs (errors and tracebacks too)."""

from __future__ import annotations

import io
import json
import os
import secrets
import threading
import time
from pathlib import Path

import pytest
import structlog

from clawguard import log, parse_config, threads
from clawguard.cli import main
from clawguard.converge import converge
from clawguard.daemon import Daemon
from clawguard.state import state_dir

from .chroot_sandbox import ChrootTarget, context, make_sandbox_root
from .conftest import basic_config


def _tokens() -> dict[str, str]:
    return {where: f"{where}-{secrets.token_hex(16)}" for where in ("config", "credential", "env", "url")}


def test_no_log_path_prints_a_secret(
    archive: Path, tmp_path: Path, write_config, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    tokens = _tokens()
    out = io.StringIO()
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", tokens["env"])
    log.configure("debug", out)
    (archive / "credentials" / "telegram.json").write_text(json.dumps({"botToken": tokens["credential"]}))
    # A hook that leaks everything it can reach to stderr, and fails, so that its stderr is logged.
    leak = f'echo "env=$TELEGRAM_BOT_TOKEN arg=$0 cred={tokens["credential"]}" >&2; exit 3'
    hook = f"[sh, -c, '{leak}', 'Authorization: Bearer {tokens['config']}']"
    hooks = f"hooks:\n  on_restored: {hook}\n  on_failed: {hook}\n"
    # ssh fails and prints its arguments, health URL included, as a broken proxy might.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ssh").write_text('#!/bin/sh\necho "ssh: cannot connect: $*" >&2\nexit 255\n')
    (bin_dir / "ssh").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    gateway = (
        f'    gateway:\n      host_key: accept-new\n      health_url: "http://127.0.0.1:18789/?token={tokens["url"]}"\n'
    )
    text = hooks + basic_config(archive, gateway)
    config = parse_config(text, "c.yaml")
    sandbox = config.sandboxes["my-assistant"]
    target = ChrootTarget(make_sandbox_root(tmp_path / "root"))

    # 1. A restore (the hook fails loudly), then a gateway that cannot be reached.
    result = converge(context(sandbox, target))
    assert not result.ok and result.gateway_error  # started over a proxy that fails
    deadline = time.monotonic() + 10
    while "event=hook.done" not in out.getvalue():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # 2. A bug in a thread, and an error logged with a traceback, both quoting secrets.
    crash = threads.start(lambda: (_ for _ in ()).throw(RuntimeError(f"bug near {tokens['credential']}")), "crash")
    crash.join()
    try:
        raise ValueError(f"while reading {tokens['env']} and {tokens['url']}")
    except ValueError:
        structlog.get_logger("test").exception("worker.error")

    # 3. A daemon whose target blows up with a secret in the message: worker.error with a traceback.
    class Leaky(ChrootTarget):
        def locate(self):  # type: ignore[no-untyped-def]
            raise RuntimeError(f"unexpected answer {tokens['config']}")

    before = out.getvalue().count("event=worker.error")
    daemon = Daemon(
        parse_config(basic_config(archive, "    gateway: {enabled: false}\n"), "d.yaml"),
        targets={"my-assistant": Leaky(target.root)},
    )
    runner = threading.Thread(target=daemon.run)
    runner.start()
    deadline = time.monotonic() + 10
    while out.getvalue().count("event=worker.error") == before:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    daemon.shutdown()
    runner.join(20)
    # 4. CLI errors that quote the offending value, and a YAML error on the token's line.
    bad_url = write_config(text.replace("http://127.0.0.1", "ftp://127.0.0.1"), "bad-url.yaml")
    assert main(["-c", str(bad_url), "check"]) == 2
    bad_yaml = write_config(text.replace(f'token={tokens["url"]}"', f"token={tokens['url']}"), "bad-yaml.yaml")
    assert main(["-c", str(bad_yaml), "check"]) == 2
    good = write_config(text, "good.yaml")
    assert main(["-c", str(good), "status"]) == 0
    assert main(["-c", str(good), "status", "--json"]) == 0

    captured = capsys.readouterr()
    stored = "".join(p.read_text() for p in state_dir().rglob("*.json"))
    everything = out.getvalue() + captured.out + captured.err + stored
    for where, token in tokens.items():
        assert token not in everything, f"the {where} token leaked"
    # The paths really ran: their events are there, with the secrets masked.
    for event in ("hook.done", "gateway.health", "thread.crashed", "worker.error"):
        assert f"event={event}" in out.getvalue()
    assert "***" in out.getvalue() and "Traceback" in out.getvalue()
    assert "YAML syntax error" in captured.err and "health_url" in captured.err
