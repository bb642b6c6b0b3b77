from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pytest

from clawguard.entries import Entry, Ids, Inspection, Observed
from clawguard.errors import TargetError
from clawguard.sandboxfs import (
    APPLY_SCRIPT,
    DESCRIBE,
    INSPECT_SCRIPT,
    NeedsRoot,
    ProtocolError,
    SandboxCommandFailed,
    SandboxFS,
    UserTable,
    Write,
    WriteRefused,
    build_tar,
    inspect_args,
    parse_inspection,
    parse_sha256sum,
    path_arg,
)
from clawguard.targets.base import ExecResult


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
        for applet in (
            *("sh", "stat", "sha256sum", "find", "readlink", "printf", "tar", "chown", "chmod", "rm", "od"),
            *("mktemp", "mv", "mkdir", "rmdir", "id"),  # the write's
        ):
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


@pytest.mark.parametrize("userland", ["gnu", "busybox"])
def test_the_inspector_describes_the_directories_that_hold_the_paths(tmp_path: Path, userland: str) -> None:
    """Who owns the directory a path is written into decides who writes it (Write): the read
    describes each such directory, or the nearest one that exists, when no symlink leads to it."""
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "f").write_text("x")
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    args = [f"P:{tmp_path}/tree/f", f"P:{tmp_path}/missing/deeper/x", f"P:{tmp_path}/link/y"]
    found = _inspect(userland, tmp_path, args)
    assert set(found.parents) == {f"{tmp_path}/tree", str(tmp_path)}
    assert found.parents[f"{tmp_path}/tree"].kind == "dir"
    assert found.parents[f"{tmp_path}/tree"].uid == os.geteuid()
    assert f"{tmp_path}/link/y" in found.unsafe and set(found.found) == {f"{tmp_path}/tree/f"}


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


AGENT = Ids(998, 998)


def _dir(path: str, uid: int, mode: int = 0o755) -> Observed:
    return Observed(path, "dir", mode, uid, uid)


def _seen(*observed: Observed, parents: tuple[Observed, ...] = ()) -> Inspection:
    """A read that saw ``observed`` (and ``parents``: the directories holding what it was asked)."""
    return Inspection(found={o.path: o for o in observed}, parents={o.path: o for o in parents})


# NemoClaw's split layout as the read sees it: /sandbox and .openclaw-data the agent's, .openclaw root's.
SPLIT = (_dir("/sandbox", 998), _dir("/sandbox/.openclaw-data", 998), _dir("/sandbox/.openclaw", 0))


