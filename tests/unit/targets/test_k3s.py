from __future__ import annotations

import pytest

from clawguard.targets.k3s import _gone, _is_pod_event

CID = "a" * 64


@pytest.mark.parametrize(
    ("line", "wakes"),
    [
        (f'2026-11-21 23:00:00.1 +0000 UTC k8s.io /tasks/start {{"container_id":"{CID}","pid":42}}', True),
        (f'2026-11-21 23:00:00.1 +0000 UTC k8s.io /tasks/exit {{"container_id":"{CID}","id":"{CID}","pid":42}}', True),
        (
            f'2026-11-21 23:00:00.1 +0000 UTC k8s.io /tasks/exit {{"container_id":"{CID}","id":"clawguard-7-3","pid":9}}',
            False,
        ),
        (f'2026-11-21 23:00:00.1 +0000 UTC k8s.io /tasks/exec-started {{"container_id":"{CID}","exec_id":"x"}}', False),
        (f'2026-11-21 23:00:00.1 +0000 UTC k8s.io /containers/delete {{"id":"{CID}"}}', True),
        ("2026-11-21 23:00:00.1 +0000 UTC k8s.io /snapshot/prepare {}", False),
    ],
)
def test_only_pod_events_wake_the_daemon(line: str, wakes: bool) -> None:
    assert _is_pod_event(line) is wakes


def test_gone_detection() -> None:
    assert _gone(b'ctr: container "abc" in namespace "k8s.io": not found')
    assert _gone(b"ctr: no running task found: task abc not found: not found")
    assert not _gone(b"tar: short read")
