"""Building and validating the ordered plan for one sandbox, before any sandbox is touched."""

from __future__ import annotations

import stat
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import structlog

from .agent import Capabilities, SandboxFacts, Version, capabilities
from .agent.state import AgentState, Preflight
from .config import SandboxConfig
from .conventions import derive_steps
from .entries import Entry
from .errors import ArchiveError, ConfigError, InputError
from .layout import Layout
from .persist import PersistSet, archive_wins, covered
from .persist import default_paths as default_persist
from .steps import REGISTRY, Origin, Step, StepContext

log = structlog.get_logger("clawguard.plan")


@dataclass(frozen=True)
class PlannedStep:
    step: Step
    entries: list[Entry]
    agent_states: list[AgentState] = field(default_factory=list)  # restored through the agent's CLI
    preflights: list[Preflight] = field(default_factory=list)  # the agent must accept before any write


@dataclass(frozen=True)
class Plan:
    sandbox: SandboxConfig
    steps: list[PlannedStep]
    persist: list[str] = field(default_factory=list)  # validated persisted paths and globs
    warnings: list[str] = field(default_factory=list)  # safe to restore, but the user should know
    # The same warnings as log events (name, fields), logged by whoever adopts the plan: a plan
    # is built often (per pod, per re-sync, by check), a warning should be said once.
    warning_events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    layout: Layout = field(kw_only=True)
    facts: SandboxFacts | None = field(default=None, kw_only=True)  # the pod it was made for; None: the config alone

    def log_warnings(self) -> None:
        for event, fields in self.warning_events:
            log.warning(event, sandbox=self.sandbox.name, **fields)

    def subset(self, steps: list[PlannedStep]) -> Plan:
        return replace(self, steps=steps)

    @property
    def entries(self) -> list[Entry]:
        return [entry for planned in self.steps for entry in planned.entries]

    @property
    def agent(self) -> Capabilities:
        return capabilities(self.version)

    @property
    def version(self) -> Version | None:
        if self.facts is not None:
            return self.facts.version
        pinned = self.sandbox.agent.pinned_version
        return Version.parse(pinned) if pinned else None


def build_plan(sandbox: SandboxConfig, facts: SandboxFacts | None = None) -> Plan:
    """Validate the whole plan and archive for one pod (``facts``), or from the config
    alone. Raises InputError; writes nothing."""
    archive = sandbox.archive
    if not archive.is_dir():
        raise _error_at(
            sandbox, f"{sandbox.key}.archive", f"{archive} is not a directory (or does not exist)", cls=ArchiveError
        )
    unprivileged = not _runs_as_root(sandbox)
    # A target that is never root can only keep the layout the agent owns whole (flat): with
    # no pod to read, that is the one to plan for; a pod that has the split one is refused below.
    layout = sandbox.layout.resolve(facts.style if facts else ("flat" if unprivileged else None))
    _check_layout(sandbox, layout)
    if unprivileged and layout.style == "split":
        seen = "the pod has NemoClaw's split layout" if facts is not None and facts.style == "split" else "split"
        raise _error_at(
            sandbox,
            f"{sandbox.key}.layout.style",
            f"{seen}: its .openclaw and openclaw.json are root's, and the {sandbox.target.get('kind')} target runs "
            "every command as the sandbox user, never as root; use an image with the flat layout (one .openclaw "
            "the sandbox user owns) and layout.style: flat or auto",
            f"{sandbox.key}.target",
        )
    steps = _explicit_steps(sandbox) if sandbox.plan is not None else derive_steps(sandbox, layout)
    pinned = sandbox.agent.pinned_version
    version = facts.version if facts is not None else (Version.parse(pinned) if pinned else None)
    ctx = StepContext(
        archive,
        layout,
        sandbox.user,
        capabilities(version),
        version,
        # Only an agent that can be asked: the pod's, known by its version.
        validate_config=sandbox.agent.validate_config and version is not None and facts is not None,
    )
    planned = [_planned(sandbox, step, ctx) for step in steps]
    # Paths and sizes first: a 300 MiB stray file is refused from its size, not read.
    _check_paths(sandbox, layout, planned)
    if unprivileged:
        _check_unprivileged(sandbox, planned, facts)
    if sandbox.persist is not None:
        persist = list(sandbox.persist)
    else:  # what this version keeps, but what the archive restores: the archive wins
        entries = [entry for item in planned for entry in item.entries]
        persist = archive_wins(default_persist(layout, ctx.agent if version is not None else None), entries)
    _check_persist(sandbox, layout, planned, persist)
    for item in planned:
        for entry in item.entries:
            if entry.kind == "file":
                try:
                    _ = entry.sha256  # read now: the plan is pinned to the content it validated
                except OSError as exc:
                    raise ArchiveError(f"cannot read {entry.source}: {exc.strerror}", file=entry.source) from None
    step_warnings = [w for item in planned for w in item.step.warnings(ctx)]
    secrets = _warn_readable_secrets(sandbox, planned)
    warnings = step_warnings + [message for message, _ in secrets]
    events = [("plan.warning", {"warning": w}) for w in step_warnings]
    events += [("archive.credentials_readable", fields) for _, fields in secrets]
    return Plan(sandbox, planned, list(persist), warnings, events, layout=layout, facts=facts)