def test_write_args_and_tar() -> None:
    """The agent's own batch: removals, one tar stream, then one chmod per mode (five digits) and
    one chown per owner, however many paths share them; no chown to the agent itself."""
    f = Entry("/sandbox/a", "file", 0o600, "sandbox", content=b"data")
    d = Entry("/sandbox/d", "dir", 0o700, "sandbox")
    link = Entry("/sandbox/l", "symlink", link="/sandbox/a")
    g = Entry("/sandbox/b", "file", 0o600, "sandbox", content=b"more")
    staff = Ids(998, 50)
    h = Entry("/sandbox/h", "file", 0o600, "sandbox:staff", content=b"h")
    i = Entry("/sandbox/i", "file", 0o600, "sandbox:staff", content=b"i")
    seen = _seen(
        Observed("/sandbox/a", "file", 0o644, 998, 998),
        _dir("/sandbox/d", 998),
        Observed("/sandbox/b", "file", 0o644, 998, 998),
        Observed("/sandbox/h", "file", 0o600, 998, 998),
        Observed("/sandbox/i", "file", 0o600, 998, 998),
        parents=(_dir("/sandbox", 998),),
    )
    write = Write(
        remove=["/sandbox/a"],
        members=[(f, AGENT), (link, None)],
        fixups=[(f, AGENT), (d, AGENT), (link, None), (g, AGENT), (h, staff), (i, staff)],
        agent=AGENT,
        seen=seen,
    )
    assert write.agent_args() == [
        "rm",
        "/sandbox/a",
        "tar",
        "own",
        "998:50",
        "2",
        "/sandbox/h",
        "/sandbox/i",
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
    assert write.root_args() == [] and write.root_paths() == [] and not write.needs_root
    assert write.root_stream() is None
    stream = write.agent_stream()
    assert stream is not None
    with tarfile.open(fileobj=io.BytesIO(stream)) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == ["sandbox/a", "sandbox/l"]
        assert (members[0].uid, members[0].mode, members[0].uname) == (998, 0o600, "")
        assert members[1].linkname == "/sandbox/a" and members[1].uid == 998  # the agent's, made by it
        extracted = tar.extractfile(members[0])
        assert extracted is not None and extracted.read() == b"data"


def test_no_members_means_no_stream() -> None:
    assert Write([], [], []).agent_stream() is None and Write([], [], []).root_stream() is None
    assert build_tar([]) != b""


def test_a_write_is_split_by_who_may_make_each_change() -> None:
    """What lies in the agent's directories is the agent's to write; root only writes in a
    directory that is root's alone (openclaw.json, the links beside it, a file the agent owns
    there), and changes a directory's own owner by entering it: each in a block that enters and
    checks that directory first. New contents before owners and modes; deep before shallow."""
    config = Entry("/sandbox/.openclaw/openclaw.json", "file", 0o444, "root", content=b"{}")
    link = Entry("/sandbox/.openclaw/exec-approvals.json", "symlink", link="/sandbox/.openclaw-data/x.json")
    approvals = Entry("/sandbox/.openclaw/approvals.json", "file", 0o600, "sandbox", content=b"{}")
    telegram = Entry("/sandbox/.openclaw-data/telegram", "dir", None, "sandbox", recursive_owner=True)
    skill = Entry("/sandbox/.openclaw-data/skills/a/SKILL.md", "file", 0o644, "sandbox", content=b"#")
    seen = _seen(
        Observed(config.path, "file", 0o444, 0, 0),
        _dir(telegram.path, 0),
        Observed(telegram.path + "/offset.json", "file", 0o644, 0, 0),
        parents=SPLIT,
    )
    root = Ids(0, 0)
    write = Write(
        remove=[config.path],
        members=[(config, root), (link, None), (approvals, AGENT), (skill, AGENT)],
        fixups=[(config, root), (link, None), (approvals, AGENT), (telegram, AGENT), (skill, AGENT)],
        agent=AGENT,
        seen=seen,
    )
    assert write.root_args() == [
        "tar",
        "in",
        "/sandbox/.openclaw",
        "rm",
        config.path,
        "put",
        approvals.path,
        "put",
        link.path,
        "put",
        config.path,
        "own",
        "998:998",
        approvals.path,
        "mode",
        "00600",
        approvals.path,
        "mode",
        "00444",
        config.path,
        "at",
        "/sandbox/.openclaw-data",
        "tree",
        "998:998",
        telegram.path,
    ]
    assert write.root_paths() == sorted([config.path, link.path, approvals.path, telegram.path])
    assert write.needs_root and not write.refused
    assert write.agent_args() == ["tar", "mode", "00644", "1", skill.path]
    stream = write.root_stream()
    assert stream is not None
    with tarfile.open(fileobj=io.BytesIO(stream)) as tar:
        assert sorted(m.name for m in tar.getmembers()) == sorted(e.path.lstrip("/") for e in (config, link, approvals))


def test_what_cannot_be_written_safely_is_refused_by_path() -> None:
    """An entry another user must own, in a directory the agent can write (the agent could swap
    it for a link to any file between a check and a chown); a directory neither the agent's nor
    root's alone. Refused before any exec, each naming its path."""
    mine = Entry("/sandbox/.openclaw-data/root.txt", "file", 0o644, "root", content=b"x")
    shared = Entry("/sandbox/shared/x.txt", "file", 0o644, "sandbox", content=b"x")
    seen = _seen(parents=(*SPLIT, _dir("/sandbox/shared", 0, 0o777)))
    write = Write([], [(mine, Ids(0, 0)), (shared, AGENT)], [(mine, Ids(0, 0)), (shared, AGENT)], AGENT, seen)
    assert write.refused == {
        mine.path: f"refused: {mine.path}: to be owned by 0:0 in /sandbox/.openclaw-data, a directory the "
        "sandbox user can write: it cannot be written there safely",
        shared.path: f"refused: {shared.path}: /sandbox/shared (0:0, mode 0777) is neither the sandbox user's "
        "nor a root-owned directory nobody else may write: nothing can be written there safely",
    }


def test_someone_elses_file_in_the_agents_directory_is_written_anew_by_the_agent() -> None:
    """A root-owned SOUL.md in the agent's workspace: root will not chown it there (a link to
    another file could stand in its place by then); the agent replaces it with its own."""
    soul = Entry("/sandbox/.openclaw-data/workspace/SOUL.md", "file", 0o644, "sandbox", content=b"soul")
    seen = _seen(Observed(soul.path, "file", 0o644, 0, 0), parents=(_dir("/sandbox/.openclaw-data/workspace", 998),))
    write = Write([], [], [(soul, AGENT)], AGENT, seen)
    assert write.agent_args() == ["rm", soul.path, "tar", "mode", "00644", "1", soul.path]
    assert not write.needs_root


def test_without_the_agent_every_change_is_roots_and_checked() -> None:
    entry = Entry("/sandbox/.openclaw-data/x", "file", 0o644, content=b"x")
    write = Write([], [(entry, None)], [(entry, None)])  # nothing read, nobody to write as
    assert write.agent_args() == []
    assert write.root_args() == ["tar", "in", "/sandbox/.openclaw-data", "put", entry.path, "mode", "00644", entry.path]


def test_the_read_back_joins_the_agents_exec_only_when_the_agent_can_read_it_all() -> None:
    skill = Entry("/sandbox/.openclaw-data/skills/a/SKILL.md", "file", 0o644, "sandbox", content=b"#")
    secret = Entry("/sandbox/.openclaw/secret", "file", 0o600, "root", content=b"s")
    seen = _seen(
        Observed(secret.path, "file", 0o600, 0, 0), parents=(*SPLIT, _dir("/sandbox/.openclaw-data/skills/a", 998))
    )
    write = Write([], [(skill, AGENT)], [(skill, AGENT)], AGENT, seen)
    assert write.agent_reads([skill, Entry("/sandbox/.openclaw/openclaw.json", "file", 0o444, "root")])
    assert not write.agent_reads([skill, secret])


class _Runs:
    """An exec function that records what it was asked and answers with an empty success."""

    def __init__(self) -> None:
        self.argvs: list[list[str]] = []

    def __call__(self, argv: Sequence[str], stdin: bytes | None) -> ExecResult:
        self.argvs.append(list(argv))
        return ExecResult(0, b"", b"")


def test_a_root_batch_is_never_sent_to_a_target_that_is_never_root() -> None:
    config = Entry("/sandbox/.openclaw/openclaw.json", "file", 0o444, "root", content=b"{}")
    skill = Entry("/sandbox/.openclaw-data/skills/a/SKILL.md", "file", 0o644, "sandbox", content=b"#")
    seen = _seen(parents=(*SPLIT, _dir("/sandbox/.openclaw-data/skills/a", 998)))
    run, as_agent = _Runs(), _Runs()
    fs = SandboxFS(run, as_agent=as_agent, agent=AGENT, root=False)
    write = Write([], [(config, Ids(0, 0)), (skill, AGENT)], [(config, Ids(0, 0)), (skill, AGENT)], AGENT, seen)
    with pytest.raises(NeedsRoot, match=r"/sandbox/\.openclaw/openclaw\.json need root") as caught:
        fs.apply(write, [config, skill])
    assert isinstance(caught.value, TargetError)
    assert run.argvs == [] and as_agent.argvs == []  # nothing at all was sent
    # What the agent may write itself is written, as the agent, with its read-back.
    fs.apply(Write([], [(skill, AGENT)], [(skill, AGENT)], AGENT, seen), [skill])
    assert run.argvs == [] and [argv[4] for argv in as_agent.argvs] == ["agent"]
    assert "--inspect" in as_agent.argvs[0]


def test_a_refused_write_sends_nothing() -> None:
    mine = Entry("/sandbox/.openclaw-data/root.txt", "file", 0o644, "root", content=b"x")
    run, as_agent = _Runs(), _Runs()
    fs = SandboxFS(run, as_agent=as_agent, agent=AGENT)
    write = Write([], [(mine, Ids(0, 0))], [(mine, Ids(0, 0))], AGENT, _seen(parents=SPLIT))
    with pytest.raises(WriteRefused, match=r"refused: /sandbox/\.openclaw-data/root\.txt"):
        fs.apply(write, [mine])
    assert run.argvs == [] and as_agent.argvs == []


def test_root_writes_first_and_the_agent_reads_back() -> None:
    config = Entry("/sandbox/.openclaw/openclaw.json", "file", 0o444, "root", content=b"{}")
    skill = Entry("/sandbox/.openclaw-data/skills/a/SKILL.md", "file", 0o644, "sandbox", content=b"#")
    seen = _seen(parents=(*SPLIT, _dir("/sandbox/.openclaw-data/skills/a", 998)))
    calls: list[str] = []

    def run(argv: Sequence[str], stdin: bytes | None) -> ExecResult:
        calls.append("root:" + argv[4] + (" +read" if "--inspect" in argv else ""))
        return ExecResult(0, b"", b"")

    def as_agent(argv: Sequence[str], stdin: bytes | None) -> ExecResult:
        calls.append("agent:" + argv[4] + (" +read" if "--inspect" in argv else ""))
        return ExecResult(0, b"", b"")

    fs = SandboxFS(run, as_agent=as_agent, agent=AGENT)
    write = Write([], [(config, Ids(0, 0)), (skill, AGENT)], [(config, Ids(0, 0)), (skill, AGENT)], AGENT, seen)
    fs.apply(write, [config, skill])
    assert calls == ["root:root", "agent:agent +read"]


# ---------------------------------------------------------------------------------------------
# The root role of APPLY_SCRIPT on a real tree, on both userlands: what the agent swaps is refused.

needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="the root role on a real tree: real owners, and only they stop the agent's swaps"
)


