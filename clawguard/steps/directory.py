from __future__ import annotations

from ..entries import Entry
from ..schema import Field, Mode, Owner, SandboxPath, Str
from .base import Step, StepContext


class DirectoryStep(Step):
    kind = "directory"
    summary = "Make sure a directory exists with a mode and owner."
    params = {
        "name": Field(Str(), "Label shown in progress and reports.", example="memory"),
        "path": Field(
            SandboxPath(), "The directory.", required=True, example="/sandbox/.openclaw-data/workspace/memory"
        ),
        "mode": Field(Mode(), "Directory mode.", 0o755),
        "owner": Field(Owner(), "Owner; defaults to the sandbox user.", example="sandbox"),
    }

    def default_name(self) -> str:
        return str(self.values["path"])

    def entries(self, ctx: StepContext) -> list[Entry]:
        return [Entry(self.values["path"], "dir", self.values["mode"], self.owner(ctx), param="path")]