def _error_at(
    sandbox: SandboxConfig,
    key: str,
    message: str,
    fallback: str | None = None,
    cls: type[InputError] = ConfigError,
) -> InputError:
    """An error at ``key`` of the config, on its line (or on ``fallback``'s when it was not written)."""
    return sandbox.source.error(key, message, fallback=fallback, cls=cls)


def _check_layout(sandbox: SandboxConfig, layout: Layout) -> None:
    """Every layout directory is under the root, or every conventional step would write outside it."""
    key = f"{sandbox.key}.layout"
    if layout.root == "/":
        raise _error_at(sandbox, f"{key}.root", "must be a directory below /, such as /sandbox")
    for name in ("config_dir", "data_dir", "workspace", "telegram_dir"):
        value = getattr(layout, name)
        if not _under(value, layout.root):
            unset = f"{key}.{name}" not in sandbox.source.lines
            hint = f" (its default; set {name} under the new root too)" if unset else ""
            raise _error_at(
                sandbox, f"{key}.{name}", f"{value} is outside the sandbox root {layout.root}{hint}", f"{key}.root"
            )


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _planned(sandbox: SandboxConfig, step: Step, ctx: StepContext) -> PlannedStep:
    """The step's entries and agent work. A config step that reads a bad archive file is
    reported at the config line that names the file, with the archive it was looked for in."""
    try:
        return PlannedStep(step, step.entries(ctx), step.agent_states(ctx), step.preflights(ctx))
    except ConfigError as exc:
        if exc.file is not None:
            raise
        key = exc.key or ""
        key = key if key.startswith("sandboxes.") else f"{sandbox.key}.{key}"
        raise _error_at(sandbox, key, exc.message, f"{sandbox.key}.layout") from None
    except ArchiveError as exc:
        if _from_archive(step):
            raise
        key = f"{step.origin.key}.source"  # the only parameter a step reads the archive through
        message = f"{exc.message} (archive: {exc.file})"
        raise ArchiveError(
            message, file=step.origin.file, key=key, line=sandbox.source.lines.get(key) or step.origin.line
        ) from None


def _explicit_steps(sandbox: SandboxConfig) -> list[Step]:
    config = sandbox.source
    steps = []
    for index, values in enumerate(sandbox.plan or []):
        key = f"{sandbox.key}.plan[{index}]"
        cls = REGISTRY[values["kind"]]
        steps.append(cls(values, Origin(key, str(config.path), config.lines.get(key))))
    return steps


