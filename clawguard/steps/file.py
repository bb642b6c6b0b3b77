from __future__ import annotations

from ..archive import source_file
from ..entries import Entry
from ..schema import ArchivePath, Field, ListOf, Mode, Owner, SandboxPath, Str
from .base import Step, StepContext


class FileStep(Step):
    kind = "file"
    summary = "Copy one archive file to an exact path, with mode, owner and optional symlinks to it."
    params = {
        "name": Field(Str(), "Label shown in progress and reports.", example="proxmox.sh"),
        "source": Field(
            ArchivePath(), "The file, relative to the archive.", required=True, example="scripts/proxmox.sh"
        ),
        "dest": Field(
            SandboxPath(), "Where it goes in the sandbox.", required=True, example="/sandbox/.openclaw-data/proxmox.sh"
        ),
        "mode": Field(Mode(), "File mode.", 0o644),
        "owner": Field(Owner(), "Owner; defaults to the sandbox user.", example="sandbox"),
        "links": Field(
            ListOf(SandboxPath()),
            "Symlinks to create that point at dest.",
            [],
            example="[/sandbox/.openclaw/proxmox.sh]",
        ),
    }

    def default_name(self) -> str:
        return str(self.values["source"])

    def entries(self, ctx: StepContext) -> list[Entry]:
        path = source_file(ctx.archive, self.values["source"], self.origin.key)
        dest = self.values["dest"]
        result = [Entry(dest, "file", self.values["mode"], self.owner(ctx), source=path, param="dest")]
        result += [
            Entry(link, "symlink", link=dest, param=f"links[{index}]", link_param="dest")
            for index, link in enumerate(self.values["links"])
        ]
        return result
