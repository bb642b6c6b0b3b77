"""The config file: loading, the schema (in one place), and the typed result."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import _yaml, redact
from .agent.settings import AGENT_SCHEMA, AgentSettings
from .entries import OwnerRef
from .errors import ConfigError, InputError
from .gateway import GATEWAY_SCHEMA
from .hooks import HOOKS_SCHEMA, SANDBOX_HOOKS_SCHEMA
from .hooks import merged as merged_hooks
from .layout import LAYOUT_SCHEMA, LayoutSettings
from .schema import Bool, Context, Field, HostPath, Int, ListOf, MapOf, Owner, Record, SandboxPath, Str, Tagged
from .steps import REGISTRY as STEP_KINDS
from .targets import REGISTRY as TARGET_KINDS
from .targets import make_target

# Kubernetes pod names (DNS-1123 labels): also keeps shell and path metacharacters out.
SANDBOX_NAME = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
# HOST:PORT for daemon.metrics.listen: a name or IPv4 address, or an IPv6 one in brackets.
METRICS_LISTEN = r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}"

LIMITS_SCHEMA = Record(
    {
        "max_archive_bytes": Field(Int(minimum=1), "Refuse archives larger than this.", 256 * 1024 * 1024),
        "max_files": Field(Int(minimum=1), "Refuse plans with more paths than this.", 20_000),
        "max_persist_bytes": Field(
            Int(minimum=1), "Refuse a capture of persisted paths larger than this (the previous one stays).", 64 << 20
        ),
    }
)


def _step_schema() -> Tagged:
    return Tagged("kind", {kind: Record(cls.params) for kind, cls in sorted(STEP_KINDS.items())})


def _target_schema() -> Tagged:
    return Tagged("kind", {kind: Record(cls.params) for kind, cls in sorted(TARGET_KINDS.items())})


def sandbox_schema() -> Record:
    return Record(
        {
            "target": Field(_target_schema(), "Where the sandbox lives.", required=True, example="{kind: k3s}"),
            "archive": Field(HostPath(), "The host-side restore archive.", required=True, example="~/sandbox-restore"),
            "user": Field(Owner(), "The sandbox user, resolved from the sandbox's /etc/passwd.", "sandbox"),
            "plan": Field(
                ListOf(_step_schema()),
                "Explicit steps; when absent, derived from the archive layout.",
                example="[{kind: soul}, {kind: chown, path: /sandbox/.openclaw-data/telegram}]",
            ),
            "persist": Field(
                ListOf(SandboxPath()),
                "Paths the agent writes, captured from the live sandbox and restored into the next pod "
                "(globs allowed; every *.sqlite in them is copied with SQLite's online backup). Default, by "
                "the agent's version: all it keeps (identity, paired devices, sessions, cron jobs, the "
                "credentials it wrote, the workspace, its databases) less caches, logs and what the archive "
                "restores (docs/compatibility.md); with the version unknown, the telegram offset files, "
                "<workspace>/MEMORY.md and <workspace>/memory. An empty list turns persistence off.",
                example="[/sandbox/.openclaw/workspace/MEMORY.md, /sandbox/.openclaw/state/openclaw.sqlite]",
            ),
            "layout": Field(LAYOUT_SCHEMA, "Where things live inside the sandbox.", {}),
            "agent": Field(AGENT_SCHEMA, "The OpenClaw agent in the sandbox and its own CLI.", {}),
            "limits": Field(LIMITS_SCHEMA, "Sanity limits on the archive.", {}),
            "gateway": Field(GATEWAY_SCHEMA, "Starting and health-checking the OpenClaw gateway.", {}),
            "hooks": Field(
                SANDBOX_HOOKS_SCHEMA, "Outcome hooks for this sandbox; unset ones use the global hooks.", {}
            ),
        }
    )


DAEMON_SCHEMA = Record(
    {
        "poll_interval": Field(
            Int(minimum=1, maximum=3600), "Seconds between safety-net polls (events come first).", 30
        ),
        "health_interval": Field(Int(minimum=5, maximum=86400), "Seconds between gateway health checks.", 60),
        "backoff_max": Field(
            Int(minimum=1, maximum=3600), "Longest wait between retries when a sandbox is unreachable.", 60
        ),
        "verify_interval": Field(
            Int(minimum=5, maximum=86400), "Seconds between drift checks of the live sandbox (drift is repaired).", 300
        ),
        "persist_interval": Field(
            Int(minimum=1, maximum=86400), "Seconds between captures of each sandbox's persisted paths.", 60
        ),
        "persist_keep_within": Field(
            Int(minimum=0, maximum=30 * 86400),
            "Keep every capture generation taken within this many seconds (borg's --keep-within). Captures are "
            "kept by age: this, then persist_keep_hourly and persist_keep_daily (docs/daemon.md).",
            3600,
        ),
        "persist_keep_hourly": Field(
            Int(minimum=0, maximum=24 * 366),
            "Then keep the newest generation of each of the last this many clock hours (UTC).",
            48,
        ),
        "persist_keep_daily": Field(
            Int(minimum=0, maximum=3660),
            "Then keep the newest generation of each of the last this many days (UTC).",
            14,
        ),
        "persist_keep": Field(
            Int(minimum=1, maximum=1000),
            "Also keep the newest this many generations, whatever their age (borg's --keep-last; before the "
            "age rules, the only rule). A capture much smaller than the newest good one never displaces a good "
            "one under any of these rules.",
            5,
        ),
        "max_parallel": Field(
            Int(minimum=1, maximum=64, word="auto", type_name='an integer or "auto"'),
            "Restores running at once across sandboxes (after a cluster restart, all need one); a sandbox "
            "waiting for its gateway to become healthy does not count. auto: one per CPU the daemon may use, "
            "at least 2: a restore keeps about one core busy (docs/performance.md), so more at once only share "
            "the same cores.",
            "auto",
        ),
        "live_resync": Field(
            Bool(), "Watch each archive and re-apply the steps a changed file feeds, to the live sandbox.", True
        ),
        "metrics": Field(
            Record(
                {
                    "listen": Field(
                        Str(pattern=METRICS_LISTEN, hint="use HOST:PORT, e.g. 127.0.0.1:9464"),
                        "Serve Prometheus metrics on this HOST:PORT, bound to that address only (docs/metrics.md). "
                        "Unset: no endpoint.",
                        example='"127.0.0.1:9464"',
                    ),
                }
            ),
            "The optional Prometheus metrics endpoint.",
            {},
        ),
    }
)


def config_schema() -> Record:
    return Record(
        {
            "version": Field(
                Int(minimum=1, maximum=1), "Config format version; must be 1.", required=True, example="1"
            ),
            "daemon": Field(DAEMON_SCHEMA, "The always-on loop (clawguard run).", {}),
            "hooks": Field(HOOKS_SCHEMA, "Outcome hooks for every sandbox.", {}),
            "sandboxes": Field(
                MapOf(Str(pattern=SANDBOX_NAME, hint="use a sandbox name: a-z, 0-9 and '-'"), sandbox_schema()),
                "One entry per sandbox, keyed by its name.",
                required=True,
                example="{my-assistant: {target: {kind: k3s}, archive: ~/sandbox-restore}}",
            ),
        }
    )


@dataclass(frozen=True)
class Limits:
    max_archive_bytes: int
    max_files: int
    max_persist_bytes: int


@dataclass(frozen=True)
class DaemonSettings:
    """``daemon:`` as validated: every default is DAEMON_SCHEMA's, stated there only."""

    poll_interval: int
    health_interval: int
    backoff_max: int
    verify_interval: int
    persist_interval: int
    persist_keep_within: int
    persist_keep_hourly: int
    persist_keep_daily: int
    persist_keep: int
    max_parallel: int | str
    live_resync: bool
    metrics: Mapping[str, Any]

    @property
    def max_parallel_resolved(self) -> int:
        """``max_parallel`` as a number: ``auto`` is one restore per usable CPU, at least 2."""
        if isinstance(self.max_parallel, int):
            return self.max_parallel
        return max(2, len(os.sched_getaffinity(0)))

    @classmethod
    def defaults(cls) -> DaemonSettings:
        """Every default, from DAEMON_SCHEMA (a config without ``daemon:``)."""
        return cls(**{name: spec.default for name, spec in DAEMON_SCHEMA.fields.items()})


