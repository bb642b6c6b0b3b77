from __future__ import annotations

import hashlib
import json

from ..archive import source_file
from ..entries import Entry
from ..errors import ArchiveError
from ..schema import ArchivePath, Field, Str
from .base import Step, StepContext, join


class ConfigStep(Step):
    """openclaw.json is root-owned and read-only to the agent (Landlock read_only).

    Some NemoClaw images pin its hash in ``.config-hash`` (``sha256sum`` format) and
    the entrypoint checks it, so when that file exists we rewrite it to match.
    """

    kind = "config"
    summary = "Install openclaw.json root-owned 0444, keeping .config-hash consistent if present."
    params = {
        "name": Field(Str(), "Label shown in progress and reports."),
        "source": Field(ArchivePath(), "The file, relative to the archive.", "openclaw.json"),
    }

    def default_name(self) -> str:
        return "openclaw.json"

    def entries(self, ctx: StepContext) -> list[Entry]:
        rel = self.values["source"]
        path = source_file(ctx.archive, rel, self.origin.key)
        data = path.read_bytes()
        try:
            json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ArchiveError(f"{rel}: not valid JSON ({exc})", file=ctx.archive, key=self.origin.key) from None
        dest = join(ctx.layout.config_dir, "openclaw.json")
        digest = hashlib.sha256(data).hexdigest()
        return [
            Entry(dest, "file", 0o444, "root", source=path),
            Entry(
                join(ctx.layout.config_dir, ".config-hash"),
                "file",
                0o444,
                "root",
                content=f"{digest}  {dest}\n".encode(),
                if_present=True,
            ),
        ]
