"""Target kinds. Each module in this package defines one; importing it registers it."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from typing import Any

from .base import REGISTRY, ExecResult, Instance, Target

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in ("base", "_docker"):
        importlib.import_module(f"{__name__}.{_module.name}")


def make_target(sandbox: str, values: Mapping[str, Any]) -> Target:
    return REGISTRY[values["kind"]](sandbox, values)


__all__ = ["REGISTRY", "ExecResult", "Instance", "Target", "make_target"]
