"""Building and validating the ordered plan for one sandbox, before any sandbox is touched."""

from __future__ import annotations

from dataclasses import dataclass, field

from .config import SandboxConfig
from .conventions import derive_steps
from .entries import Entry
from .errors import ArchiveError, ConfigError, InputError
from .persist import covered
from .steps import REGISTRY, Origin, Step, StepContext


@dataclass(frozen=True)
class PlannedStep:
    step: Step
    entries: list[Entry]


@dataclass(frozen=True)
class Plan:
    sandbox: SandboxConfig
    steps: list[PlannedStep]
    persist: list[str] = field(default_factory=list)  # validated persisted paths and globs

    def subset(self, steps: list[PlannedStep]) -> Plan:
        return Plan(self.sandbox, steps, self.persist)

    @property
    def entries(self) -> list[Entry]:
        return [entry for planned in self.steps for entry in planned.entries]


def build_plan(sandbox: SandboxConfig) -> Plan:
    """Validate the whole plan and archive. Raises InputError; writes nothing."""
    archive = sandbox.archive
    if not archive.is_dir():
        raise ArchiveError(
            "the restore archive is not a directory (or does not exist)", file=archive, key=f"{sandbox.key}.archive"
        )
    steps = _explicit_steps(sandbox) if sandbox.plan is not None else derive_steps(sandbox)
    ctx = StepContext(archive, sandbox.layout, sandbox.user)
    planned = [PlannedStep(step, step.entries(ctx)) for step in steps]
    for item in planned:
        for entry in item.entries:
            if entry.kind == "file":
                try:
                    _ = entry.sha256  # read now: the plan is pinned to the content it validated
                except OSError as exc:
                    raise ArchiveError(f"cannot read {entry.source}: {exc.strerror}", file=entry.source) from None
    _check_paths(sandbox, planned)
    _check_persist(sandbox, planned)
    return Plan(sandbox, planned, list(sandbox.persist))


def _explicit_steps(sandbox: SandboxConfig) -> list[Step]:
    config = sandbox.config
    steps = []
    for index, values in enumerate(sandbox.plan or []):
        key = f"{sandbox.key}.plan[{index}]"
        cls = REGISTRY[values["kind"]]
        steps.append(cls(values, Origin(key, str(config.path), config.lines.get(key))))
    return steps


def _fail(step: Step, message: str) -> InputError:
    cls = ArchiveError if step.origin.key.startswith("archive:") else ConfigError
    return cls(message, file=step.origin.file, key=step.origin.key, line=step.origin.line)


def _check_paths(sandbox: SandboxConfig, planned: list[PlannedStep]) -> None:
    root = sandbox.layout.root.rstrip("/") + "/"
    owners: dict[str, Step] = {}
    total = count = 0
    for item in planned:
        for entry in item.entries:
            if not entry.path.startswith(root):
                raise _fail(item.step, f"{entry.path} is outside the sandbox root {sandbox.layout.root}")
            if (
                entry.kind == "symlink"
                and entry.link
                and entry.link.startswith("/")
                and not entry.link.startswith(root)
            ):
                raise _fail(item.step, f"symlink {entry.path} -> {entry.link} points outside {sandbox.layout.root}")
            if entry.path in owners:
                first = owners[entry.path]
                raise _fail(item.step, f"{entry.path} is also written by step {first.name!r} ({first.origin.key})")
            owners[entry.path] = item.step
            count += 1
            if entry.source is not None:
                total += entry.source.stat().st_size
    limits = sandbox.limits
    if total > limits.max_archive_bytes:
        raise ArchiveError(
            f"the plan copies {total} bytes, over limits.max_archive_bytes ({limits.max_archive_bytes})",
            file=sandbox.archive,
        )
    if count > limits.max_files:
        raise ArchiveError(
            f"the plan has {count} paths, over limits.max_files ({limits.max_files})", file=sandbox.archive
        )


def _check_persist(sandbox: SandboxConfig, planned: list[PlannedStep]) -> None:
    """Persisted paths belong to the agent: under the root, and never written by a step."""
    config = sandbox.config
    root = sandbox.layout.root.rstrip("/") + "/"
    for index, pattern in enumerate(sandbox.persist):
        key = f"{sandbox.key}.persist[{index}]"

        def fail(message: str, key: str = key) -> ConfigError:
            return ConfigError(message, file=config.path, key=key, line=config.lines.get(key))

        if not pattern.startswith(root):
            raise fail(f"{pattern} is outside the sandbox root {sandbox.layout.root}")
        for item in planned:
            for entry in item.entries:
                if covered(entry.path, pattern):
                    raise fail(
                        f"{pattern} would persist {entry.path}, which step {item.step.name!r} restores from the "
                        "archive; a path comes from one place"
                    )
                if entry.kind == "dir" and entry.exact and covered(pattern, entry.path):
                    raise fail(
                        f"{pattern} is inside {entry.path}, which step {item.step.name!r} keeps exact "
                        "(it would delete the persisted files)"
                    )
