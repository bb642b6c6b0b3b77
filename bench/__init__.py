"""clawguard's benchmark: ``python -m bench`` (see docs/performance.md).

Measures detection, restore, gateway, idle cost, locate cost and scale on the
OpenShell testbed, against the seed's own bash method (the baseline) and against
the floor of one Docker exec and one tar stream (the limit), all in one run, and
prints the ratios. Timings never live in the test suite: machines are shared and
noisy, so only ratios measured side by side mean anything.
"""
