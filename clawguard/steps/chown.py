from __future__ import annotations

from ..entries import Entry
from ..schema import Bool, Field, Mode, Owner, SandboxPath, Str
from .base import Step, StepContext


class ChownStep(Step):
    """The telegram directory's fix: the cluster creates it root-owned (seed 000, #4)."""

    kind = "chown"
    summary = "Give a directory (and, by default, everything in it) to an owner, creating it if needed."
    params = {
        "name": Field(Str(), "Label shown in progress and reports."),
        "path": Field(SandboxPath(), "The directory.", required=True),
        "owner": Field(Owner(), "Owner; defaults to the sandbox user."),
        "recursive": Field(Bool(), "Also everything below it (chown -R).", True),
        "create": Field(Bool(), "Create the directory when it is missing.", True),
        "mode": Field(Mode(), "Directory mode; unchanged when not set."),
    }

    def default_name(self) -> str:
        return str(self.values["path"])

    def entries(self, ctx: StepContext) -> list[Entry]:
        return [
            Entry(
                self.values["path"],
                "dir",
                self.values["mode"],
                self.owner(ctx),
                recursive_owner=self.values["recursive"],
                if_present=not self.values["create"],
            )
        ]
