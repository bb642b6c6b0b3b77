from __future__ import annotations

from ..entries import Entry
from ..schema import Field, Owner, SandboxPath, Str
from .base import Step, StepContext


class SymlinkStep(Step):
    kind = "symlink"
    summary = "Make sure a symlink exists and points where it should."
    params = {
        "name": Field(Str(), "Label shown in progress and reports.", example="proxmox.sh link"),
        "path": Field(SandboxPath(), "The symlink itself.", required=True, example="/sandbox/.openclaw/proxmox.sh"),
        "target": Field(
            SandboxPath(),
            "What it points to (an absolute sandbox path).",
            required=True,
            example="/sandbox/.openclaw-data/proxmox.sh",
        ),
        "owner": Field(Owner(), "Owner of the link itself; unchecked when not set.", example="sandbox"),
    }

    def default_name(self) -> str:
        return str(self.values["path"])

    def entries(self, ctx: StepContext) -> list[Entry]:
        values = self.values
        return [
            Entry(
                values["path"],
                "symlink",
                owner=values["owner"],
                link=values["target"],
                param="path",
                link_param="target",
            )
        ]
