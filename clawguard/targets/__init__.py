"""Target kinds. Each module in this package defines one; importing it registers it."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from typing import Any

from . import _docker
from .base import DEFAULT_GATEWAY, REGISTRY, Discovery, ExecResult, Found, Instance, Target

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in ("base", "_docker"):
        importlib.import_module(f"{__name__}.{_module.name}")


def make_target(sandbox: str, values: Mapping[str, Any]) -> Target:
    return REGISTRY[values["kind"]](sandbox, values)


def discover(docker_host: str | None = None) -> Discovery:
    """Every running sandbox that any target kind finds, oldest OpenShell generation first.
    The engine-based kinds search the Docker engine at ``docker_host`` (default: DOCKER_HOST
    or the local socket); an unreachable engine is a note, and the other kinds still search."""
    found = Discovery(docker_host=docker_host, connect=_docker.client)
    for kind in sorted(REGISTRY.values(), key=lambda cls: (cls.generation, cls.kind)):
        kind.discover(found)
    return found


__all__ = [
    "DEFAULT_GATEWAY",
    "REGISTRY",
    "Discovery",
    "ExecResult",
    "Found",
    "Instance",
    "Target",
    "discover",
    "make_target",
]
