from __future__ import annotations

from ..entries import Entry
from ..schema import Bool, Field, Mode, Owner, SandboxPath, Str
from .base import Step, StepContext


class ChownStep(Step):
    """The telegram directory's fix: the cluster creates it root-owned (seed 000, #4)."""

    kind = "chown"
    summary = "Give a directory (and, by default, everything in it) to an owner, creating it if needed."
    params = {
        "name": Field(Str(), "Label shown in progress and reports.", example="telegram"),
        "path": Field(SandboxPath(), "The directory.", required=True, example="/sandbox/.openclaw-data/telegram"),
        "owner": Field(Owner(), "Owner; defaults to the sandbox user.", example="sandbox"),
        "recursive": Field(Bool(), "Also everything below it (chown -R).", True),
        "create": Field(Bool(), "Create the directory when it is missing.", True),
        # A directory's mode: the owner must keep x, or the agent is locked out of it.
        "mode": Field(Mode(), "Directory mode; unchanged when not set.", example='"0755"'),
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
                param="path",
            )
        ]