def _observe(*paths: Path) -> list[Observed]:
    found = []
    for path in paths:
        info = path.lstat()
        kind = "dir" if path.is_dir() and not path.is_symlink() else "symlink" if path.is_symlink() else "file"
        found.append(Observed(str(path), kind, info.st_mode & 0o7777, info.st_uid, info.st_gid))  # type: ignore[arg-type]
    return found


def _box(tmp_path: Path) -> Path:
    """conf/ (root's alone, openclaw.json in it), good/ (root's, old.txt in it), data/ (the
    agent's: telegram/ root's with a file and a link to the victim in it), and victim/: root's
    bait outside the sandbox, that nothing may touch."""
    box = tmp_path.resolve() / "box"
    for sub in ("conf", "good", "data/telegram", "victim"):
        (box / sub).mkdir(parents=True)
    (box / "conf" / "openclaw.json").write_text("old")
    (box / "conf" / "openclaw.json").chmod(0o444)
    (box / "good" / "old.txt").write_text("old")
    (box / "data" / "telegram" / "offset.json").write_text("{}")
    (box / "data" / "telegram" / "link").symlink_to(box / "victim")
    (box / "victim").chmod(0o750)
    (box / "victim" / "secret").write_text("bait")
    (box / "victim" / "secret").chmod(0o640)
    os.chown(box / "data", 998, 998)
    return box


