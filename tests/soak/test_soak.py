"""A short soak in CI: every fault kind once against the testbed (python -m tests.soak for the long run)."""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

import pytest

from .engine import KINDS, Soak

pytestmark = pytest.mark.integration


def test_short_soak_converges_after_every_fault(testbed: object) -> None:
    seed = int(os.environ.get("CLAWGUARD_SOAK_SEED") or random.SystemRandom().randrange(1 << 31))
    faults = max(len(KINDS), int(os.environ.get("CLAWGUARD_SOAK_FAULTS", "0")))
    # Outside pytest's rotating temp dirs, so the logs survive for a post-mortem.
    tmp_path = Path(tempfile.mkdtemp(prefix=f"clawguard-soak-{seed}-"))
    report = Soak(testbed, tmp_path, seed).run(faults)
    print(report.summary())
    failed = [r for r in report.results if not r.converged]
    assert not failed, f"seed {seed}: {failed}"
    assert report.unhandled == 0, f"seed {seed}: unhandled exceptions in {tmp_path}/daemon-*.log"
    assert report.data_lost == 0
    assert len(report.results) == faults >= 8
