"""The real clawguard daemon (``python -m clawguard --config FILE run``) as a subprocess.

Its logfmt log is the measurement: every event carries ``ts`` (UTC, microseconds).
``/proc`` gives its CPU time and RSS.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from .archive import ReferenceArchive

_PAIR = re.compile(r'([A-Za-z_][\w.]*)=("(?:[^"\\]|\\.)*"|\S*)')
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Event:
    ts: float
    name: str
    fields: dict[str, str]


def parse_line(line: str) -> Event | None:
    fields = {}
    for key, value in _PAIR.findall(line):
        if value.startswith('"'):
            value = value[1:-1].replace('\\"', '"')
        fields[key] = value
    if "event" not in fields or "ts" not in fields:
        return None
    try:
        ts = datetime.fromisoformat(fields["ts"].replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
    return Event(ts, fields["event"], fields)


def write_config(
    path: Path,
    archive: ReferenceArchive | Path,
    sandboxes: Iterable[str],
    cluster: str,
    gateway: str,
    daemon: str = "",
) -> Path:
    """A config with default daemon settings unless ``daemon`` (a YAML flow mapping) says otherwise.

    ``archive`` is the reference archive or any restore archive's directory."""
    root = archive if isinstance(archive, Path) else archive.root
    lines = ["version: 1"]
    if daemon:
        lines.append(f"daemon: {daemon}")
    lines.append("sandboxes:")
    for name in sandboxes:
        lines += [
            f"  {name}:",
            f"    target: {{kind: k3s, cluster: {cluster}}}",
            f"    archive: {root}",
            "    user: sandbox",
            "    gateway:",
            f'      ssh_proxy: "openshell ssh-proxy --gateway-name {gateway} --name {{sandbox}}"',
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


class Daemon:
    def __init__(self, config: Path, workdir: Path, bin_dir: Path, name: str = "daemon") -> None:
        self.log = workdir / f"{name}.log"
        state = workdir / f"{name}-state"
        state.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "XDG_STATE_HOME": str(state),
        }
        env.pop("NOTIFY_SOCKET", None)
        env.pop("JOURNAL_STREAM", None)
        self._handle = self.log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "clawguard", "--config", str(config), "run"],
            stdout=self._handle,
            stderr=subprocess.STDOUT,
            env=env,
        )
        self._offset = 0
        self._pending = ""
        self.events: list[Event] = []

    @property
    def pid(self) -> int:
        return self.proc.pid

    def refresh(self) -> list[Event]:
        with self.log.open() as f:
            f.seek(self._offset)
            chunk = f.read()
            self._offset = f.tell()
        text = self._pending + chunk
        *lines, self._pending = text.split("\n")
        for line in lines:
            event = parse_line(line)
            if event is not None:
                self.events.append(event)
        return self.events

    def find(self, name: str, after: float = 0.0, **fields: str) -> Event | None:
        for event in self.refresh():
            if event.name == name and event.ts >= after and all(event.fields.get(k) == v for k, v in fields.items()):
                return event
        return None

    def wait(self, name: str, after: float = 0.0, timeout: float = 120.0, **fields: str) -> Event:
        deadline = time.monotonic() + timeout
        while True:
            event = self.find(name, after, **fields)
            if event is not None:
                return event
            if self.proc.poll() is not None:
                raise RuntimeError(f"the daemon exited ({self.proc.returncode}); see {self.log}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {name} {fields} in the daemon's log within {timeout:.0f}s ({self.log})")
            time.sleep(0.1)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._handle.close()
        return self.proc.returncode

    # ----------------------------------------------------------- /proc

    def cpu_seconds(self) -> float:
        """utime + stime of the daemon and of the children it has waited for (ssh probes)."""
        with open(f"/proc/{self.pid}/stat") as f:
            stat = f.read()
        fields = stat[stat.rindex(")") + 2 :].split()
        # fields[0] is field 3 (state): utime, stime, cutime, cstime are fields 14-17.
        return sum(int(fields[i]) for i in range(11, 15)) / CLK_TCK

    def rss_bytes(self) -> tuple[int, int]:
        """(VmRSS, VmHWM) of the daemon process."""
        values = {}
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    values[key] = int(rest.split()[0]) * 1024
        return values.get("VmRSS", 0), values.get("VmHWM", 0)

    def threads(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/task"))