def _victim(box: Path) -> list[tuple[str, int, int, int, bytes]]:
    return [
        (str(p), p.lstat().st_mode, p.lstat().st_uid, p.lstat().st_gid, p.read_bytes() if p.is_file() else b"")
        for p in sorted([box / "victim", *(box / "victim").rglob("*")])
    ]


def _run_root(userland: str, tmp_path: Path, write: Write) -> subprocess.CompletedProcess[bytes]:
    shell, env = _userland(userland, tmp_path)
    argv = [*shell, "-c", APPLY_SCRIPT, "sh", "root", *write.root_args()]
    return subprocess.run(argv, input=write.root_stream() or b"", capture_output=True, env=env, check=False)


@needs_root
@pytest.mark.parametrize("userland", ["gnu", "busybox"])
def test_root_writes_only_in_checked_directories_on_a_real_tree(tmp_path: Path, userland: str) -> None:
    box = _box(tmp_path)
    conf, data, telegram = box / "conf", box / "data", box / "data" / "telegram"
    config = Entry(str(conf / "openclaw.json"), "file", 0o444, "root", content=b'{"new": 1}')
    approvals = Entry(str(conf / "approvals.json"), "file", 0o600, "sandbox", content=b"{}")
    link = Entry(str(conf / "skills"), "symlink", link=str(data))
    tree = Entry(str(telegram), "dir", 0o750, "sandbox", recursive_owner=True)
    seen = _seen(*_observe(conf / "openclaw.json", telegram, *telegram.iterdir()), parents=tuple(_observe(conf, data)))
    root = Ids(0, 0)
    write = Write(
        remove=[config.path],
        members=[(config, root), (approvals, AGENT), (link, None)],
        fixups=[(config, root), (approvals, AGENT), (link, None), (tree, AGENT)],
        agent=AGENT,
        seen=seen,
    )
    before = _victim(box)
    done = _run_root(userland, tmp_path, write)
    assert done.returncode == 0, done.stderr
    assert (conf / "openclaw.json").read_bytes() == b'{"new": 1}'
    assert (conf / "openclaw.json").stat().st_mode & 0o7777 == 0o444
    info = (conf / "approvals.json").stat()
    assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (998, 998, 0o600)
    assert os.readlink(conf / "skills") == str(data)
    for path in (telegram, telegram / "offset.json", telegram / "link"):
        assert (path.lstat().st_uid, path.lstat().st_gid) == (998, 998), path  # the link itself, not its target
    assert telegram.stat().st_mode & 0o777 == 0o750
    assert _victim(box) == before
    assert not any(Path(tempfile.gettempdir()).glob("tmp.*/" + str(box).lstrip("/")))  # the staging directory is gone


