"""clawguard install-service: write the systemd user unit for the current user."""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

HELP = "Write ~/.config/systemd/user/clawguard.service and print the steps to enable it."
EXAMPLE = "example: clawguard install-service --enable"


def add_parser(subparsers: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("install-service", help=HELP, description=HELP, epilog=EXAMPLE, parents=parents)
    parser.add_argument("--force", action="store_true", help="overwrite an existing unit file")
    parser.add_argument("--print", dest="print_only", action="store_true", help="print the unit instead of writing it")
    parser.add_argument(
        "--enable", action="store_true", help="also run systemctl --user daemon-reload and enable --now clawguard"
    )
    parser.set_defaults(run=run)


def unit_text(config: str | None) -> str:
    template = resources.files("clawguard").joinpath("data/clawguard.service").read_text()
    executable = shutil.which("clawguard") or str(Path(sys.argv[0]).resolve())
    argv = [str(Path(executable).resolve()), "run"]
    if config:
        argv += ["--config", str(Path(config).expanduser().resolve())]
    return template.replace("@EXEC_START@", shlex.join(argv))


def unit_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "systemd" / "user" / "clawguard.service"


def run(args: argparse.Namespace) -> int:
    text = unit_text(args.config)
    if args.print_only:
        print(text, end="")
        return 0
    path = unit_path()
    if path.exists() and not args.force and path.read_text() != text:
        print(f"clawguard: {path} exists and differs; use --force to replace it", file=sys.stderr)
        return 2
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    user = os.environ.get("USER") or "$USER"
    if args.enable:
        for argv in (["systemctl", "--user", "daemon-reload"], ["systemctl", "--user", "enable", "--now", "clawguard"]):
            done = subprocess.run(argv, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                print(f"clawguard: {shlex.join(argv)} failed: {done.stderr.strip()}", file=sys.stderr)
                return 1
        print(
            f"wrote {path}, enabled and started clawguard\n\nnext:\n"
            f"  sudo loginctl enable-linger {user}    # keep it running when you are logged out\n"
            "  clawguard status\n"
            "  journalctl --user -u clawguard -f"
        )
        return 0
    print(
        f"wrote {path}\n\nnext:\n"
        "  systemctl --user daemon-reload\n"
        "  systemctl --user enable --now clawguard\n"
        f"  sudo loginctl enable-linger {user}    # keep it running when you are logged out\n"
        "  systemctl --user status clawguard\n"
        "  journalctl --user -u clawguard -f"
    )
    return 0
