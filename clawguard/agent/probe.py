"""What a pod is: its users, NemoClaw's layout generation and the agent's version.

Learned once per pod (a container's image cannot change under it), in two reads: one
root exec for the user table and the layout, then ``openclaw --version`` as the
sandbox user. Nothing is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..entries import OwnerRef
from ..sandboxfs import PASSWD_SCRIPT, SandboxCommandFailed, UserTable
from ..targets import Instance, Target
from .cli import AgentCLI, AgentError
from .versions import Capabilities, Version, capabilities

Style = Literal["split", "flat"]

# Arguments: the config directory and the data directory of NemoClaw's split layout.
# Split when ~/.openclaw holds NemoClaw's symlinks or .openclaw-data exists.
_STYLE_SCRIPT = r"""
for name in agents skills workspace; do
  if [ -L "$1/$name" ]; then echo split; exit 0; fi
done
if [ -d "$2" ]; then echo split; else echo flat; fi
"""


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
) -> SandboxFacts:
    """Read the pod's facts. ``version`` (from the config) skips asking the agent.

    Raises SandboxCommandFailed when the pod cannot be read.
    """
    script = PASSWD_SCRIPT + "; echo '--style--'\n" + _STYLE_SCRIPT
    result = target.exec(instance, ["sh", "-c", script, "sh", *split_dirs])
    if result.code != 0:
        raise SandboxCommandFailed(
            f"reading the sandbox failed: {result.stderr.decode(errors='replace').strip()[-300:]}"
        )
    passwd, _, style_text = result.stdout.decode("utf-8", errors="surrogateescape").partition("--style--\n")
    users = UserTable.parse(passwd)
    style: Style = "split" if style_text.strip() == "split" else "flat"
    if version is not None:
        return SandboxFacts(instance.id, users, style, Version.parse(version), f"configured: {version}")
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
