from __future__ import annotations

from ..archive import walk_tree
from ..entries import Entry
from ..schema import ArchivePath, Bool, Field, Mode, Owner, SandboxPath, Str
from .base import Step, StepContext, join


class TreeStep(Step):
    kind = "tree"
    summary = "Copy an archive directory to the sandbox with the exact same tree."
    params = {
        "name": Field(Str(), "Label shown in progress and reports.", example="skills/proxmox"),
        "source": Field(
            ArchivePath(), "The directory, relative to the archive.", required=True, example="skills/proxmox"
        ),
        "dest": Field(
            SandboxPath(),
            "Where it goes in the sandbox.",
            required=True,
            example="/sandbox/.openclaw-data/skills/proxmox",
        ),
        "owner": Field(Owner(), "Owner of everything; defaults to the sandbox user.", example="sandbox"),
        "exact": Field(Bool(), "Remove what is in dest but not in the archive.", True),
        "file_mode": Field(
            Mode(), "Mode of every file; default 0755 if executable on the host, else 0644.", example='"0600"'
        ),
        "dir_mode": Field(Mode(), "Mode of every directory.", 0o755),
        "secret": Field(
            Bool(),
            "The files are credentials: their contents are masked in every log line. Default: when "
            "file_mode lets nobody but the owner read them.",
            example="true",
        ),
    }

    def default_name(self) -> str:
        return str(self.values["source"])

    def entries(self, ctx: StepContext) -> list[Entry]:
        owner = self.owner(ctx)
        file_mode = self.values["file_mode"]
        result = []
        for item in walk_tree(ctx.archive, self.values["source"], self.origin.key):
            path = join(self.values["dest"], item.rel) if item.rel else self.values["dest"]
            if item.kind == "dir":
                exact = self.values["exact"] and not item.rel
                result.append(Entry(path, "dir", self.values["dir_mode"], owner, exact=exact, param="dest"))
            elif item.kind == "symlink":
                result.append(Entry(path, "symlink", owner=owner, link=item.link, param="dest"))
            else:
                mode = file_mode if file_mode is not None else (0o755 if item.mode & 0o100 else 0o644)
                secret = self.values["secret"]
                result.append(Entry(path, "file", mode, owner, source=item.path, secret=secret, param="dest"))
        return result
