from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from clawguard.entries import Entry, Ids, Inspection
from clawguard.errors import TargetError
from clawguard.sandboxfs import (
    DESCRIBE,
    INSPECT_SCRIPT,
    ProtocolError,
    SandboxCommandFailed,
    UserTable,
    Write,
    build_tar,
    inspect_args,
    parse_inspection,
    parse_sha256sum,
    path_arg,
)


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


def _userland(kind: str, tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    """The shell to run a script with, and its PATH: the host's (dash and GNU coreutils) or
    busybox's applets alone."""
    if kind == "gnu":
        return ["sh"], {"PATH": "/usr/bin:/bin"}
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.skip("busybox not installed")
    bin_dir = tmp_path / "busybox-bin"
    if not bin_dir.exists():
        bin_dir.mkdir()
        for applet in ("sh", "stat", "sha256sum", "find", "readlink", "printf", "tar", "chown", "chmod", "rm", "od"):
            (bin_dir / applet).symlink_to(busybox)
    return [str(bin_dir / "sh")], {"PATH": str(bin_dir)}


def _inspect(kind: str, tmp_path: Path, args: list[str]) -> Inspection:
    shell, env = _userland(kind, tmp_path)
    argv = [*shell, "-c", INSPECT_SCRIPT, "sh", DESCRIBE, *args]
    done = subprocess.run(argv, capture_output=True, env=env, check=False)
    assert done.returncode == 0, done.stderr
    return parse_inspection(done.stdout)


@pytest.mark.parametrize("userland", ["gnu", "busybox"])
def test_inspect_script_on_a_real_tree(tmp_path: Path, userland: str) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "tree" / "sub").mkdir(parents=True)
    (tmp_path / "tree" / "f").write_text("hi\n")
    (tmp_path / "tree" / "l").symlink_to("f")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    args = [f"R:{tmp_path}/tree", f"P:{tmp_path}/link", f"P:{tmp_path}/link/x", f"P:{tmp_path}/missing"]
    found = _inspect(userland, tmp_path, args)
    tree = found.found
    assert tree[f"{tmp_path}/tree"].kind == "dir"
    assert tree[f"{tmp_path}/tree/sub"].kind == "dir"
    assert tree[f"{tmp_path}/tree/f"].sha256 == "98ea6e4f216f2fb4b69fff9b3a44842c38686ca685f3f55dc48c5d3fb1107be4"
    assert tree[f"{tmp_path}/tree/l"].link == "f"
    assert tree[f"{tmp_path}/link"].kind == "symlink"
    assert f"{tmp_path}/missing" not in tree
    assert found.unsafe == {f"{tmp_path}/link/x": str((tmp_path / "real").resolve())}


def _same(data: bytes, found: bytes) -> bool:
    return data == found


@pytest.mark.parametrize("userland", ["gnu", "busybox"])
def test_many_paths_are_described_in_batches_all_of_them(tmp_path: Path, userland: str) -> None:
    """Named paths are described 256 at a time, each kept in a variable of its own: the
    argument list is never rebuilt per path (that made 4000 paths cost 7 CPU-s)."""
    files = []
    for number in range(600):
        path = tmp_path / f"d{number % 7}" / f"f {number}"
        path.parent.mkdir(exist_ok=True)
        path.write_text(str(number))
        files.append(path)
    found = _inspect(userland, tmp_path, inspect_args(Entry(str(p), "file", content=b"") for p in files)).found
    assert len(found) == 600
    for number, path in enumerate(files):
        assert found[str(path)].sha256 == hashlib.sha256(str(number).encode()).hexdigest()


def test_paths_below_a_walked_tree_are_not_named_again() -> None:
    tree = Entry("/s/skills/a", "dir", exact=True)
    inside = [Entry("/s/skills/a/SKILL.md", "file", content=b""), Entry("/s/skills/a/x/y.sh", "file", content=b"")]
    beside = Entry("/s/skills/ab/SKILL.md", "file", content=b"")  # a sibling whose name starts the same
    assert inspect_args([tree, *inside, beside]) == ["R:/s/skills/a", "P:/s/skills/ab/SKILL.md"]


