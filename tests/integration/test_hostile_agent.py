"""A hostile agent cannot steer clawguard's root writes outside /sandbox.

The agent (the sandbox user) owns ``/sandbox``, ``/sandbox/.openclaw-data`` and what is
in it, so it can rename any of those directories and put a symlink in its place, at any
moment. A process inside the pod, as the sandbox user, does exactly that in a tight
loop, to root-owned bait outside /sandbox: it watches ``/proc`` for clawguard's write
execs and swaps its directories the moment one starts (the timed attack, which made
most restores escaped before writes were split by owner), and between writes it swaps now and then for
an instant (blind timing). Meanwhile restores repair the drift each round brings (a
skill file gone and an extra one, a credential directory's mode, SOUL.md, the telegram
directory given back to root, openclaw.json rewritten, a script's link removed), and
captures run. Afterwards, and after every round, nothing outside /sandbox changed:
the bait's owners, modes and contents, /etc and /opt, read back as root from inside the pod.

Run on the k3s pod target (busybox tools, dash) and the plain-Docker target.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from clawguard import Clawguard, TargetError, parse_config
from clawguard.state import StateStore
from testbed import DockerSandboxes, Testbed

from .conftest import FIGURES_DIR, REPO, fresh_sandbox

pytestmark = pytest.mark.integration

K3S_POD = "hostile-k3s"
GEN2 = "hostile-gen2"
GEN2_CONTAINER = "clawguard-hostile-gen2"
ROUNDS = 30
DATA = "/sandbox/.openclaw-data"
BAIT = "/opt/bait"
FLAG = "/tmp/clawguard-hostile"  # .pause (the test asks), .paused (the attacker answers), .stop

# What the attacker swaps for a symlink, and where the link points: each a directory the
# agent owns, or (/sandbox/.openclaw, root's) one whose parent it owns. Innermost first:
# a directory inside a swapped one is not reached through the link (the bait is root's).
SWAPS = [
    f"{DATA}/skills/proxmox={BAIT}/proxmox",
    f"{DATA}/skills={BAIT}",
    f"{DATA}/workspace={BAIT}",
    f"{DATA}/credentials={BAIT}/credentials",
    f"{DATA}/telegram={BAIT}",
    f"/sandbox/.openclaw={BAIT}",
]

# Run as the sandbox user, in the background, until FLAG.stop exists. Arguments: SWAPS.
# While FLAG.pause exists it puts every directory back and says so in FLAG.paused.
ATTACKER = r"""
F=/tmp/clawguard-hostile
swap_in() { for pair do d=${pair%%=*}; mv "$d" "$d.real" 2>/dev/null && ln -s "${pair#*=}" "$d"; done; }
swap_out() {
  for round in 1 2; do  # twice: an inner directory is reachable once its outer one is back
    for pair do d=${pair%%=*}; if [ -L "$d" ] && [ -d "$d.real" ]; then rm -f "$d" && mv "$d.real" "$d"; fi; done
  done
}
# On a pause: a directory a restore repaired in between (it removed the swapped-in link, and
# may have made a new directory there, or been stopped before it could) gives way to the real
# one, so that every round starts from the same tree. A name root owns is only renamed aside.
settle() {
  for round in 1 2; do
    for pair do
      d=${pair%%=*}
      if [ -d "$d.real" ] && [ ! -L "$d.real" ]; then
        if [ -e "$d" ] || [ -L "$d" ]; then mv "$d" "$d.gone.$n" && rm -rf "$d.gone.$n" 2>/dev/null; fi
        mv "$d.real" "$d"
      fi
    done
  done
}
# A write exec of clawguard (the pattern does not match this script's own text).
writing() { grep -qs -e 'tar -[x] -f -' /proc/[0-9]*/cmdline; }
n=0; timed=0; blind=0
while [ ! -e $F.stop ]; do
  if [ -e $F.pause ]; then
    swap_out "$@"
    settle "$@"
    echo "$timed $blind" > $F.paused.tmp && mv $F.paused.tmp $F.paused
    usleep 20000
    continue
  fi
  n=$((n + 1))
  if writing; then
    swap_in "$@"; timed=$((timed + 1))
    i=0
    while writing && [ "$i" -lt 3000 ]; do i=$((i + 1)); done
    swap_out "$@"
  elif [ $((n % 7)) -eq 0 ]; then
    swap_in "$@"; blind=$((blind + 1)); usleep $(( (n % 5) * 3000 )); swap_out "$@"
  fi
