"""clawguard keeps an OpenClaw agent's OpenShell sandbox restored across pod restarts.

The public API is small: ``Clawguard.load(path)`` and its methods (restore, capture,
check, plan, status, daemon) do everything the command line does.
"""

from __future__ import annotations

from .api import Checked, Clawguard, discover
from .config import Config, SandboxConfig, load_config, parse_config
from .context import SandboxContext
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

__version__ = "0.5.0"

__all__ = [
    "ArchiveError",
    "Checked",
    "Clawguard",
    "ClawguardError",
    "Config",
    "ConfigError",
    "Convergence",
    "InputError",
    "Plan",
    "RestoreFailed",
    "RestoreReport",
    "SandboxConfig",
    "SandboxContext",
    "SandboxGone",
    "StepReport",
    "TargetError",
    "__version__",
    "build_plan",
    "discover",
    "load_config",
    "parse_config",
]