@needs_root
@pytest.mark.parametrize("userland", ["gnu", "busybox"])
def test_a_swapped_parent_is_refused_before_anything_is_done(tmp_path: Path, userland: str) -> None:
    """The agent swapped the directory openclaw.json goes into for a link to the victim
    after the read: the batch is refused, naming it, and nothing of it is done."""
    box = _box(tmp_path)
    conf, good = box / "conf", box / "good"
    config = Entry(str(conf / "openclaw.json"), "file", 0o444, "root", content=b"{}")
    seen = _seen(*_observe(good / "old.txt", conf / "openclaw.json"), parents=tuple(_observe(conf, good)))
    write = Write([str(good / "old.txt"), config.path], [(config, Ids(0, 0))], [(config, Ids(0, 0))], AGENT, seen)
    conf.rename(box / "conf.real")
    conf.symlink_to(box / "victim")
    before = _victim(box)
    done = _run_root(userland, tmp_path, write)
    assert done.returncode == 4
    assert f"refused: {conf} is not where it was read (a symlink or swapped path?)" in done.stderr.decode()
    assert (good / "old.txt").exists()  # checked first: nothing of the batch was done
    assert _victim(box) == before
    assert (box / "conf.real" / "openclaw.json").read_text() == "old"


@needs_root
@pytest.mark.parametrize("userland", ["gnu", "busybox"])
def test_root_refuses_to_write_in_a_directory_the_agent_can_write(tmp_path: Path, userland: str) -> None:
    """A read that says a directory is root's alone when it is not (or no read at all): the
    check on the directory entered refuses."""
    box = _box(tmp_path)
    data = box / "data"
    entry = Entry(str(data / "new.txt"), "file", 0o644, "root", content=b"x")
    stale = Observed(str(data), "dir", 0o755, 0, 0)
    for write in (
        Write([], [(entry, None)], [(entry, None)], AGENT, _seen(parents=(stale,))),
        Write([], [(entry, None)], []),
    ):
        done = _run_root(userland, tmp_path, write)
        assert done.returncode == 4
        assert (
            f"refused: {data} is not a root-owned directory the agent cannot write (a symlink or swapped path?)"
            in done.stderr.decode()
        )
        assert not (data / "new.txt").exists()


