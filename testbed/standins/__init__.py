"""Stand-ins for the OpenShell/NemoClaw/OpenClaw programs the real test bed cannot run.

Files here (shipped with the package, read with :func:`read`):

* ``openclaw.sh``: the OpenClaw CLI and gateway (POSIX sh run by dash, using
  busybox tools: ``httpd`` for HTTP, ``awk`` to read JSON), installed in the
  sandbox image as npm installs the real one (``/usr/local/bin/openclaw``, a symlink into
  ``/usr/local/lib/node_modules/openclaw`` beside :func:`openclaw_package_json`); it
  doubles as the gateway's CGI.
* ``wget.sh``: ``/usr/local/bin/wget``, busybox wget with ``-T`` done by
  ``timeout`` (Debian's busybox-static 1.35 wget segfaults on ``-T``).
* ``sandbox-init.sh``: every sandbox's main command (stand-in and real-agent
  images): generates the sandbox's SSH host key, starts a listening ``sshd`` on
  127.0.0.1 inside the sandbox, deletes the key file (unless asked to keep it),
  then ``exec sleep infinity``.
* ``ssh-relay.sh``: ``/opt/openshell/bin/ssh-relay``, the in-sandbox end of
  ``openshell ssh-proxy`` (socat, or busybox nc, to that sshd).
* ``sshd_config``: Debian's OpenSSH server in the sandbox.
* ``telegram.js``: the Telegram Bot API, a Node.js program the real agent's telegram
  channel talks to inside a real-agent sandbox (``channels.telegram.apiRoot``).
* ``openshell.py``: the host-side ``openshell`` CLI (``ssh-proxy``,
  ``sandbox ssh-config``), a standalone stdlib-only script that
  :meth:`testbed.Testbed.install_openshell` copies to ``DIR/openshell``.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

#: Names of the stand-in files in this package.
OPENCLAW = "openclaw.sh"
SANDBOX_INIT = "sandbox-init.sh"
SSH_RELAY = "ssh-relay.sh"
WGET = "wget.sh"
SSHD_CONFIG = "sshd_config"
OPENSHELL = "openshell.py"
TELEGRAM = "telegram.js"


def read(name: str) -> bytes:
    """Bytes of the stand-in file ``name``.

    The test bed runs from a source checkout (it is not part of clawguard's wheel).
    """
    path = resources.files(__name__).joinpath(name)
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise FileNotFoundError(
            f"test-bed stand-in {name!r} is missing from {path}; run the test bed from a clawguard source checkout"
        ) from exc


def openclaw_package_json() -> bytes:
    """The stand-in CLI's package.json: its name and the version its ``--version`` prints."""
    match = re.search(rb'^VERSION="([^"]+)"$', read(OPENCLAW), re.MULTILINE)
    if match is None:
        raise ValueError(f"{OPENCLAW} declares no VERSION")
    package = {"name": "openclaw", "version": match.group(1).decode(), "bin": {"openclaw": OPENCLAW}}
    return json.dumps(package, indent=2).encode() + b"\n"


#: A line only the stand-in ``openshell`` carries, so it can tell its own copies apart.
OPENSHELL_MARKER = b"openshell: the clawguard test bed's stand-in for OpenShell's CLI"


def is_openshell_standin(path: Path) -> bool:
    """True when ``path`` is a copy of the ``openshell`` stand-in (any version of it)."""
    try:
        with open(path, "rb") as fh:
            return OPENSHELL_MARKER in fh.read(4096)
    except OSError:
        return False
