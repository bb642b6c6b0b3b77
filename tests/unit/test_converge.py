from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pytest

from clawguard import TargetError, parse_config
from clawguard.converge import converge
from clawguard.targets.base import ExecResult, Instance

from .chroot_sandbox import ChrootTarget, context, make_sandbox_root
from .conftest import basic_config

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="chroot and chown need root")


class CountingTarget(ChrootTarget):
    """A chroot that counts its locates and refuses to exec into any pod but its own."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.locates = 0

    def locate(self) -> Instance:
        self.locates += 1
        return super().locate()

    def exec(
        self, instance: Instance, argv: Sequence[str], stdin: bytes | None = None, *, user: str | None = None
    ) -> ExecResult:
        if instance.id != self.instance.id:
            raise TargetError(f"container {instance.short_id} not found")
        return super().exec(instance, argv, stdin, user=user)


@pytest.fixture
def parts(archive: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    config = parse_config(basic_config(archive, "    gateway: {enabled: false}\n"), "c.yaml")
    target = CountingTarget(make_sandbox_root(tmp_path / "root"))
    return context(config.sandboxes["my-assistant"], target), target


def test_the_pod_the_caller_located_is_not_located_again(parts) -> None:  # type: ignore[no-untyped-def]
    ctx, target = parts
    result = converge(ctx, located=target.instance)
    assert result.ok and result.container_id == target.instance.id
    assert target.locates == 1  # only the check, at the end, that it is still the same pod


def test_a_located_pod_that_is_gone_is_located_afresh(parts) -> None:  # type: ignore[no-untyped-def]
    ctx, target = parts
    gone = Instance("7" * 64, "chroot")
    result = converge(ctx, located=gone)
    assert result.ok and result.container_id == target.instance.id
    assert target.locates == 2  # the pod that is there now, and the check at the end
