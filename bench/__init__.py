"""clawguard's benchmark: ``python -m bench`` (see docs/performance.md).

Measures detection, restore, gateway start, CPU per restore, idle cost, memory,
locate cost and scale on the OpenShell testbed, against the seed's own bash method
(the baseline) and against the floor of one Docker exec and one tar stream (the
limit), and the real OpenClaw gateway under the daemon next to its own cold start,
all in one run, and prints the ratios and the goals. Timings never live in the test suite: machines are shared and
noisy, so only ratios measured side by side mean anything.
"""
