from __future__ import annotations

from clawguard.entries import Entry, Ids, Inspection, Observed, compare

IDS = Ids(998, 998)


def _obs(path: str, kind: str = "file", mode: int = 0o644, uid: int = 998, **kw: object) -> Observed:
    return Observed(path, kind, mode, uid, uid, **kw)  # type: ignore[arg-type]


def test_file_in_shape() -> None:
    entry = Entry("/s/f", "file", 0o644, "sandbox", content=b"x")
    seen = Inspection({"/s/f": _obs("/s/f", sha256=entry.sha256)})
    assert compare(entry, seen, IDS, frozenset()) is None


def test_file_problems_are_all_listed() -> None:
    entry = Entry("/s/f", "file", 0o600, "sandbox", content=b"x")
    seen = Inspection({"/s/f": _obs("/s/f", mode=0o644, uid=0, sha256="0")})
    drift = compare(entry, seen, IDS, frozenset())
    assert drift is not None
    assert drift.problems == ["content differs", "mode 0644, want 0600", "owner 0:0, want 998:998"]
    assert drift.write and drift.remove == ["/s/f"]


def test_if_present_absent_is_fine() -> None:
    entry = Entry("/s/h", "file", content=b"", if_present=True)
    assert compare(entry, Inspection(), None, frozenset()) is None


def test_exact_dir_lists_only_top_extras() -> None:
    entry = Entry("/s/d", "dir", 0o755, "sandbox", exact=True)
    seen = Inspection(
        {
            "/s/d": _obs("/s/d", "dir", 0o755),
            "/s/d/keep": _obs("/s/d/keep"),
            "/s/d/junk": _obs("/s/d/junk", "dir", 0o755),
            "/s/d/junk/inner": _obs("/s/d/junk/inner"),
        }
    )
    drift = compare(entry, seen, IDS, frozenset({"/s/d", "/s/d/keep"}))
    assert drift is not None
    assert drift.remove == ["/s/d/junk"]
    assert not drift.write


def test_recursive_owner() -> None:
    entry = Entry("/s/t", "dir", None, "sandbox", recursive_owner=True)
    seen = Inspection({"/s/t": _obs("/s/t", "dir", 0o755), "/s/t/o": _obs("/s/t/o", uid=0)})
    drift = compare(entry, seen, IDS, frozenset())
    assert drift is not None
    assert drift.problems == ["owner wrong on 1 path(s) below, e.g. /s/t/o"]


def test_unsafe_parent() -> None:
    entry = Entry("/s/x/f", "file", content=b"")
    drift = compare(entry, Inspection(unsafe={"/s/x/f": "/etc"}), None, frozenset())
    assert drift is not None and drift.unsafe and not drift.write
