"""``python -m tests.soak --faults 50 [--seed N] [--keep DIR]``: the full soak, on its own."""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

from testbed import Testbed

from .engine import SANDBOXES, Soak


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.soak", description=__doc__)
    parser.add_argument("--faults", type=int, default=50)
    parser.add_argument("--seed", type=int, default=None, help="replay a run (default: random, printed)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep logs and soak.json here")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    bed = Testbed()
    bed.up()
    for name, uid in zip(SANDBOXES, (998, 1234), strict=True):
        bed.ensure_sandbox(name, uid=uid)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="clawguard-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    report = Soak(bed, workdir, seed).run(args.faults)
    print(f"logs and soak.json in {workdir}")
    ok = all(r.converged for r in report.results) and report.unhandled == 0 and report.data_lost == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