def _from_archive(step: Step) -> bool:
    """Whether the step comes from the archive's layout rather than the config's plan."""
    return step.origin.key.startswith("archive:")


def _fail(sandbox: SandboxConfig, step: Step, message: str, param: str | None = None) -> InputError:
    """An error about ``step``; for a config step, at the key and line of ``param`` (the entry's
    provenance: the parameter that gave the path at fault)."""
    if _from_archive(step):
        return ArchiveError(message, file=step.origin.file, key=step.origin.key, line=step.origin.line)
    key = f"{step.origin.key}.{param}" if param else step.origin.key
    line = sandbox.source.lines.get(key) or step.origin.line
    return ConfigError(message, file=step.origin.file, key=key, line=line)


def _check_paths(sandbox: SandboxConfig, layout: Layout, planned: list[PlannedStep]) -> None:
    root = layout.root.rstrip("/") + "/"
    owners: dict[str, Step] = {}
    total = count = 0
    largest: tuple[int, Path | None] = (0, None)
    for item in planned:
        for entry in item.entries:
            if not entry.path.startswith(root):
                raise _fail(sandbox, item.step, f"{entry.path} is outside the sandbox root {layout.root}", entry.param)
            if (
                entry.kind == "symlink"
                and entry.link
                and entry.link.startswith("/")
                and not entry.link.startswith(root)
            ):
                raise _fail(
                    sandbox,
                    item.step,
                    f"symlink {entry.path} -> {entry.link} points outside {layout.root}",
                    entry.link_param,
                )
            if entry.path in owners:
                first = owners[entry.path]
                raise _fail(
                    sandbox,
                    item.step,
                    f"{entry.path} is also written by step {first.name!r} ({first.origin.key})",
                    entry.param,
                )
            owners[entry.path] = item.step
            count += 1
            if entry.source is not None:
                size = entry.source.stat().st_size
                total += size
                if size > largest[0]:
                    largest = (size, entry.source)
    _check_limits(sandbox, total, count, largest)


def _runs_as_root(sandbox: SandboxConfig) -> bool:
    from .targets import REGISTRY as TARGETS  # the target kinds register on import

    kind = TARGETS.get(str(sandbox.target.get("kind")))
    return kind is None or kind.runs_as_root


def _check_unprivileged(sandbox: SandboxConfig, planned: list[PlannedStep], facts: SandboxFacts | None) -> None:
    """Every entry can be made by the sandbox user itself: the target runs each command as
    that user, never as root (OpenShell 0.1.x's gateway API). An owner it cannot give is
    refused here, before anything is written, naming the step and the path."""
    kind = sandbox.target.get("kind")
    user = str(sandbox.user)
    own_uid: int | None = None
    if facts is not None:
        try:
            own_uid = facts.users.resolve(sandbox.user).uid
        except LookupError:
            own_uid = None
    for item in planned:
        for entry in item.entries:
            owner = entry.owner
            if owner is None or entry.kind == "absent":
                continue
            name = str(owner).partition(":")[0]
            if name == user.partition(":")[0]:
                continue
            if facts is not None and own_uid is not None:
                try:
                    if facts.users.resolve(owner).uid == own_uid:
                        continue
                except LookupError:
                    pass
            elif name.isdigit() and int(name) != 0:
                continue  # a uid: told apart from the sandbox user's once the pod is read
            raise _fail(
                sandbox,
                item.step,
                f"{entry.path} must be owned by {owner}, but the {kind} target runs every command as the sandbox "
                f"user ({user}), never as root, so it cannot create or chown it"
                + ("" if _from_archive(item.step) else f"; give {user} as its owner, or leave the owner out"),
                entry.param,
            )


