from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from clawguard.entries import Entry, Ids
from clawguard.sandboxfs import INSPECT_SCRIPT, UserTable, Write, build_tar, inspect_args, parse_inspection


def test_user_table() -> None:
    table = UserTable.parse(
        "root:x:0:0::/root:/bin/sh\nsandbox:x:998:997::/sandbox:/bin/sh\n--clawguard--\nsandbox:x:997:\nstaff:x:50:\n"
    )
    assert table.resolve("sandbox") == Ids(998, 997)
    assert table.resolve(998) == Ids(998, 997)
    assert table.resolve("sandbox:staff") == Ids(998, 50)
    assert table.resolve("root") == Ids(0, 0)
    with pytest.raises(LookupError, match="uid 4242 does not exist"):
        table.resolve(4242)
    with pytest.raises(LookupError, match="group 'wheel'"):
        table.resolve("sandbox:wheel")


def test_inspect_args_merge_recursion() -> None:
    entries = [Entry("/s/a", "dir"), Entry("/s/a", "dir", exact=True), Entry("/s/b", "file", content=b"")]
    assert inspect_args(entries) == ["R:/s/a", "P:/s/b"]


@pytest.mark.parametrize("shell", ["sh", "busybox"])
def test_inspect_script_on_a_real_tree(tmp_path: Path, shell: str) -> None:
    if shell == "busybox" and not shutil.which("busybox"):
        pytest.skip("busybox not installed")
    (tmp_path / "real").mkdir()
    (tmp_path / "tree" / "sub").mkdir(parents=True)
    (tmp_path / "tree" / "f").write_text("hi\n")
    (tmp_path / "tree" / "l").symlink_to("f")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    argv = ["sh", "-c", INSPECT_SCRIPT, "sh"] if shell == "sh" else ["busybox", "sh", "-c", INSPECT_SCRIPT, "sh"]
    args = [f"R:{tmp_path}/tree", f"P:{tmp_path}/link", f"P:{tmp_path}/link/x", f"P:{tmp_path}/missing"]
    done = subprocess.run([*argv, *args], capture_output=True, text=True, check=True)
    found = parse_inspection(done.stdout)
    tree = found.found
    assert tree[f"{tmp_path}/tree"].kind == "dir"
    assert tree[f"{tmp_path}/tree/sub"].kind == "dir"
    assert tree[f"{tmp_path}/tree/f"].sha256 == "98ea6e4f216f2fb4b69fff9b3a44842c38686ca685f3f55dc48c5d3fb1107be4"
    assert tree[f"{tmp_path}/tree/l"].link == "f"
    assert tree[f"{tmp_path}/link"].kind == "symlink"
    assert f"{tmp_path}/missing" not in tree
    assert found.unsafe == {f"{tmp_path}/link/x": str((tmp_path / "real").resolve())}


def test_write_args_and_tar() -> None:
    ids = Ids(998, 998)
    f = Entry("/sandbox/a", "file", 0o600, "sandbox", content=b"data")
    d = Entry("/sandbox/d", "dir", 0o700, "sandbox", recursive_owner=True)
    link = Entry("/sandbox/l", "symlink", link="/sandbox/a")
    write = Write(remove=["/sandbox/a"], members=[(f, ids), (link, None)], fixups=[(f, ids), (d, ids), (link, None)])
    g = Entry("/sandbox/b", "file", 0o600, "sandbox", content=b"more")
    write.fixups.append((g, ids))
    # One chown and one chmod per distinct owner and mode, however many paths share them.
    assert write.args() == [
        "rm",
        "/sandbox/a",
        "tar",
        "ownr",
        "998:998",
        "/sandbox/d",
        "own",
        "998:998",
        "2",
        "/sandbox/a",
        "/sandbox/b",
        "mode",
        "00600",  # five digits: GNU chmod clears a directory's setgid bit only so
        "2",
        "/sandbox/a",
        "/sandbox/b",
        "mode",
        "00700",
        "1",
        "/sandbox/d",
    ]
    stream = write.stream()
    assert stream is not None
    with tarfile.open(fileobj=io.BytesIO(stream)) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == ["sandbox/a", "sandbox/l"]
        assert (members[0].uid, members[0].mode, members[0].uname) == (998, 0o600, "")
        assert members[1].linkname == "/sandbox/a"
        extracted = tar.extractfile(members[0])
        assert extracted is not None and extracted.read() == b"data"


def test_no_members_means_no_stream() -> None:
    assert Write([], [], []).stream() is None
    assert build_tar([]) != b""
