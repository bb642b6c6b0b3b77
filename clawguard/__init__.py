"""clawguard keeps an OpenClaw agent's OpenShell sandbox restored across pod restarts.

The public API is small: load a config, build and inspect a plan, restore.
"""

from __future__ import annotations

from .config import Config, SandboxConfig, load_config, parse_config
from .converge import Convergence
from .errors import (
    ArchiveError,
    ClawguardError,
    ConfigError,
    InputError,
    RestoreFailed,
    SandboxGone,
    TargetError,
)
from .plan import Plan, build_plan
from .restore import RestoreReport, StepReport

__version__ = "0.2.0"

__all__ = [
    "ArchiveError",
    "ClawguardError",
    "Config",
    "ConfigError",
    "Convergence",
    "InputError",
    "Plan",
    "RestoreFailed",
    "RestoreReport",
    "SandboxConfig",
    "SandboxGone",
    "StepReport",
    "TargetError",
    "__version__",
    "build_plan",
    "load_config",
    "parse_config",
]
