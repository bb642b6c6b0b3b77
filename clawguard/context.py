"""One configured sandbox and what clawguard works on it with, built in one place.

The façade (``clawguard.api``) makes one of these per sandbox: its config, the daemon
settings that apply to it, its target (where it lives), its gateway (how its agent is
started and checked) and the state store. Recovery, capture and the daemon's worker
take it whole, so none of them builds a dependency of its own or passes a state root
along.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .config import Config, DaemonSettings, SandboxConfig
from .gateway import Gateway
from .state import StateStore
from .targets import Target, make_target


@dataclass
class SandboxContext:
    config: SandboxConfig
    settings: DaemonSettings
    target: Target
    store: StateStore
    gateway: Gateway = field(init=False)

    def __post_init__(self) -> None:
        self.gateway = Gateway(self.config.name, dict(self.config.gateway), self.store.sandbox_dir(self.config.name))

    @property
    def name(self) -> str:
        return self.config.name


def build_context(config: Config, name: str, store: StateStore, target: Target | None = None) -> SandboxContext:
    """Sandbox ``name`` of ``config`` with its target (``target``, or the one its config names)."""
    sandbox = config.sandboxes[name]
    return SandboxContext(sandbox, config.daemon, target or make_target(name, sandbox.target), store)


def sandbox_contexts(config: Config, store: StateStore, targets: Mapping[str, Target]) -> list[SandboxContext]:
    """Every configured sandbox's context (the daemon's workers each take one)."""
    return [build_context(config, name, store, targets.get(name)) for name in config.sandboxes]