done
swap_out "$@"
"""

# Run as root. Makes the bait: root-owned directories (0750) and files (0640) named like
# what a restore writes, so that a write, removal, chown or chmod through a swapped
# directory would land on one of them.
MAKE_BAIT = r"""
rm -rf /opt/bait && mkdir -p /opt/bait || exit 1
cd /opt/bait || exit 1
for d in . proxmox proxmox/scripts vmware-esxi nemoclaw-status credentials; do
  mkdir -p "$d"
  for f in SKILL.md extra.txt SOUL.md MEMORY.md openclaw.json exec-approvals.json proxmox.env list-vms.sh \
           update-offset-default.json; do
    echo "bait $d/$f" > "$d/$f"
  done
done
chown -R 0:0 /opt/bait && find /opt/bait -type d -exec chmod 0750 {} + && find /opt/bait -type f -exec chmod 0640 {} +
"""

# Run as root: what is outside /sandbox that a redirected write could reach, as
# "path hexmode uid gid size" lines and sha256sum lines.
OUTSIDE = r"""
find /opt /etc -xdev -exec stat -c '%n %f %u %g %s' {} + | sort
find /opt /etc -xdev -type f -exec sha256sum {} + | sort
stat -c '%n %f %u %g' / /opt /etc /tmp /sandbox
"""

# Run as root, each round: pause the attacker (every directory back in place), print
# OUTSIDE, make the bait anew, bring drift for the restore to repair, resume the attacker.
ROUND = (
    r"""
F=/tmp/clawguard-hostile
D=/sandbox/.openclaw-data
rm -f $F.paused; : > $F.pause
i=0
while [ ! -e $F.paused ]; do i=$((i + 1)); [ "$i" -lt 500 ] || { echo "the attacker does not answer" >&2; exit 1; }; usleep 10000; done
for d in $D/skills $D/skills/proxmox $D/workspace $D/credentials $D/telegram /sandbox/.openclaw; do
  if [ -L "$d" ] || [ ! -d "$d" ]; then echo "$d is not back in place" >&2; exit 1; fi
done
echo "--attacker--"; cat $F.paused; echo "--outside--"
"""
    + OUTSIDE
    + r"""
echo "--end--"
"""
    + MAKE_BAIT
    + r"""
uid=$(stat -c %u $D)
rm -f $D/skills/proxmox/SKILL.md
echo stray > $D/skills/proxmox/extra.txt && chown "$uid:$uid" $D/skills/proxmox/extra.txt
chmod 0755 $D/credentials
echo "drifted $$" > $D/workspace/SOUL.md && chown "$uid:$uid" $D/workspace/SOUL.md
echo '{"offset": 1}' > $D/telegram/update-offset-default.json
chown -R 0:0 $D/telegram
chmod u+w /sandbox/.openclaw/openclaw.json && echo '{"gateway": {"port": 1}}' > /sandbox/.openclaw/openclaw.json
chmod 0444 /sandbox/.openclaw/openclaw.json
rm -f /sandbox/.openclaw/proxmox.sh
rm -f $F.pause
"""
)


class Sandbox:
    """One sandbox under attack: run commands in it, as root or as the agent."""

    def __init__(self, bed: Testbed | DockerSandboxes, name: str) -> None:
        self.bed, self.name = bed, name

    def run(self, script: str, *args: str, user: str | None = None, check: bool = True) -> str:
        code, out, err = self.bed.exec_in_sandbox(self.name, ["sh", "-c", script, "sh", *args], user=user)
        if check:
            assert code == 0, f"{script[:60]!r} failed in {self.name}: {err.decode(errors='replace')}"
        return out.decode(errors="replace")

    def start_attacker(self) -> None:
        # In the background, as the sandbox user; it outlives this exec (tini reaps it).
        start = 'a=$1; f=$2; shift 2; rm -f "$f.stop"; nohup sh -c "$a" sh "$@" >/dev/null 2>&1 &'
        self.run(start, ATTACKER, FLAG, *SWAPS, user="sandbox")

    def stop_attacker(self) -> None:
        self.run(f": > {FLAG}.stop; rm -f {FLAG}.pause")
        time.sleep(0.5)


@pytest.fixture
def k3s_pod(testbed: Testbed) -> Iterator[Sandbox]:
    for name in fresh_sandbox(testbed, K3S_POD):
        yield Sandbox(testbed, name)


@pytest.fixture
def gen2_sandbox(testbed: Testbed) -> Iterator[Sandbox]:
    sandboxes = DockerSandboxes(testbed.client)
    sandboxes.remove(GEN2)  # left over by an interrupted run
    sandboxes.add(GEN2, container_name=GEN2_CONTAINER)
    yield Sandbox(sandboxes, GEN2)
    sandboxes.remove(GEN2)


def _guard(tmp_path: Path, name: str, target: str) -> Clawguard:
    archive = tmp_path / "archive"
    shutil.copytree(REPO / "restore-archive", archive)
    text = f"""version: 1
