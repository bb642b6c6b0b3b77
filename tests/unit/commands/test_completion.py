from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from clawguard.cli import build_parser
from clawguard.commands.completion import script

from ..conftest import basic_config


def _complete(shell_script: str, words: list[str], tmp_path: Path, config: Path) -> list[str]:
    """Run the bash completion function as bash would for ``words`` (the last one being typed)."""
    shim = tmp_path / "bin" / "clawguard"  # the function calls `clawguard completion --sandboxes`
    shim.parent.mkdir(exist_ok=True)
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m clawguard --config {config} "$@"\n')
    shim.chmod(0o755)
    words_text = " ".join(f"'{w}'" for w in words)
    program = (
        f"{shell_script}\nCOMP_WORDS=({words_text}); COMP_CWORD={len(words) - 1}; _clawguard; "
        'printf "%s\\n" "${COMPREPLY[@]}"'
    )
    done = subprocess.run(
        ["bash", "-c", program],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": f"{shim.parent}:/usr/bin:/bin"},
    )
    return done.stdout.split()


def test_bash_completes_commands_options_and_sandbox_names(archive: Path, tmp_path: Path, write_config) -> None:  # type: ignore[no-untyped-def]
    config = write_config(basic_config(archive))
    bash = script("bash", build_parser())
    assert _complete(bash, ["clawguard", "res"], tmp_path, config) == ["restore"]
    assert _complete(bash, ["clawguard", "restore", "--dr"], tmp_path, config) == ["--dry-run"]
    assert _complete(bash, ["clawguard", "-c", "x.yaml", "doctor", "my"], tmp_path, config) == ["my-assistant"]
    assert _complete(bash, ["clawguard", "install-service", "--e"], tmp_path, config) == ["--enable"]


@pytest.mark.skipif(
    shutil.which("zsh") is None and os.environ.get("CI") != "true",  # CI installs it: there it must run
    reason="zsh is not installed (scripts/setup-host.sh installs it)",
)
def test_zsh_script_loads_and_registers_the_completion(tmp_path: Path) -> None:
    path = tmp_path / "_clawguard"
    path.write_text(script("zsh", build_parser()))
    done = subprocess.run(
        ["zsh", "-f", "-c", f"autoload -U compinit && compinit -u && source {path} && print -r -- $_comps[clawguard]"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "_bash_complete" in done.stdout or "_clawguard" in done.stdout