def test_inspect_args_ask_for_contents_only_when_told() -> None:
    judged = Entry("/s/openclaw.json", "file", content=b"{}", equivalent=_same)
    tree = Entry("/s/skills", "dir", exact=True)
    assert inspect_args([judged, tree]) == ["P:/s/openclaw.json", "R:/s/skills"]
    assert inspect_args([judged, tree], contents=True) == ["C:/s/openclaw.json", "R:/s/skills"]
    # A path asked for twice gets the most: a tree below a judged file is still walked.
    assert inspect_args([judged, Entry("/s/openclaw.json", "dir", exact=True)], contents=True) == ["R:/s/openclaw.json"]


@pytest.mark.parametrize("userland", ["gnu", "busybox"])
def test_the_inspector_reads_judged_files_in_the_same_exec(tmp_path: Path, userland: str) -> None:
    json_file, binary, odd = tmp_path / "openclaw.json", tmp_path / "bin", tmp_path / "new\nline\n"
    json_file.write_bytes(b'{"gateway": {"port": 18789}}\n')
    binary.write_bytes(bytes(range(256)) * 3)  # NULs and every other byte survive
    odd.write_bytes(b"")
    (tmp_path / "dir").mkdir()
    (tmp_path / "link").symlink_to(json_file)
    specs = [json_file, binary, odd, tmp_path / "dir", tmp_path / "link", tmp_path / "missing"]
    found = _inspect(userland, tmp_path, [f"C:{path_arg(str(p))}" for p in specs])
    assert found.contents == {
        str(json_file): json_file.read_bytes(),
        str(binary): binary.read_bytes(),
        str(odd): b"",
    }  # not the directory, not through the symlink, not the missing file
    assert found.found[str(tmp_path / "link")].kind == "symlink"
    assert found.found[str(binary)].sha256 == hashlib.sha256(binary.read_bytes()).hexdigest()


def test_content_read_after_a_change_stays_unread() -> None:
    """od runs after sha256sum: bytes that do not hash to what was described are dropped."""
    digest = hashlib.sha256(b"old").hexdigest().encode()
    batch = b"B\0" + b"1\0/a\0" + b"81a4 0 0 3\n\0H\0 1\0" + digest + b"  /a\n\0"
    assert parse_inspection(batch + b"C\0/a\0 6f 6c 64\n\0" + b"0\0").contents == {"/a": b"old"}
    assert parse_inspection(batch + b"C\0/a\0 6e 65 77\n\0" + b"0\0").contents == {}
    assert parse_inspection(batch + b"C\0/a\0\0" + b"1\0").contents == {}  # gone before od read it
    with pytest.raises(ProtocolError, match="not a hex dump"):
        parse_inspection(batch + b"C\0/a\0zz\0" + b"0\0")


# Every kind of name Linux allows that a line- or tab-based reply would garble.
HOSTILE = [
    "notes\\2024.md",  # GNU sha256sum escapes a backslash
    "new\nline",
    "ends with newline\n",
    "\nstarts with newline",
    "tab\there",
    "carriage\rreturn",
    "\\",
    "-leading-dash",
    "--",
    " spaces  around ",
    "quotes ' and \"",
    "$(touch pwned) `touch pwned`; *?[a]",
    "caf\u00e9 \u2603",
    os.fsdecode(b"latin1-\xe9-\xff\xfe"),
    os.fsdecode(b"\x1b[31mred\x1b[0m"),
    "x" * 255,
    os.fsdecode(b"\xc3" * 255),
]


