"""The agent in the sandbox: which OpenClaw it is, and how to talk to it through its own CLI."""

from __future__ import annotations

from .cli import AgentCLI, AgentError
from .probe import SandboxFacts, Style, probe
from .settings import AGENT_SCHEMA, AgentSettings
from .versions import TABLE, UNKNOWN, Capabilities, Version, capabilities

__all__ = [
    "AGENT_SCHEMA",
    "TABLE",
    "UNKNOWN",
    "AgentCLI",
    "AgentError",
    "AgentSettings",
    "Capabilities",
    "SandboxFacts",
    "Style",
    "Version",
    "capabilities",
    "probe",
]
