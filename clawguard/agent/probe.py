"""What a pod is: its users, NemoClaw's layout generation and the agent's version.

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
from dataclasses import dataclass
from typing import Literal

from ..entries import OwnerRef
from ..sandboxfs import PASSWD_SCRIPT, SandboxCommandFailed, UserTable
from ..targets import Instance, Target
from .cli import AgentCLI, AgentError
from .versions import Capabilities, Version, capabilities

Style = Literal["split", "flat"]

# Arguments: the config directory and the data directory of NemoClaw's split layout, and
# the agent's command. Prints the style (split when ~/.openclaw holds NemoClaw's symlinks
# or .openclaw-data exists), then the package.json nearest above what the command resolves
# to (up to three levels: npm links a package's bin file, at its root or in a subdirectory).
_STYLE_AND_PACKAGE_SCRIPT = r"""
style=flat
for name in agents skills workspace; do
  if [ -L "$1/$name" ]; then style=split; fi
done
if [ -d "$2" ]; then style=split; fi
echo "$style"
echo '--package--'
c=$(command -v "$3") || exit 0
t=$(readlink -f "$c") || exit 0
d=${t%/*}
for level in 1 2 3; do
  if [ -f "$d/package.json" ]; then exec cat "$d/package.json"; fi
  d=${d%/*}
done
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
    script = PASSWD_SCRIPT + "; echo '--style--'\n" + _STYLE_AND_PACKAGE_SCRIPT
    result = target.exec(instance, ["sh", "-c", script, "sh", *split_dirs, command])
    if result.code != 0:
        raise SandboxCommandFailed(
            f"reading the sandbox failed: {result.stderr.decode(errors='replace').strip()[-300:]}"
        )
    passwd, _, rest = result.stdout.decode("utf-8", errors="surrogateescape").partition("--style--\n")
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
