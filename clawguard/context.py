"""One configured sandbox and what clawguard works on it with, built in one place.

The façade (``clawguard.api``) makes one of these per sandbox: its config, the daemon
settings that apply to it, its target (where it lives), its gateway (how its agent is
started and checked) and the state store. Recovery, capture and the daemon's worker
take it whole, so none of them builds a dependency of its own or passes a state root
along.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .config import DaemonSettings, SandboxConfig
from .gateway import Gateway
from .state import StateStore
from .targets import Target


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
