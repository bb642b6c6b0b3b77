"""Discovery belongs to the targets: a new kind with its own discover() is found by init, unchanged."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from clawguard.targets import REGISTRY, Discovery, Found, Instance, discover
from clawguard.targets.base import ExecResult, Target
from clawguard.targets.docker import DockerTarget
from clawguard.targets.k3s import K3sTarget


class _Nowhere:
    """A Docker client whose engine lists nothing."""

    class api:
        @staticmethod
        def containers(all: bool = False, filters: Any = None) -> list[dict[str, Any]]:
            return []

    @staticmethod
    def ping() -> bool:
        return True


@pytest.fixture(autouse=True)
def _no_engine_no_gateway(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """An engine that lists nothing, and no OpenShell gateway registered."""
    monkeypatch.setattr("clawguard.targets._docker.client", lambda base_url=None, timeout=60: _Nowhere())
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("OPENSHELL_GATEWAY", raising=False)


@pytest.fixture
def lab_kind() -> Iterator[type[Target]]:
    class LabTarget(Target):
        kind = "lab"
        params: dict[str, Any] = {}
        generation = 3

        def locate(self) -> Instance:
            if self.sandbox == "lost":
                from clawguard.errors import TargetError

                raise TargetError("not running")
            return Instance("d" * 64, f"lab box {self.sandbox}")

        def exec(self, instance: Instance, argv: Sequence[str], stdin: bytes | None = None, **_: Any) -> ExecResult:
            raise NotImplementedError

        @classmethod
        def discover(cls, into: Discovery) -> None:
            for name in ("bench-box", "lost"):
                into.add(
                    cls(name, {}), lambda instance, n=name: Found(n, cls.kind, {"kind": cls.kind}, "lab", instance, 3)
                )

    yield LabTarget
    del REGISTRY["lab"]


def test_every_registered_kind_is_asked_oldest_generation_first(lab_kind: type[Target]) -> None:
    found = discover()
    assert [f.name for f in found.found] == ["bench-box"]  # k3s and docker saw nothing on this engine
    assert found.found[0].instance.where == "lab box bench-box"
    # One that its own locate cannot find is left out, and said why: what init writes must work.
    assert found.notes == ["lost (lab): skipped: not running"]
    order = sorted(REGISTRY.values(), key=lambda cls: (cls.generation, cls.kind))
    assert order[:2] == [K3sTarget, DockerTarget] and lab_kind in order[2:]
