from __future__ import annotations

import io
import os
import tarfile
import time
from pathlib import Path

import pytest

from clawguard import ConfigError, parse_config
from clawguard.agent import Version, capabilities
from clawguard.converge import converge
from clawguard.entries import Entry, Ids
from clawguard.errors import TargetError
from clawguard.persist import (
    DAY,
    HOUR,
    Capture,
    CaptureStore,
    CaptureTooLarge,
    Manifest,
    PersistSet,
    Retention,
    Said,
    archive_wins,
    capture,
    covered,
    default_paths,
    live_pod,
    read_members,
    set_persist_state,
    stale_journals,
)
from clawguard.plan import build_plan
from clawguard.restore import PERSISTED
from clawguard.state import StateStore
from clawguard.targets.base import ExecResult, Instance, OutputTooLarge, Target

from .chroot_sandbox import ChrootTarget, chown, context, make_sandbox_root, needs_root, owner, pod_of, processes_in
from .conftest import basic_config

WORKSPACE = "sandbox/.openclaw-data/workspace"
OFFSET = "sandbox/.openclaw-data/telegram/update-offset-default.json"


def _tar(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for info, data in members:
            info.size = len(data) if info.isfile() else 0
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return buffer.getvalue()


def _info(name: str, kind: bytes = tarfile.REGTYPE, **attrs: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.uid = info.gid = 998
    for key, value in attrs.items():
        setattr(info, key, value)
    return info


def test_covered_matches_the_path_and_below_with_globs() -> None:
    assert covered("/sandbox/a/memory", "/sandbox/a/memory")
    assert covered("/sandbox/a/memory/2026.md", "/sandbox/a/memory")
    assert covered("/sandbox/a/workspace-bob/MEMORY.md", "/sandbox/a/workspace-*/MEMORY.md")
    assert not covered("/sandbox/a/memory-old", "/sandbox/a/memory")
    assert not covered("/sandbox/a", "/sandbox/a/memory")
    assert covered("/sandbox/a/x/y", "/sandbox/a/*")


def test_default_persist_paths_follow_the_layout_and_the_agent(archive: Path) -> None:
    config = parse_config(basic_config(archive, "    layout: {workspace: /sandbox/ws}\n"), "c.yaml")
    layout = config.sandboxes["my-assistant"].layout
    data, home = "/sandbox/.openclaw-data", "/sandbox/.openclaw"
    # The version not known (a stand-in, no `openclaw`): what every era keeps in the same place.
    assert default_paths(layout.resolve("split")) == [
        f"{data}/telegram/update-offset-*.json",
        "/sandbox/ws/MEMORY.md",
        "/sandbox/ws/memory",
    ]
    # A known version: everything its own backup carries but caches, logs and temporaries.
    carried = [
        "/sandbox/ws",
        f"{data}/workspace-*",
        f"{data}/agents",
        f"{data}/identity",
        f"{data}/devices",
        f"{data}/cron",
        f"{data}/credentials",
        f"{data}/skills",
        f"{data}/canvas",
        f"{home}/state",
        f"{home}/.env",
        f"{home}/workspace-attestations",
        f"{home}/config-journal-fingerprint.key",
    ]
    left_out = [
        f"!{data}/agents/*/agent/tmp",
        f"!{data}/agents/*/agent/.tmp",
        f"!{data}/cron/runs",
        "!*.sock",
        "!*.pid",
        "!*.tmp",
        "!*.lock",
        "!*.lock.sqlite",
        "!*-lock.sqlite",
    ]
    # Until 2026.6.1 the telegram offset is a file per account; from then on a row of the state database.
    assert default_paths(layout.resolve("split"), capabilities(Version(2026, 3, 31))) == [
        *carried,
        f"{data}/telegram/update-offset-*.json",
        *left_out,
    ]
    flat = [p.replace(data, home) for p in carried + left_out]
    assert default_paths(layout.resolve("flat"), capabilities(Version(2026, 9, 6))) == flat
    # Planned from the config alone, the version is not known.
    assert build_plan(config.sandboxes["my-assistant"]).persist[0].endswith("update-offset-*.json")


def test_the_archive_wins_over_the_default_set(archive: Path) -> None:
    """What the archive restores is left out of the agent's state: SOUL.md, its credential
    files (the agent's own beside them are carried), its skills; nothing collides."""
    config = parse_config(
        basic_config(archive, "    layout: {style: flat}\n    agent: {version: 2026.9.6}\n"), "c.yaml"
    )
    plan = build_plan(config.sandboxes["my-assistant"])
    home = "/sandbox/.openclaw"
    wanted = PersistSet.of(plan.persist)
    assert f"{home}/workspace" in wanted.include and f"{home}/agents" in wanted.include
    # credentials/ is the archive's directory: its children are carried, not it.
    assert f"{home}/credentials" not in wanted.include
    assert [p for p in wanted.include if p.startswith(f"{home}/credentials")] == [
        f"{home}/credentials/*",
        f"{home}/credentials/.[!.]*",
        f"{home}/credentials/..?*",
    ]
    for path in (
        f"{home}/workspace/SOUL.md",
        f"{home}/credentials/proxmox.env",
        f"{home}/skills/proxmox",
        f"{home}/skills/proxmox/scripts/list-vms.sh",
        f"{home}/openclaw.json",
        f"{home}/state/openclaw.sqlite-wal",
        f"{home}/agents/main/agent/tmp/x.json",
        f"{home}/agents/main/sessions/sessions.json.lock",
        # The lock files of the old pod's processes (2026.9.x): SQLite files, not databases.
        f"{home}/state/gateway-lifecycle.623d3fc2.lock.sqlite",
        f"{home}/state/openclaw-state-locks-998/state-handles.623d3fc2.lock.sqlite",
        f"{home}/agents/main/agent/memory.sqlite.generation-lock.sqlite",
        f"{home}/agents/main/agent/memory.sqlite.reindex-lock.sqlite",
        f"{home}/workspace/.openclaw/device-identity.1a2b3c4d.lock.sqlite",
    ):
        assert not wanted.carried(path), path
    for path in (
        f"{home}/workspace/USER.md",
        f"{home}/workspace/memory/2026-12-06.md",
        f"{home}/credentials/whatsapp/default/creds.json",
        f"{home}/skills/agent-installed/SKILL.md",
        f"{home}/agents/main/agent/openclaw-agent.sqlite",
        f"{home}/agents/main/sessions/s1.jsonl",
        f"{home}/identity/device.json",
        f"{home}/devices/paired.json",
        f"{home}/cron/jobs.json",
        f"{home}/state/openclaw.sqlite",
        # The agent's own state and databases, whatever their names hold: none is a leftover.
        f"{home}/state/openclaw-quarantine.sqlite",
        f"{home}/agents/main/agent/memory.sqlite",
        f"{home}/agents/main/sessions/lock-screen-notes.jsonl",
        f"{home}/workspace/locksmith.sqlite",
        f"{home}/workspace/unlock.md",
        f"{home}/devices/pending.json",
        f"{home}/identity/device-auth.json",
        f"{home}/cron/jobs.json.bak",
    ):
        assert wanted.carried(path), path
    # An exclusion below another is not repeated.
    assert f"!{home}/skills/proxmox/SKILL.md" not in plan.persist and f"!{home}/skills/proxmox" in plan.persist


def test_archive_wins_escapes_names_and_drops_patterns_inside_an_exact_tree() -> None:
    entries = [
        Entry("/sandbox/ws/we[i]rd*.md", "file", 0o644, content=b"x"),
        Entry("/sandbox/skills/mine", "dir", 0o755, exact=True),
        Entry("/sandbox/ws/made", "dir", 0o755),
    ]
    result = archive_wins(["/sandbox/ws", "/sandbox/skills/mine/state", "!*.tmp"], entries)
    assert result == ["/sandbox/ws", "!*.tmp", "!/sandbox/ws/we[[]i]rd[*].md", "!/sandbox/ws/made"]
    wanted = PersistSet.of(result)
    assert not wanted.carried("/sandbox/ws/we[i]rd*.md") and wanted.carried("/sandbox/ws/weirdo.md")


def test_members_keep_the_directories_on_the_way_and_the_agent_gets_its_files_back() -> None:
    """A database restored into a new pod needs its state/ directory as the agent made it,
    and an image rebuilt with `useradd -r` may have given the sandbox user another uid."""
    data = _tar(
        (_info("sandbox/.openclaw/state", tarfile.DIRTYPE, mode=0o700), b""),
        (_info("sandbox/.openclaw/state/openclaw.sqlite", mode=0o600), b"SQLite format 3\x00"),
        (_info("sandbox/.openclaw/state/other.txt"), b"not declared"),
        (_info("sandbox/.openclaw/telegram", tarfile.DIRTYPE, uid=0, gid=0), b""),
    )
    then, now = Ids(998, 998), Ids(1234, 1234)
    members = read_members(data, ["/sandbox/.openclaw/state/openclaw.sqlite"], "/sandbox", (then, now))
    assert [(m.entry.path, m.entry.kind, m.ids) for m in members] == [
        ("/sandbox/.openclaw/state", "dir", now),
        ("/sandbox/.openclaw/state/openclaw.sqlite", "file", now),
    ]
    journals = stale_journals(members)
    assert [(e.path, e.kind) for e in journals] == [
        ("/sandbox/.openclaw/state/openclaw.sqlite-wal", "absent"),
        ("/sandbox/.openclaw/state/openclaw.sqlite-shm", "absent"),
    ]
    root_owned = read_members(data, ["/sandbox/.openclaw/telegram"], "/sandbox", (then, now))
    assert root_owned[0].ids == Ids(0, 0)  # only the sandbox user's ids move


@pytest.mark.parametrize(
    ("persist", "message"),
    [
        ("/etc/passwd", "outside the sandbox root"),
        ("/sandbox/.openclaw-data/workspace/SOUL.md", "which step 'SOUL.md' restores"),
        ("/sandbox/.openclaw-data/skills/proxmox/state", "keeps exact"),
        ("/sandbox/.openclaw-data/credentials", "restores from the archive"),
    ],
)
def test_persisted_paths_never_collide_with_the_plan(archive: Path, persist: str, message: str) -> None:
    config = parse_config(basic_config(archive, f"    persist:\n      - {persist}\n"), "c.yaml")
    with pytest.raises(ConfigError) as caught:
        build_plan(config.sandboxes["my-assistant"])
    assert message in str(caught.value)
    assert "sandboxes.my-assistant.persist[0]" in str(caught.value)
    assert str(caught.value).startswith("c.yaml:10: ")  # the line of the offending list item


def test_read_members_keeps_only_declared_paths_and_drops_hostile_ones() -> None:
    data = _tar(
        (_info("sandbox/ws/MEMORY.md", mode=0o640), b"remember"),
        (_info("sandbox/ws/memory", tarfile.DIRTYPE, mode=0o750), b""),
        (_info("sandbox/ws/memory/link", tarfile.SYMTYPE, linkname="/etc"), b""),
        (_info("sandbox/ws/memory/link/passwd"), b"through the link"),
        (_info("sandbox/ws/../../etc/shadow"), b"escape"),
        (_info("sandbox/ws/SOUL.md"), b"not declared"),
        (_info("etc/cron.d/x"), b"outside the root"),
        (_info("sandbox/ws/memory/fifo", tarfile.FIFOTYPE), b""),
    )
    members = read_members(data, ["/sandbox/ws/MEMORY.md", "/sandbox/ws/memory"], "/sandbox")
    got = {m.entry.path: (m.entry.kind, m.entry.mode, m.ids.uid) for m in members}
    assert got == {
        "/sandbox/ws/MEMORY.md": ("file", 0o640, 998),
        "/sandbox/ws/memory": ("dir", 0o750, 998),
        "/sandbox/ws/memory/link": ("symlink", None, 998),
    }
    assert members[0].entry.data() == b"remember"


def test_store_keeps_the_last_generations_and_ignores_unfinished_ones(tmp_path: Path) -> None:
    store = CaptureStore(StateStore(), "my-assistant", Retention(within=0, hourly=0, daily=0, last=2))
    infos = [_info("sandbox/ws/MEMORY.md")]
    for n in range(3):
        store.save(_tar((infos[0], f"v{n}".encode())), "a" * 64, "interval", infos)
    assert [c.generation for c in store.generations()] == [2, 3]
    (store.directory / "00000009.json").write_text("{not json")  # a crash mid-write
    (store.directory / "00000010.tar").write_bytes(b"no metadata yet")
    latest = store.latest()
    assert latest is not None and latest.generation == 3 and latest.tops == ["/sandbox/ws/MEMORY.md"]
    assert read_members(latest.read(), ["/sandbox/ws"], "/sandbox")[0].entry.data() == b"v2"
    latest.tar.write_bytes(b"damaged")
    with pytest.raises(Exception, match="checksum mismatch"):
        latest.read()


@pytest.fixture
def sandbox_root(tmp_path: Path) -> Path:
    return make_sandbox_root(tmp_path / "root")


def _agent_writes(root: Path) -> None:
    (root / WORKSPACE / "MEMORY.md").write_text("the user likes tea\n")
    (root / WORKSPACE / "memory").mkdir()
    (root / WORKSPACE / "memory" / "2026-11-22.md").write_text("talked about proxmox\n")
    (root / OFFSET).write_text('{"offset": 41}\n')
    for path in ("memory", "memory/2026-11-22.md", "MEMORY.md"):
        chown(root / WORKSPACE / path, 998, 998)
    chown(root / OFFSET, 998, 998)
    (root / OFFSET).chmod(0o600)


def test_capture_only_from_a_live_pod_and_never_empty_over_good(archive: Path, sandbox_root: Path) -> None:
    config = parse_config(basic_config(archive), "c.yaml")
    sandbox = config.sandboxes["my-assistant"]
    target = ChrootTarget(sandbox_root)
    instance = target.locate()
    _agent_writes(sandbox_root)

    pod = pod_of(target, sandbox)
    plan = build_plan(sandbox, pod.facts)

    def take() -> str:
        return capture(context(sandbox, target), plan.persist, pod, reason="test").outcome

    assert take() == "skipped"  # never restored: what this pod holds is not known to be the agent's
    set_persist_state(StateStore(), sandbox.name, live_pod=instance.id)
    assert take() == "saved"
    assert take() == "unchanged"
    latest = CaptureStore(StateStore(), sandbox.name, 5).latest()
    assert latest is not None and latest.files == 3
    assert {"/" + OFFSET, f"/{WORKSPACE}"} <= set(latest.tops)
    for path in (OFFSET, f"{WORKSPACE}/MEMORY.md"):
        (sandbox_root / path).unlink()
    import shutil

    shutil.rmtree(sandbox_root / WORKSPACE / "memory")
    assert take() == "skipped"  # an empty capture (directories alone) never replaces a good one
    assert CaptureStore(StateStore(), sandbox.name, 5).latest() == latest


@needs_root("capture's tar -c writes the owners the kernel reports: virtual ones never reach the capture")
def test_a_new_pod_gets_the_latest_capture_after_the_archive_steps(archive: Path, tmp_path: Path) -> None:
    config = parse_config(basic_config(archive, "    gateway: {enabled: false}\n"), "c.yaml")
    sandbox = config.sandboxes["my-assistant"]
    target = ChrootTarget(make_sandbox_root(tmp_path / "old"))
    first = converge(context(sandbox, target))
    assert first.ok and live_pod(StateStore(), sandbox.name) == "0" * 64
    assert all(s.name != PERSISTED for s in first.report.steps)  # nothing captured yet: nothing to restore
    _agent_writes(target.root)
    pod = pod_of(target, sandbox)
    capture(context(sandbox, pod.target), build_plan(sandbox, pod.facts).persist, pod, reason="t")

    new = ChrootTarget(make_sandbox_root(tmp_path / "new"))  # the pod restarted: wiped, new ID
    new.instance = Instance("1" * 64, "new pod")
    result = converge(context(sandbox, new))
    assert result.ok
    assert [s.name for s in result.report.steps][-1] == PERSISTED
    assert result.report.steps[-1].outcome == "changed"
    memory = new.root / WORKSPACE / "MEMORY.md"
    assert memory.read_text() == "the user likes tea\n"
    assert owner(memory) == (998, 998)
    offset = new.root / OFFSET
    assert offset.read_text() == '{"offset": 41}\n' and offset.stat().st_mode & 0o777 == 0o600
    assert owner(new.root / WORKSPACE / "memory" / "2026-11-22.md")[0] == 998
    assert live_pod(StateStore(), sandbox.name) == "1" * 64
    assert CaptureStore(StateStore(), sandbox.name, 5).latest().owner == Ids(998, 998)  # type: ignore[union-attr]

    # The agent moves on in the new pod; a second restore must not roll it back.
    (new.root / WORKSPACE / "MEMORY.md").write_text("newer\n")
    again = converge(context(sandbox, new))
    assert PERSISTED not in [s.name for s in again.report.steps]
    assert (new.root / WORKSPACE / "MEMORY.md").read_text() == "newer\n"
    latest = CaptureStore(StateStore(), sandbox.name, 5).latest()
    assert latest is not None and latest.reason == "before restore" and latest.container_id == "1" * 64


def test_a_damaged_latest_generation_falls_back_to_the_one_before(tmp_path: Path) -> None:
    store = CaptureStore(StateStore(), "my-assistant", Retention(last=5))
    infos = [_info("sandbox/ws/MEMORY.md")]
    store.save(_tar((infos[0], b"older")), "a" * 64, "interval", infos)
    newest = store.save(_tar((infos[0], b"newer")), "a" * 64, "interval", infos)
    newest.tar.write_bytes(b"torn by a disk error")
    good = store.latest_good()
    assert good is not None and good.generation == 1
    assert read_members(good.read(), ["/sandbox/ws"], "/sandbox")[0].entry.data() == b"older"


@needs_root("capture's tar -c writes the owners the kernel reports: virtual ones never reach the capture")
def test_a_rebuilt_image_with_another_uid_gets_the_agents_files_as_its_own(archive: Path, tmp_path: Path) -> None:
    """`useradd -r` may give the sandbox user another uid when the image is rebuilt;
    restored with the old uid, the agent got EACCES on its own MEMORY.md while status said healthy."""
    config = parse_config(basic_config(archive, "    gateway: {enabled: false}\n"), "c.yaml")
    sandbox = config.sandboxes["my-assistant"]
    old = ChrootTarget(make_sandbox_root(tmp_path / "old"))
    assert converge(context(sandbox, old)).ok
    _agent_writes(old.root)
    pod = pod_of(old, sandbox)
    capture(context(sandbox, pod.target), build_plan(sandbox, pod.facts).persist, pod, reason="t")

    rebuilt = ChrootTarget(make_sandbox_root(tmp_path / "new", uid=1234))
    rebuilt.instance = Instance("2" * 64, "rebuilt image")
    assert converge(context(sandbox, rebuilt)).ok
    for path in (f"{WORKSPACE}/MEMORY.md", f"{WORKSPACE}/memory", f"{WORKSPACE}/memory/2026-11-22.md", OFFSET):
        assert owner(rebuilt.root / path) == (1234, 1234), path


def test_a_capture_over_the_limit_is_stopped_in_the_pod_and_the_previous_one_stays(
    archive: Path, sandbox_root: Path
) -> None:
    """Past the limit the capture is stopped in the pod, never read whole into memory first."""
    sandbox = parse_config(basic_config(archive, "    limits: {max_persist_bytes: 1048576}\n"), "c.yaml").sandboxes[
        "my-assistant"
    ]
    target = ChrootTarget(sandbox_root)
    _agent_writes(sandbox_root)
    pod = pod_of(target, sandbox)
    plan = build_plan(sandbox, pod.facts)
    set_persist_state(StateStore(), sandbox.name, live_pod=target.instance.id)
    store = CaptureStore(StateStore(), sandbox.name, 5)
    assert capture(context(sandbox, target), plan.persist, pod, reason="t").outcome == "saved"
    previous = store.latest()
    # 64 GiB that read as zeros: tar would stream them for a minute, were it not stopped.
    big = sandbox_root / WORKSPACE / "memory" / "big.bin"
    with big.open("wb") as handle:
        handle.truncate(64 << 30)
    chown(big, 998, 998)

    with pytest.raises(CaptureTooLarge, match=r"more than 1048576 bytes, over limits.max_persist_bytes"):
        capture(context(sandbox, target), plan.persist, pod, reason="t")

    assert store.latest() == previous
    assert not [p for p in store.directory.iterdir() if p.name.startswith(".capture-")]
    deadline = time.monotonic() + 10
    while processes_in(sandbox_root) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_in(sandbox_root) == [], "the capture's tar still runs in the pod"
    big.unlink()
    # Under the limit again, it captures; memory/'s mtime moved with big.bin (within the same
    # second it did not), so the capture may or may not be a new generation: the same files.
    again = capture(context(sandbox, target), plan.persist, pod, reason="t")
    assert again.outcome in ("saved", "unchanged") and again.capture is not None
    assert previous is not None and again.capture.files == previous.files


def test_a_target_that_cannot_stream_is_still_held_to_the_limit(tmp_path: Path) -> None:
    """A target whose exec predates ``out``/``limit`` gets the whole output checked after."""

    class Old(Target):
        params: dict[str, object] = {}

        def locate(self) -> Instance:
            return Instance("a" * 64, "old")

        def exec(self, instance, argv, stdin=None, *, user=None):  # type: ignore[no-untyped-def]
            assert argv[:2] == ["sh", "-c"] and argv[4:] == ["cat", "big"]
            return ExecResult(0, b"x" * 100, b"clawguard-pid 42\nwarning\n")

    sink = io.BytesIO()
    with pytest.raises(OutputTooLarge) as caught:
        Old("s", {}).exec_limited(Instance("a" * 64, "old"), ["cat", "big"], sink, limit=99)
    assert caught.value.stderr == b"warning\n" and sink.getvalue() == b""
    done = Old("s", {}).exec_limited(Instance("a" * 64, "old"), ["cat", "big"], sink, limit=100)
    assert done == ExecResult(0, b"", b"warning\n") and sink.getvalue() == b"x" * 100


class _RecordingGateway:
    """Records how converge asks for the gateway."""

    def __init__(self) -> None:
        self.fresh: list[bool] = []

    def ensure(self, pod: object, *_args: object, fresh: bool = False, **_kwargs: object) -> object:
        from clawguard.gateway import Health

        self.fresh.append(fresh)
        return Health(True, "200", time.time())

    def prime(self, pod: object) -> None:
        """Opening the start's session ahead of a new pod's restore: nothing to do here."""

    def unprime(self) -> None:
        pass


def test_a_replaced_pod_that_was_wiped_gets_its_gateway_started_without_a_doomed_probe(
    archive: Path, tmp_path: Path
) -> None:
    """Every wiped pod skips the first probe (NemoClaw #2042), not only one a capture was
    restored into."""
    sandbox = parse_config(basic_config(archive), "c.yaml").sandboxes["my-assistant"]
    ctx = context(sandbox, ChrootTarget(make_sandbox_root(tmp_path / "root")))
    gateway = _RecordingGateway()
    ctx.gateway = gateway  # type: ignore[assignment]
    assert converge(ctx, reason="pod replaced").ok  # wiped: every step writes, nothing captured yet
    assert converge(ctx, reason="pod replaced").ok  # nothing to write: not known to be new, probe first
    assert converge(ctx, reason="daemon start").ok
    assert gateway.fresh == [True, False, False]


# ----------------------------------------------------------------------------- retention by age

MINUTE = 60
# 2026-11-02 00:00 UTC: clock hours and days start on round numbers of this.
EPOCH = 1_793_577_600.0


class Clock:
    """The time the store prunes by, moved by the test."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _generation(number: int, taken_at: float, shrunk: str = "") -> Capture:
    return Capture(number, taken_at, "a" * 64, "interval", 1, 1, "0", [], Path("/x"), shrunk=shrunk)


def test_the_age_rules_on_sixteen_days_of_captures_every_minute() -> None:
    """What the defaults keep, pruned after every capture as the store does: every minute of
    the last hour, the newest of each of the last 48 clock hours, of each of the last 14 days."""
    retention = Retention()  # the config's defaults
    assert retention == Retention(within=3600, hourly=48, daily=14, last=5)
    kept: list[Capture] = []
    end = EPOCH + 16 * DAY + 10 * HOUR + 30 * MINUTE  # day 16, 10:30
    for number, taken_at in enumerate(range(int(EPOCH), int(end) + 1, MINUTE), start=1):
        kept.append(_generation(number, taken_at))
        survivors = retention.keep(kept, taken_at)
        kept = [c for c in kept if c.generation in survivors]
    ages = sorted(end - c.taken_at for c in kept)
    assert [age for age in ages if age < HOUR] == [n * MINUTE for n in range(60)]  # every minute of the last hour
    older = [c for c in kept if end - c.taken_at >= HOUR]
    # Past the hour, one per clock hour and the newest of it (xx:59): the last 48 clock hours...
    hours = [int(c.taken_at // HOUR) for c in older]
    assert len(hours) == len(set(hours)) and all(c.taken_at % HOUR == HOUR - MINUTE for c in older)
    now_hour = int(end // HOUR)
    assert {h for h in hours if h > now_hour - 48} == set(range(now_hour - 47, now_hour - 1))  # 10:00, 09:00 within
    # ...and before those, one per day, the newest of it (23:59), for the last 14 days.
    before = [c for c in older if int(c.taken_at // HOUR) <= now_hour - 48]
    assert all(c.taken_at % DAY == DAY - MINUTE for c in before)
    days = {int(c.taken_at // DAY) for c in kept}
    assert days == set(range(int(end // DAY) - 13, int(end // DAY) + 1)) and max(ages) < 14 * DAY
    assert len(kept) <= 60 + 48 + 14


def test_a_capture_stream_of_one_pod_that_stops_keeps_its_newest() -> None:
    """Captures stop (the sandbox is gone for weeks): the newest few stay whatever their age."""
    generations = [_generation(n, EPOCH + n * MINUTE) for n in range(1, 11)]
    assert Retention().keep(generations, EPOCH + 60 * DAY) == {6, 7, 8, 9, 10}


def _memory_capture(memory: bytes, offset: int) -> tuple[bytes, list[tarfile.TarInfo]]:
    """One capture of MEMORY.md and the telegram offset file, as tar and its members."""
    infos = [_info("sandbox/ws/MEMORY.md"), _info("sandbox/tg/update-offset-default.json")]
    data = _tar((infos[0], memory), (infos[1], b'{"offset": %d}' % offset))
    return data, infos


def test_a_truncated_memory_for_hours_keeps_the_last_good_capture_and_the_older_good_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Shrunk captures never push out good ones: with keep 5 every 60 s, a truncated MEMORY.md
    replaced every good generation within five minutes. Now the shrunk captures are stored, but
    each good generation that the rules would keep without them stays: the same ones a store
    that never saw them keeps."""
    monkeypatch.setattr(os, "fsync", lambda _fd: None)  # 700 generations written: durability is not tested here
    clock = Clock(EPOCH)
    store = CaptureStore(StateStore(), "my-assistant", Retention(), clock)
    control = CaptureStore(StateStore(), "control", Retention(), clock)  # the good captures alone
    memory = b"- the user likes tea\n" * 200  # 4 KiB of the agent's memory
    offset = 0
    for minute in range(3 * 60 + 17):  # three hours and 17 minutes of good captures, one a minute
        clock.now = EPOCH + 4 * HOUR + minute * MINUTE
        offset += 1
        for each in (store, control):
            each.save(*_capture_args(memory + b"%d\n" % minute, offset), taken_at=clock.now)
    last_good = store.latest()
    assert last_good is not None and not last_good.shrunk
    for minute in range(5 * 60):  # then five hours of captures of a truncated MEMORY.md
        clock.now = last_good.taken_at + (minute + 1) * MINUTE
        offset += 1
        store.save(*_capture_args(b"", offset), taken_at=clock.now)
    control._prune()  # the control store prunes at the same time now

    generations = store.generations()
    good = [c for c in generations if not c.shrunk]
    shrunk = [c for c in generations if c.shrunk]
    assert good and good[-1] == last_good  # the last good generation is still there
    assert [c.taken_at for c in good] == [c.taken_at for c in control.generations()]  # none evicted
    assert len(good) >= 4  # the last good one and the newest of each earlier hour
    assert store.latest() == shrunk[-1]  # the agent's state now is what a new pod gets
    assert shrunk[0].shrunk == (
        f"smaller than generation {last_good.generation}: /sandbox/ws/MEMORY.md {last_good.sizes['/sandbox/ws/MEMORY.md']}"  # type: ignore[index]
        " -> 0 bytes"
    )
    assert all(c.shrunk.startswith(f"smaller than generation {last_good.generation}:") for c in shrunk)
    # Were the shrunk captures judged like any other, the newest of the truncation's hour would
    # have displaced the last good one once an hour had passed:
    plain = Retention().keep([Capture(**{**vars(c), "shrunk": ""}) for c in generations], clock.now)
    assert last_good.generation not in plain


def _capture_args(memory: bytes, offset: int) -> tuple[bytes, str, str, list[tarfile.TarInfo]]:
    data, infos = _memory_capture(memory, offset)
    return data, "a" * 64, "interval", infos


def test_after_the_longest_span_a_smaller_state_is_the_new_normal() -> None:
    """The agent did shorten its memory: once no good generation is within the rules' longest
    span, a capture is compared with nothing and is good again, and the old ones can go."""
    clock = Clock(EPOCH)
    retention = Retention(within=10 * MINUTE, hourly=2, daily=0, last=1)  # the longest span: 2 h
    store = CaptureStore(StateStore(), "my-assistant", retention, clock)
    store.save(*_capture_args(b"x" * 1000, 1))
    clock.now += MINUTE
    assert store.save(*_capture_args(b"x" * 10, 2)).shrunk.startswith("smaller than generation 1:")
    clock.now += 2 * HOUR - MINUTE
    assert store.save(*_capture_args(b"x" * 11, 3)).shrunk.startswith("smaller than generation 1:")  # 2 h: still
    # 1 is the newest good one (persist_keep over the good ones); 2 is in no kept hour any more.
    assert [c.generation for c in store.generations()] == [1, 3]
    clock.now += MINUTE
    assert store.save(*_capture_args(b"x" * 12, 4)).shrunk == ""  # past 2 h: nothing to compare with
    clock.now += HOUR
    store.save(*_capture_args(b"x" * 13, 5))
    assert [c.generation for c in store.generations()] == [4, 5]  # 1, the old good one, is gone
    assert store.save(*_capture_args(b"x" * 5, 6)).shrunk == ""  # 13 -> 5: too small to judge


def test_a_small_file_or_a_growing_one_is_not_shrunk() -> None:
    """Only a path that held at least 64 bytes and lost more than half of them counts."""
    store = CaptureStore(StateStore(), "my-assistant")
    store.save(*_capture_args(b"x" * 63, 1))
    assert store.save(*_capture_args(b"", 2)).shrunk == ""  # too small to judge
    store.save(*_capture_args(b"x" * 100, 3))
    assert store.save(*_capture_args(b"x" * 49, 4)).shrunk.endswith("/sandbox/ws/MEMORY.md 100 -> 49 bytes")
    assert store.save(*_capture_args(b"x" * 50, 5)).shrunk == ""  # half is not less than half
    assert store.save(*_capture_args(b"x" * 200, 6)).shrunk == ""  # grown


def test_retention_comes_from_the_daemon_settings_and_persist_keep_still_works(archive: Path) -> None:
    from clawguard.config import DaemonSettings

    assert Retention.from_settings(DaemonSettings.defaults()) == Retention()
    config = parse_config(
        basic_config(archive).replace(
            "sandboxes:",
            "daemon:\n  persist_keep: 20\n  persist_keep_within: 600\n  persist_keep_daily: 0\nsandboxes:",
        ),
        "c.yaml",
    )
    assert Retention.from_settings(config.daemon) == Retention(within=600, hourly=48, daily=0, last=20)
    with pytest.raises(ConfigError, match=r"c.yaml:2: daemon.persist_keep_hourly: must be at least 0"):
        parse_config(
            basic_config(archive).replace("sandboxes:", "daemon: {persist_keep_hourly: -1}\nsandboxes:"), "c.yaml"
        )


# ------------------------------------------------ the agent's whole state, read only when it changed

STATE_DB = "sandbox/.openclaw/state/openclaw.sqlite"

# A stand-in for the pod's node running SNAPSHOT_JS (`node --no-warnings SCRIPT MODE STAGE DB...`):
# it logs each call; `check` answers "nothing new" while /tmp/rows-unchanged exists; `snapshot`
# copies each database as its online backup would.
FAKE_NODE = """#!/bin/sh
shift 2
mode=$1 stage=$2; shift 2
echo "$mode" >>/tmp/node-calls
for db do
  printf 'clawguard-db {"path": "/%s", "stat": "s", "digest": "d"}\\n' "$db" >>"$stage/dbs"
  if [ "$mode" = snapshot ]; then
    mkdir -p "$stage/root/$(dirname "$db")" && cat "$db" >"$stage/root/$db" && chmod 600 "$stage/root/$db" || exit 5
  fi
done
[ "$mode" = snapshot ] || [ -e /tmp/rows-unchanged ]
"""


def _with_state_db(root: Path, content: bytes = b"SQLite format 3\x00 v1") -> None:
    (root / "tmp").chmod(0o1777)  # as in a pod (mkdir obeyed the umask)
    (root / "bin" / "node").write_text(FAKE_NODE)
    (root / "bin" / "node").chmod(0o755)
    state = root / STATE_DB
    state.parent.mkdir(mode=0o700)
    state.write_bytes(content)
    Path(f"{state}-wal").write_bytes(b"frames")
    Path(f"{state}-shm").write_bytes(b"index")
    for path in (state.parent, state, Path(f"{state}-wal"), Path(f"{state}-shm")):
        chown(path, 998, 998)
        path.chmod(0o700 if path.is_dir() else 0o600)


def _node_calls(root: Path) -> list[str]:
    calls = root / "tmp" / "node-calls"
    return calls.read_text().split() if calls.exists() else []


def test_a_capture_that_finds_nothing_new_reads_and_stores_nothing(archive: Path, sandbox_root: Path) -> None:
    sandbox = parse_config(basic_config(archive), "c.yaml").sandboxes["my-assistant"]
    target = ChrootTarget(sandbox_root)
    _agent_writes(sandbox_root)
    pod = pod_of(target, sandbox)
    plan = build_plan(sandbox, pod.facts)
    set_persist_state(StateStore(), sandbox.name, live_pod=target.instance.id)
    store = CaptureStore(StateStore(), sandbox.name, 5)

    def take() -> tuple[str, str]:
        outcome = capture(context(sandbox, target), plan.persist, pod, reason="interval")
        return outcome.outcome, outcome.reason

    assert take() == ("saved", "")
    assert take() == ("unchanged", "nothing changed in the pod since the last capture")
    assert [c.generation for c in store.generations()] == [1]
    # A change anywhere in the set (here deep in memory/) is seen, and stored.
    (sandbox_root / WORKSPACE / "memory" / "2026-11-22.md").write_text("talked about proxmox and tea\n")
    assert take() == ("saved", "")
    assert take()[0] == "unchanged"
    # The manifest is the pod's own: another pod is read whole (and is the same state).
    persist = StateStore().load(sandbox.name)["persist"]
    assert persist["manifest"]["pod"] == target.instance.id and persist["manifest"]["generation"] == 2
    other = Manifest.known(StateStore(), store, sandbox.name, "9" * 64, PersistSet.of(plan.persist))
    assert other is None
    assert Manifest.known(StateStore(), store, sandbox.name, target.instance.id, PersistSet.of(["/x"])) is None


def test_databases_travel_as_snapshots_and_a_timer_write_stores_nothing(archive: Path, sandbox_root: Path) -> None:
    """A database is copied by its online backup, never as a file with its journals; when
    only a database changed, Node.js compares its rows, and the same rows store nothing."""
    sandbox = parse_config(basic_config(archive), "c.yaml").sandboxes["my-assistant"]
    target = ChrootTarget(sandbox_root)
    _agent_writes(sandbox_root)
    _with_state_db(sandbox_root)
    pod = pod_of(target, sandbox)
    plan = build_plan(sandbox, pod.facts)
    set_persist_state(StateStore(), sandbox.name, live_pod=target.instance.id)
    store = CaptureStore(StateStore(), sandbox.name, 5)

    def take() -> str:
        return capture(context(sandbox, target), plan.persist, pod, reason="interval").outcome

    assert take() == "saved"
    assert _node_calls(sandbox_root) == ["snapshot"]
    latest = store.latest()
    assert latest is not None
    members = {m.entry.path: m for m in read_members(latest.read(), plan.persist, "/sandbox")}
    assert members["/" + STATE_DB].entry.data() == b"SQLite format 3\x00 v1"
    assert members["/" + STATE_DB].entry.mode == 0o600
    assert members["/sandbox/.openclaw/state"].entry.mode == 0o700  # its directory, as the agent made it
    with tarfile.open(latest.tar) as tar:
        assert not [n for n in tar.getnames() if n.endswith(("-wal", "-shm"))]

    assert take() == "unchanged"  # nothing moved: no Node.js at all
    assert _node_calls(sandbox_root) == ["snapshot"]

    wal = sandbox_root / f"{STATE_DB}-wal"
    (sandbox_root / "tmp" / "rows-unchanged").touch()
    wal.write_bytes(b"frames of a renewed lease")  # the gateway's timer write
    assert take() == "unchanged"
    assert _node_calls(sandbox_root) == ["snapshot", "check"]
    assert take() == "unchanged"  # and the moved listing is the known one now
    assert _node_calls(sandbox_root) == ["snapshot", "check"]
    assert [c.generation for c in store.generations()] == [1]

    (sandbox_root / "tmp" / "rows-unchanged").unlink()
    (sandbox_root / STATE_DB).write_bytes(b"SQLite format 3\x00 v2")
    wal.write_bytes(b"a new paired device")
    assert take() == "saved"
    assert _node_calls(sandbox_root) == ["snapshot", "check", "check", "snapshot"]
    (sandbox_root / WORKSPACE / "MEMORY.md").write_text("the user likes green tea\n")
    assert take() == "saved"  # a file changed: the databases go along, without a comparison first
    assert _node_calls(sandbox_root)[-1:] == ["snapshot"] and len(_node_calls(sandbox_root)) == 5


def test_a_failed_snapshot_stores_nothing(archive: Path, sandbox_root: Path) -> None:
    sandbox = parse_config(basic_config(archive), "c.yaml").sandboxes["my-assistant"]
    target = ChrootTarget(sandbox_root)
    _agent_writes(sandbox_root)
    _with_state_db(sandbox_root)
    (sandbox_root / "bin" / "node").write_text("#!/bin/sh\necho 'database disk image is malformed' >&2\nexit 5\n")
    pod = pod_of(target, sandbox)
    plan = build_plan(sandbox, pod.facts)
    set_persist_state(StateStore(), sandbox.name, live_pod=target.instance.id)
    with pytest.raises(TargetError, match="database disk image is malformed"):
        capture(context(sandbox, target), plan.persist, pod, reason="interval")
    assert CaptureStore(StateStore(), sandbox.name, 5).latest() is None


def test_read_members_leaves_out_exclusions_and_journals() -> None:
    data = _tar(
        (_info("sandbox/ws", tarfile.DIRTYPE, mode=0o700), b""),
        (_info("sandbox/ws/USER.md"), b"Ada"),
        (_info("sandbox/ws/SOUL.md"), b"the archive's"),
        (_info("sandbox/ws/x.lock"), b"pid 42"),
        (_info("sandbox/ws/notes.sqlite"), b"SQLite format 3\x00"),
        (_info("sandbox/ws/notes.sqlite-wal"), b"frames"),
        (_info("sandbox/ws/tmp", tarfile.DIRTYPE), b""),
        (_info("sandbox/ws/tmp/a"), b"scratch"),
    )
    patterns = ["/sandbox/ws", "!/sandbox/ws/SOUL.md", "!/sandbox/ws/tmp", "!*.lock"]
    paths = [m.entry.path for m in read_members(data, patterns, "/sandbox")]
    assert paths == ["/sandbox/ws", "/sandbox/ws/USER.md", "/sandbox/ws/notes.sqlite"]


def test_what_the_capture_script_says_is_read_up_to_its_first_other_line() -> None:
    said = Said.parse(
        b"clawguard-fingerprint aaa bbb\n"
        b'clawguard-db {"path": "/s/a.sqlite", "stat": "1:2:3 -", "digest": "ddd"}\n'
        b"tar: sandbox/x\nclawguard-unchanged: file changed as we read it\nclawguard-unchanged\n"
    )
    assert (said.all, said.files, said.unchanged) == ("aaa", "bbb", False)
    assert said.databases == {"/s/a.sqlite": {"stat": "1:2:3 -", "digest": "ddd"}}
    assert said.rest.startswith(b"tar: sandbox/x\n")
    assert Said.parse(b"clawguard-fingerprint a b\nclawguard-unchanged\n").unchanged


def _node_with_sqlite() -> str | None:
    """A Node.js with node:sqlite (22.5 and later): on PATH, or the test bed's cached agent's."""
    import glob
    import shutil
    import subprocess

    for node in [shutil.which("node"), *sorted(glob.glob("/var/cache/clawguard-testbed/agents/*/usr-local/bin/node"))]:
        if node and subprocess.run([node, "-e", 'require("node:sqlite")'], capture_output=True).returncode == 0:
            return node
    return None


def test_the_snapshot_program_copies_online_and_tells_rows_from_a_lease_renewal(tmp_path: Path) -> None:
    """SNAPSHOT_JS itself, with a real Node.js: a consistent copy with the live file's mode,
    and a digest of the rows that a renewed lease (state_leases) does not move."""
    import json as json_
    import shutil
    import sqlite3
    import subprocess

    from clawguard.persist import SNAPSHOT_JS, VOLATILE_TABLES

    node = _node_with_sqlite()
    if node is None:
        pytest.skip("no Node.js with node:sqlite (22.5 or later) here")
    live = tmp_path / "agent" / "state" / "openclaw.sqlite"
    live.parent.mkdir(parents=True)
    db = sqlite3.connect(live)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE state_leases (scope TEXT PRIMARY KEY, heartbeat_at INTEGER)")
    db.execute("CREATE TABLE cron_jobs (id TEXT PRIMARY KEY, spec TEXT, big INTEGER, blob BLOB)")
    db.execute("INSERT INTO state_leases VALUES ('gateway-owner', 1)")
    db.execute("INSERT INTO cron_jobs VALUES ('tea', '{\"every\": 3600000}', 9007199254740993, x'00ff')")
    db.commit()  # the rows stay in the -wal: the database stays open, as a running gateway keeps it
    live.chmod(0o600)
    relative = str(live).lstrip("/")

    def run(mode: str, known: dict[str, object]) -> tuple[int, dict[str, dict[str, str]]]:
        stage = tmp_path / f"stage-{mode}"
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir()
        (stage / "snapshot.js").write_text(SNAPSHOT_JS)
        (stage / "known.json").write_text(json_.dumps(known))
        (stage / "volatile.json").write_text(json_.dumps(list(VOLATILE_TABLES)))
        done = subprocess.run(
            [node, "--no-warnings", str(stage / "snapshot.js"), mode, str(stage), relative],
            cwd="/",
            capture_output=True,
            check=False,
        )
        assert done.returncode in (0, 1), done.stderr
        lines = (stage / "dbs").read_text().splitlines()
        said = {}
        for line in lines:
            item = json_.loads(line.removeprefix("clawguard-db "))
            said[item["path"]] = {"stat": item["stat"], "digest": item["digest"]}
        return done.returncode, said

    code, taken = run("snapshot", {})
    assert code == 0 and list(taken) == [f"/{relative}"]
    copy = tmp_path / "stage-snapshot" / "root" / relative
    assert copy.stat().st_mode & 0o777 == 0o600 and int(copy.stat().st_mtime) == int(live.stat().st_mtime)
    assert not Path(f"{copy}-wal").exists()
    copied = sqlite3.connect(copy)
    assert copied.execute("SELECT id, big, blob FROM cron_jobs").fetchall() == [("tea", 9007199254740993, b"\x00\xff")]
    # The old gateway's lease is not carried: the next pod's gateway would refuse to start.
    assert copied.execute("SELECT * FROM state_leases").fetchall() == []
    copied.close()
    assert not Path(f"{copy}-journal").exists()
    assert db.execute("SELECT scope FROM state_leases").fetchall() == [("gateway-owner",)]  # the live one keeps it

    assert run("check", taken)[0] == 0  # nothing moved
    db.execute("UPDATE state_leases SET heartbeat_at = 2")
    db.commit()
    code, moved = run("check", taken)
    assert code == 0 and moved[f"/{relative}"]["stat"] != taken[f"/{relative}"]["stat"]  # a lease renewed: nothing new
    db.execute("UPDATE cron_jobs SET big = big + 1")  # beyond 2**53: told apart only as an integer
    db.commit()
    assert run("check", taken)[0] == 1
    db.close()
