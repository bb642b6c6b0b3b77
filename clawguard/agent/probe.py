"""What a pod is: its users, its layout style (split or flat) and the agent's version.

Learned once per pod (a container's image cannot change under it), in one root exec:
the user table, the layout, and the ``package.json`` of the npm package the agent's
command resolves to (``/usr/local/bin/openclaw -> ../lib/node_modules/openclaw/openclaw.mjs``),
whose version is the one ``openclaw --version`` prints. Only when the command is not
an OpenClaw package (a wrapper script, a custom build) is ``openclaw --version`` asked, as
the sandbox user, in a second exec: a Node.js start that costs the restore of a new pod
more than everything else it reads. Nothing is written.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ..entries import OwnerRef
from ..sandboxfs import (
    DESCRIBE,
    PreRead,
    ProtocolError,
    SandboxCommandFailed,
    UserTable,
    parse_inspection,
)
from ..targets import Instance, Target
from ..targets.base import shell_script
from .cli import AgentCLI, AgentError
from .versions import Capabilities, Version, capabilities

Style = Literal["split", "flat"]

# The user table, the layout's style and the agent's package.json (clawguard/data/sh/facts.sh).
FACTS_SCRIPT = shell_script("facts.sh")
# The facts, a NUL, then an inspection, in one exec (facts-and-inspect.sh).
FACTS_AND_INSPECT_SCRIPT = shell_script("facts-and-inspect.sh")


@dataclass(frozen=True)
class SandboxFacts:
    """One pod, as clawguard needs to know it before it plans anything."""

    container_id: str
    users: UserTable
    style: Style
    version: Version | None
    version_text: str  # what the agent said, or why it said nothing

    @property
    def capabilities(self) -> Capabilities:
        return capabilities(self.version)

    def describe(self) -> str:
        agent = f"OpenClaw {self.version}" if self.version else f"agent version unknown ({self.version_text})"
        return f"{agent}, {self.style} layout"


def probe(
    target: Target,
    instance: Instance,
    *,
    user: OwnerRef,
    split_dirs: tuple[str, str],
    command: str,
    version: str | None = None,
    inspect: Sequence[str] = (),
) -> tuple[SandboxFacts, PreRead | None]:
    """The pod's facts (``version``, from the config, skips asking the agent) and, in the
    same exec, an inspection with the inspector's arguments ``inspect`` (none when empty):
    what a restore reads first, when it can tell which paths it will ask for before it
    knows the pod.

    Raises SandboxCommandFailed when the pod cannot be read.
    """
    if inspect:
        argv = ["sh", "-c", FACTS_AND_INSPECT_SCRIPT, "sh", *split_dirs, command, DESCRIBE, *inspect]
    else:
        argv = ["sh", "-c", FACTS_SCRIPT, "sh", *split_dirs, command]
    result = target.exec(instance, argv)
    if result.code != 0:
        raise SandboxCommandFailed(
            f"reading the sandbox failed: {result.stderr.decode(errors='replace').strip()[-300:]}"
        )
    facts_text, nul, inspection = result.stdout.partition(b"\0")
    preread = None
    if inspect:
        if not nul:
            raise ProtocolError("reading the sandbox: the reply ends before its inspection")
        try:
            preread = PreRead(inspect, parse_inspection(inspection))
        except ProtocolError as exc:
            raise ProtocolError(f"reading the sandbox: {exc}") from None
    return _facts(target, instance, facts_text, user=user, command=command, version=version), preread


def _facts(
    target: Target, instance: Instance, reply: bytes, *, user: OwnerRef, command: str, version: str | None
) -> SandboxFacts:
    passwd, _, rest = reply.decode("utf-8", errors="surrogateescape").partition("--style--\n")
    style_text, _, package = rest.partition("--package--\n")
    users = UserTable.parse(passwd)
    style: Style = "split" if style_text.strip() == "split" else "flat"
    if version is not None:
        return SandboxFacts(instance.id, users, style, Version.parse(version), f"configured: {version}")
    installed = package_version(package)
    if installed is not None:
        return SandboxFacts(instance.id, users, style, Version.parse(installed), f"openclaw {installed}")
    try:
        ids = users.resolve(user)
    except LookupError as exc:  # the plan's owner check reports it, with the config line
        return SandboxFacts(instance.id, users, style, None, str(exc))
    cli = AgentCLI(target, instance, ids, users.home(user), command)
    try:
        text = cli.version()
    except AgentError as exc:
        return SandboxFacts(instance.id, users, style, None, str(exc))
    return SandboxFacts(instance.id, users, style, Version.parse(text), text)


def package_version(text: str) -> str | None:
    """The version in an OpenClaw package.json, or None when ``text`` is not one."""
    try:
        package = json.loads(text)
    except ValueError:
        return None
    if not isinstance(package, dict) or package.get("name") != "openclaw":
        return None
    version = package.get("version")
    return version if isinstance(version, str) and version else None
