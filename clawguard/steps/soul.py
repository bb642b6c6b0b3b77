from __future__ import annotations

from ..archive import source_file
from ..entries import Entry
from ..errors import ArchiveError
from ..schema import ArchivePath, Field, SandboxPath, Str
from .base import Step, StepContext, join


class SoulStep(Step):
    """SOUL.md goes into the agent workspace; OpenClaw reads it when a session starts."""

    kind = "soul"
    summary = "Install SOUL.md into the agent workspace."
    restarts_gateway = True  # a running session keeps the SOUL.md it started with (seed 000)
    params = {
        "name": Field(Str(), "Label shown in progress and reports.", example="SOUL.md"),
        "source": Field(ArchivePath(), "The file, relative to the archive.", "SOUL.md"),
        "dest": Field(
            SandboxPath(), "Defaults to <layout.workspace>/SOUL.md.", example="/sandbox/.openclaw/workspace-bob/SOUL.md"
        ),
    }

    def default_name(self) -> str:
        return "SOUL.md"

    def entries(self, ctx: StepContext) -> list[Entry]:
        rel = self.values["source"]
        path = source_file(ctx.archive, rel, self.origin.key)
        try:
            path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ArchiveError(f"{rel}: not UTF-8 text ({exc.reason})", file=ctx.archive, key=self.origin.key) from None
        dest = self.values["dest"] or join(ctx.layout.workspace, "SOUL.md")
        return [Entry(dest, "file", 0o644, ctx.user, source=path, param="dest" if self.values["dest"] else None)]
