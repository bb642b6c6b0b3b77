"""Step kinds. Each module in this package defines one; importing it registers it."""

from __future__ import annotations

import importlib
import pkgutil

from .base import REGISTRY, Origin, Step, StepContext

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["REGISTRY", "Origin", "Step", "StepContext"]