def _hostile_tree(root: Path) -> dict[str, bytes]:
    """A directory holding every HOSTILE name as a file, a directory with a file inside,
    and a symlink whose target is that name; the content of each file, by path."""
    contents: dict[str, bytes] = {}
    root.mkdir()
    for number, name in enumerate(HOSTILE):
        data = f"file {number}\n".encode()
        (root / name).write_bytes(data)
        contents[str(root / name)] = data
    for name in HOSTILE[:6]:
        (root / "dirs").mkdir(exist_ok=True)
        (root / "dirs" / name).mkdir()
        (root / "dirs" / name / name).write_bytes(b"inside")
        contents[str(root / "dirs" / name / name)] = b"inside"
        (root / "links").mkdir(exist_ok=True)
        (root / "links" / (name + ".lnk")).symlink_to(name)
    return contents


@pytest.mark.parametrize("userland", ["gnu", "busybox"])
def test_every_name_survives_the_inspector(tmp_path: Path, userland: str) -> None:
    contents = _hostile_tree(tmp_path / "t")
    paths = [str(tmp_path / "t" / name) for name in HOSTILE]
    # Recursively, through find; and each path named by itself, through the arguments.
    for args in ([f"R:{path_arg(str(tmp_path / 't'))}"], [f"P:{path_arg(p)}" for p in paths]):
        found = _inspect(userland, tmp_path, args).found
        for path in paths:
            assert found[path].kind == "file", path
            assert found[path].sha256 == hashlib.sha256(contents[path]).hexdigest(), path
    found = _inspect(userland, tmp_path, [f"R:{tmp_path}/t"]).found
    assert len(found) == 1 + len(HOSTILE) + 2 + 6 * 3
    for name in HOSTILE[:6]:
        assert found[str(tmp_path / "t" / "dirs" / name)].kind == "dir"
        assert found[str(tmp_path / "t" / "links" / (name + ".lnk"))].link == name
    assert not (tmp_path / "pwned").exists()


def test_a_path_that_is_not_utf8_travels_escaped_and_any_other_as_itself() -> None:
    assert path_arg("/sandbox/a b\\c\n") == "/sandbox/a b\\c\n"
    assert path_arg("/s/" + os.fsdecode(b"\xff")) == "%/s/\\0377"
    assert path_arg(os.fsdecode(b"/a\xff\\%")) == "%/a\\0377\\0134\\0045"


def test_sha256sum_records_are_read_by_the_names_asked_for() -> None:
    digest = "ab" * 32
    names = [b"plain", b"new\nline", b"back\\slash", b"cr\rx"]
    busybox = b"".join(digest.encode() + b"  " + name + b"\n" for name in names)
    assert parse_sha256sum(busybox, names) == [digest] * 4
    gnu = f"{digest}  plain\n\\{digest}  new\\nline\n\\{digest}  back\\\\slash\n\\{digest}  cr\\rx\n".encode()
    assert parse_sha256sum(gnu, names) == [digest] * 4
    for bad in (busybox[:-1], busybox + b"more", busybox.replace(b"plain", b"other")):
        with pytest.raises(ProtocolError):
            parse_sha256sum(bad, names)


@pytest.mark.parametrize(
    "reply",
    [
        b"garbage",  # not NUL-terminated
        b"X\0",  # an unknown record
        b"B\0" + b"2\0a\0",  # cut short
        b"B\0" + b"1\0a\0" + b"81a4 0 0\n\0H\0\0\0",  # a stat line short of a field
        b"B\0" + b"1\0a\0" + b"81a4 0 0 1\n\0H\0 2\0\0",  # a hash for a path outside the batch
        b"B\0" + b"1\0a\0" + b"81a4 0 0 1\n81a4 0 0 1\n\0H\0\0\0",  # two stat lines for one path
    ],
)
def test_a_reply_that_does_not_parse_is_a_target_error(reply: bytes) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_inspection(reply)
    assert isinstance(caught.value, TargetError) and isinstance(caught.value, SandboxCommandFailed)


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