@dataclass(frozen=True)
class Provenance:
    """Where a config was read from and the line of each key: what an input error names.
    Carried by every sandbox's config, so that whatever checks it can point at the line
    without a way back to the whole config."""

    path: Path
    lines: Mapping[str, int]

    def line(self, key: str, fallback: str | None = None) -> int | None:
        return self.lines.get(key) or (self.lines.get(fallback) if fallback else None)

    def error(
        self, key: str, message: str, *, fallback: str | None = None, cls: type[InputError] = ConfigError
    ) -> InputError:
        """An error at ``key``, on its line (or on ``fallback``'s when it was not written)."""
        return cls(message, file=self.path, key=key, line=self.line(key, fallback))


@dataclass(frozen=True)
class SandboxConfig:
    name: str
    target: Mapping[str, Any]
    archive: Path
    user: OwnerRef
    plan: list[Mapping[str, Any]] | None
    persist: list[str] | None  # None: chosen per pod, from the agent's version
    layout: LayoutSettings
    agent: AgentSettings
    limits: Limits
    gateway: Mapping[str, Any]
    hooks: Mapping[str, Any]
    source: Provenance

    @property
    def key(self) -> str:
        return f"sandboxes.{self.name}"


@dataclass(frozen=True)
class Config:
    path: Path
    sandboxes: dict[str, SandboxConfig]
    lines: dict[str, int]
    daemon: DaemonSettings

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(message, file=self.path, key=key, line=self.lines.get(key))

    def select(self, name: str | None) -> list[SandboxConfig]:
        if name is None:
            return list(self.sandboxes.values())
        if name not in self.sandboxes:
            known = ", ".join(self.sandboxes) or "none"
            raise ConfigError(f"no sandbox named {name!r} (configured: {known})", file=self.path)
        return [self.sandboxes[name]]