def _check_limits(sandbox: SandboxConfig, total: int, count: int, largest: tuple[int, Path | None]) -> None:
    limits, key, archive = sandbox.limits, f"{sandbox.key}.limits", sandbox.archive
    if total > limits.max_archive_bytes:
        size, path = largest
        biggest = f"; the largest file is {path} ({size} bytes)" if path is not None else ""
        raise _error_at(
            sandbox,
            f"{key}.max_archive_bytes",
            f"the plan copies {total} bytes from {archive}, over limits.max_archive_bytes "
            f"({limits.max_archive_bytes}){biggest}",
            cls=ArchiveError,
        )
    if count > limits.max_files:
        raise _error_at(
            sandbox,
            f"{key}.max_files",
            f"the plan from {archive} has {count} paths, over limits.max_files ({limits.max_files})",
            cls=ArchiveError,
        )


def _warn_readable_secrets(sandbox: SandboxConfig, planned: list[PlannedStep]) -> list[tuple[str, dict[str, Any]]]:
    """Files the plan installs as credentials but that other users on the host can read,
    as (message, log fields). A warning, not an error: a git checkout gives 0644, and the
    sandbox copy gets its declared mode whatever the host file's mode is."""
    warnings = []
    for item in planned:
        for entry in item.entries:
            if entry.source is None or entry.mode is None or not entry.private:
                continue
            if not _readable_by_others(sandbox.archive, entry.source):
                continue
            mode = stat.S_IMODE(entry.source.stat().st_mode)
            fix = f"chmod 600 {entry.source}"
            tree = item.step.values.get("source") if item.step.kind == "tree" else None
            if tree:
                fix += f" (or all of them: chmod -R go-rwx {sandbox.archive / tree})"
            why = (
                f"{entry.source} is readable by other users on the host (mode {mode:04o}); "
                f"the sandbox gets it as {entry.mode:04o}, but the archive copy is exposed: {fix}"
            )
            fields = {
                "file": str(entry.source),
                "mode": f"{mode:04o}",
                "reason": "readable by other users on the host",
                "fix": fix,
            }
            warnings.append((why, fields))
    return warnings


def _readable_by_others(archive: Path, path: Path) -> bool:
    """Group or others may read the file, and search every directory down to it from the archive."""
    dirs = [parent for parent in path.parents if parent == archive or archive in parent.parents]
    mode = path.stat().st_mode
    return any(
        mode & read and all(folder.stat().st_mode & search for folder in dirs)
        for read, search in ((stat.S_IRGRP, stat.S_IXGRP), (stat.S_IROTH, stat.S_IXOTH))
    )


def _check_persist(sandbox: SandboxConfig, layout: Layout, planned: list[PlannedStep], persist: list[str]) -> None:
    """Persisted paths belong to the agent: under the root, and never written by a step
    (the default set leaves out, with ``!`` exclusions, what the archive writes)."""
    config = sandbox.source
    root = layout.root.rstrip("/") + "/"
    wanted = PersistSet.of(persist)
    for index, pattern in enumerate(persist):
        key = f"{sandbox.key}.persist[{index}]"

        def fail(message: str, key: str = key) -> ConfigError:
            return ConfigError(message, file=config.path, key=key, line=config.lines.get(key))

        if pattern.startswith("!"):
            if pattern.startswith("!/") and not pattern[1:].startswith(root):
                raise fail(f"{pattern[1:]} is outside the sandbox root {layout.root}")
            continue
        if not pattern.startswith(root):
            raise fail(f"{pattern} is outside the sandbox root {layout.root}")
        for item in planned:
            for entry in item.entries:
                if covered(entry.path, pattern) and not wanted.excluded(entry.path):
                    raise fail(
                        f"{pattern} would persist {entry.path}, which step {item.step.name!r} restores from the "
                        "archive; a path comes from one place"
                    )
                if entry.kind == "dir" and entry.exact and covered(pattern, entry.path):
                    raise fail(
                        f"{pattern} is inside {entry.path}, which step {item.step.name!r} keeps exact "
                        "(it would delete the persisted files)"
                    )