@needs_root
@pytest.mark.parametrize("userland", ["gnu", "busybox"])
def test_giving_a_tree_away_refuses_what_the_agent_could_swap(tmp_path: Path, userland: str) -> None:
    """Below the tree, a root-owned file in a directory the agent already owns: chowning it
    there would chown whatever the agent put in its place. Refused, by name."""
    box = _box(tmp_path)
    telegram = box / "data" / "telegram"
    (telegram / "mine").mkdir()
    os.chown(telegram / "mine", 998, 998)
    (telegram / "mine" / "roots.json").write_text("{}")
    tree = Entry(str(telegram), "dir", None, "sandbox", recursive_owner=True)
    seen = _seen(*_observe(telegram, *telegram.rglob("*")), parents=tuple(_observe(box / "data")))
    done = _run_root(userland, tmp_path, Write([], [], [(tree, AGENT)], AGENT, seen))
    assert done.returncode == 4
    assert f"refused: {telegram}/mine/roots.json is someone else's" in done.stderr.decode()
    assert (telegram / "mine" / "roots.json").stat().st_uid == 0


@needs_root
@pytest.mark.parametrize("userland", ["gnu", "busybox"])
def test_removing_and_changing_a_directory_never_follows_a_link(tmp_path: Path, userland: str) -> None:
    """A root-owned directory the agent cannot empty itself is removed by root name by name,
    in directories entered and checked: the link to the victim inside goes, not the victim.
    A directory's own mode is changed by entering it: swapped for a link, it is refused."""
    box = _box(tmp_path)
    data, telegram = box / "data", box / "data" / "telegram"
    (telegram / "deep").mkdir()
    (telegram / "deep" / "link").symlink_to(box / "victim" / "secret")
    seen = _seen(*_observe(telegram, *telegram.rglob("*")), parents=tuple(_observe(data)))
    before = _victim(box)
    done = _run_root(userland, tmp_path, Write([str(telegram)], [], [], AGENT, seen))
    assert done.returncode == 0, done.stderr
    assert not telegram.exists() and _victim(box) == before
    (data / "skills").mkdir()
    seen = _seen(*_observe(data / "skills"), parents=tuple(_observe(data)))
    mode = Write([], [], [(Entry(str(data / "skills"), "dir", 0o700), None)], AGENT, seen)
    assert mode.root_args() == ["at", str(data), "dir", "-", "00700", str(data / "skills")]
    (data / "skills").rmdir()
    (data / "skills").symlink_to(box / "victim")
    done = _run_root(userland, tmp_path, mode)
    assert done.returncode == 4 and f"refused: {data / 'skills'} is not where it was read" in done.stderr.decode()
    assert _victim(box) == before