def default_path() -> Path:
    if env := os.environ.get("CLAWGUARD_CONFIG"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "clawguard" / "config.yaml"


def load_config(path: Path | str | None = None) -> Config:
    """Read and validate a config file. Raises ConfigError naming file, key and line."""
    file = Path(path).expanduser() if path is not None else default_path()
    document = _yaml.load(file)
    return _build(document, file)


def parse_config(text: str, path: Path | str = "<string>") -> Config:
    file = Path(path)
    return _build(_yaml.loads(text, file), file)


def _strings(node: _yaml.Located, key: str = "") -> Iterator[tuple[str, Any]]:
    """Every scalar of the document with the name of the key it sits under."""
    if isinstance(node.value, dict):
        for name, child in node.value.items():
            yield from _strings(child, str(name))
    elif isinstance(node.value, list):
        for child in node.value:
            yield from _strings(child, key)
    else:
        yield key, node.value


def _build(document: _yaml.Located, file: Path) -> Config:
    # Before validation, so that an error message quoting a value is masked too.
    redact.remember_config_values(_strings(document))
    ctx = Context(file)
    data = config_schema().validate(document, "", ctx)
    sandboxes: dict[str, SandboxConfig] = {}
    config = Config(file, sandboxes, ctx.lines, DaemonSettings(**data["daemon"]))
    source = Provenance(file, ctx.lines)
    for name, raw in data["sandboxes"].items():
        sandboxes[name] = SandboxConfig(
            name=name,
            target=raw["target"],
            archive=raw["archive"],
            user=raw["user"],
            plan=raw["plan"],
            persist=raw["persist"],
            layout=LayoutSettings(dict(raw["layout"])),
            agent=AgentSettings.from_config(dict(raw["agent"])),
            limits=Limits(**raw["limits"]),
            gateway=raw["gateway"],
            hooks=merged_hooks(data["hooks"], raw["hooks"]),
            source=source,
        )
    if not sandboxes:
        raise ConfigError("no sandboxes configured", file=file, key="sandboxes", line=ctx.lines.get("sandboxes"))
    _refuse_shared_pods(sandboxes, file, ctx)
    return config


def _refuse_shared_pods(sandboxes: Mapping[str, SandboxConfig], file: Path, ctx: Context) -> None:
    """Two sandboxes whose targets name the same pod would each restore their archive
    over the other's, every round: a config error, not a fight."""
    claimed: dict[tuple[object, ...], str] = {}
    for name, sandbox in sandboxes.items():
        identity = make_target(name, sandbox.target).identity()
        if identity is None:
            continue
        if identity in claimed:
            key = f"sandboxes.{name}.target"
            raise ConfigError(
                f"sandboxes {claimed[identity]!r} and {name!r} name the same sandbox; each needs its own "
                "(target.pod, target.container or target.labels), or each would restore over the other",
                file=file,
                key=key,
                line=ctx.lines.get(key),
            )
        claimed[identity] = name
