from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from clawguard.cli import build_parser, main
from clawguard.commands.completion import script

from ..conftest import basic_config

needs_zsh = pytest.mark.skipif(
    shutil.which("zsh") is None and os.environ.get("CI") != "true",  # CI installs it: there it must run
    reason="zsh is not installed (scripts/setup-host.sh installs it)",
)


def _shim(tmp_path: Path, config: Path) -> Path:
    """A `clawguard` on PATH for the scripts' `clawguard completion --sandboxes`; returns its directory."""
    shim = tmp_path / "bin" / "clawguard"
    shim.parent.mkdir(exist_ok=True)
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m clawguard --config {config} "$@"\n')
    shim.chmod(0o755)
    return shim.parent


def _complete(shell_script: str, words: list[str], tmp_path: Path, config: Path) -> list[str]:
    """Run the bash completion function the script registers for clawguard, as bash would for
    ``words`` (the last one being typed)."""
    words_text = " ".join(f"'{w}'" for w in words)
    program = (
        f"{shell_script}\nCOMP_WORDS=({words_text}); COMP_CWORD={len(words) - 1}; "
        'spec=($(complete -p clawguard)); "${spec[-2]}"; printf "%s\\n" "${COMPREPLY[@]}"'
    )
    done = subprocess.run(
        ["bash", "-c", program],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": f"{_shim(tmp_path, config)}:/usr/bin:/bin"},
    )
    return done.stdout.split()


def test_bash_completes_commands_options_and_sandbox_names(archive: Path, tmp_path: Path, write_config) -> None:  # type: ignore[no-untyped-def]
    config = write_config(basic_config(archive))
    bash = script("bash", build_parser())
    assert _complete(bash, ["clawguard", "res"], tmp_path, config) == ["restore"]
    assert _complete(bash, ["clawguard", "restore", "--dr"], tmp_path, config) == ["--dry-run"]
    assert _complete(bash, ["clawguard", "-c", "x.yaml", "doctor", "my"], tmp_path, config) == ["my-assistant"]
    assert _complete(bash, ["clawguard", "install-service", "--e"], tmp_path, config) == ["--enable"]
    assert _complete(bash, ["clawguard", "completion", "z"], tmp_path, config) == ["zsh"]
    assert "--sandboxes" not in _complete(bash, ["clawguard", "completion", "--"], tmp_path, config)  # the scripts' own
    assert _complete(bash, ["clawguard", "--config", str(config)[:-3]], tmp_path, config) == [str(config)]


def test_completion_needs_a_shell(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["completion"]) == 2
    assert "say which shell" in capsys.readouterr().out
    assert main(["completion", "bash"]) == 0
    assert "complete -o bashdefault -F _shtab_clawguard clawguard" in capsys.readouterr().out


@needs_zsh
@pytest.mark.parametrize("how", ["source", "fpath"])
def test_zsh_script_loads_and_registers_the_completion(tmp_path: Path, how: str) -> None:
    path = tmp_path / "_clawguard"
    path.write_text(script("zsh", build_parser()))
    compinit = "autoload -U compinit && compinit -u -D"
    load = f"{compinit} && source {path}" if how == "source" else f"fpath=({tmp_path} $fpath) && {compinit}"
    done = subprocess.run(
        ["zsh", "-f", "-c", f"{load} && print -r -- $_comps[clawguard]"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert "_clawguard" in done.stdout


# Types `line` and a tab into an interactive zsh on a pseudo-terminal and prints each
# candidate offered (compadd wrapped); the marker is split so that zsh's echo of the input
# never matches it.
_ZSH_TAB = r"""
zmodload zsh/zpty
zpty z zsh -f -i
zpty -w z "PROMPT= ; fpath=($DIR \$fpath); autoload -U compinit; compinit -u -D; bindkey '^I' complete-word"
zpty -w z 'compadd () { if [[ ${@[1,(i)(-|--)]} == *-(O|A|D)\ * ]]; then builtin compadd "$@"; return; fi;
  local -a hits; builtin compadd -A hits "$@"; local h; for h in $hits; do print -r -- "<HI""T>$h</HI""T>"; done; }'
zpty -w z "$LINE"$'\t'
zpty -w z $'\n'"print -r -- '<EN''D>'"
local line out
while zpty -r z line; do out+=$line; [[ $line == *'<END>'* ]] && break; done
zpty -d z
print -r -- ${(F)${(M)${(s:</HIT>:)out}:#*<HIT>*}##*<HIT>}
"""


def _zsh_tab(line: str, tmp_path: Path, config: Path) -> list[str]:
    directory = tmp_path / "zfunc"
    directory.mkdir(exist_ok=True)
    (directory / "_clawguard").write_text(script("zsh", build_parser()))
    done = subprocess.run(
        ["zsh", "-f", "-c", _ZSH_TAB],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={"PATH": f"{_shim(tmp_path, config)}:/usr/bin:/bin", "DIR": str(directory), "LINE": line},
    )
    return done.stdout.split()


@needs_zsh
def test_zsh_completes_commands_and_sandbox_names(archive: Path, tmp_path: Path, write_config) -> None:  # type: ignore[no-untyped-def]
    config = write_config(basic_config(archive))
    assert _zsh_tab("clawguard res", tmp_path, config) == ["restore"]
    assert _zsh_tab("clawguard -c x.yaml doctor my", tmp_path, config) == ["my-assistant"]