sandboxes:
  {name}:
    target: {target}
    archive: {archive}
    user: sandbox
    gateway: {{enabled: false}}
"""
    return Clawguard(parse_config(text, tmp_path / "config.yaml"), store=StateStore(tmp_path / "state"))


def _attack(sandbox: Sandbox, guard: Clawguard, label: str) -> None:
    name = sandbox.name
    sandbox.run(MAKE_BAIT)
    first = guard.restore(name)[0]  # the new pod's restore, before the attack
    assert first.ok, first.report.to_dict() if first.report else first
    sandbox.run(
        f"echo memory > {DATA}/workspace/MEMORY.md && echo '{{}}' > {DATA}/telegram/update-offset-default.json",
        user="sandbox",
    )
    baseline = sandbox.run(OUTSIDE)
    escaped: list[tuple[int, list[str]]] = []
    outcomes: dict[str, int] = {}
    started = time.monotonic()
    sandbox.start_attacker()
    try:
        for number in range(1, ROUNDS + 1):
            try:  # a read the attacker upset is a TargetError: a failed restore like any other
                result = guard.restore(name)[0]
                key = "ok" if result.ok else "failed"
            except TargetError:
                key = "unreadable"
            outcomes[key] = outcomes.get(key, 0) + 1
            if number % 5 == 0:
                with contextlib.suppress(TargetError):
                    guard.capture(name)
            reply = sandbox.run(ROUND)
            attacker = reply.split("--attacker--\n", 1)[1].split("--outside--", 1)[0].split()
            outside = reply.split("--outside--\n", 1)[1].split("--end--", 1)[0]
            if outside != baseline:
                changed = sorted(set(outside.splitlines()) ^ set(baseline.splitlines()))
                escaped.append((number, changed))
    finally:
        sandbox.stop_attacker()
    seconds = time.monotonic() - started
    final = sandbox.run(OUTSIDE)
    calm = guard.restore(name)[0]  # the agent stopped: everything it broke is repaired
    figures = {
        "target": label,
        "restores": ROUNDS,
        "escaped": len(escaped),
        "outcomes": outcomes,
        "attacker_swaps_timed_blind": attacker,
        "seconds": round(seconds, 1),
    }
    print(f"{label}: {json.dumps(figures)}")
    FIGURES_DIR.mkdir(parents=True, exist_ok=True)
    (FIGURES_DIR / f"hostile-agent-{label}.json").write_text(json.dumps(figures))
    assert int(attacker[0]) >= ROUNDS // 2, f"the attacker hardly ever caught a write: {attacker}"
    shown = "; ".join(f"restore {n}: {', '.join(lines[:6])}" for n, lines in escaped[:5])
    assert not escaped, f"{len(escaped)} of {ROUNDS} restores changed something outside /sandbox: {shown}"
    assert final == baseline
    assert calm.ok, calm.report.to_dict() if calm.report else calm


def test_a_hostile_agent_cannot_steer_root_writes_on_a_k3s_pod(k3s_pod: Sandbox, tmp_path: Path) -> None:
    guard = _guard(tmp_path, K3S_POD, "{kind: k3s, cluster: openshell-cluster-nemoclaw}")
    _attack(k3s_pod, guard, "k3s")


def test_a_hostile_agent_cannot_steer_root_writes_in_a_docker_sandbox(gen2_sandbox: Sandbox, tmp_path: Path) -> None:
    guard = _guard(tmp_path, GEN2, f"{{kind: docker, container: {GEN2_CONTAINER}}}")
    _attack(gen2_sandbox, guard, "docker")
