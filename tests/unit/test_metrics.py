"""The Prometheus metrics: a structlog processor fed synthetic events, read back
from the exposition text, and the HTTP endpoint scraped over a real socket."""

from __future__ import annotations

import io
import socket
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families

from clawguard import log, parse_config
from clawguard.metrics import Metrics, enable, install, parse_listen
from clawguard.state import StateStore

from .conftest import basic_config

SANDBOX = "my-assistant"


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def samples(text: bytes | str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition text, keyed by name and labels."""
    if isinstance(text, bytes):
        text = text.decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return samples(metrics.exposition()).get((name, frozenset(labels.items())))


def feed(metrics: Metrics, event: str, **fields: Any) -> dict[str, Any]:
    event_dict = {"event": event, "sandbox": SANDBOX, **fields}
    returned = metrics(None, "info", event_dict)
    assert returned is event_dict
    return event_dict


@pytest.fixture(autouse=True)
def _structlog_as_it_was() -> Iterator[None]:
    """Tests that configure logging leave it as they found it (other tests rely on the level)."""
    saved = structlog.get_config()
    saved["processors"] = list(saved["processors"])
    yield
    structlog.configure(**saved)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def metrics(clock: Clock) -> Metrics:
    return Metrics([SANDBOX, "other-box"], clock=clock, process_metrics=False)


def test_restores_are_counted_by_outcome_and_reason(metrics: Metrics) -> None:
    feed(metrics, "restore.done", outcome="ok", changed=10, duration=1.4, dry_run=False, reason="pod replaced")
    feed(metrics, "restore.done", outcome="ok", changed=0, duration=0.3, dry_run=False, reason="drift check")
    feed(metrics, "restore.done", outcome="failed", changed=2, duration=7.0, dry_run=False, reason="pod replaced")
    # A dry run changes nothing.
    feed(metrics, "restore.done", outcome="ok", duration=0.2, dry_run=True, reason="manual")

    assert value(metrics, "clawguard_restores_total", sandbox=SANDBOX, outcome="ok", reason="pod_replaced") == 1
    assert value(metrics, "clawguard_restores_total", sandbox=SANDBOX, outcome="failed", reason="pod_replaced") == 1
    assert value(metrics, "clawguard_restores_total", sandbox=SANDBOX, outcome="ok", reason="drift_check") == 1
    assert value(metrics, "clawguard_restores_total", sandbox=SANDBOX, outcome="ok", reason="manual") is None
    # The daemon's reasons start at 0 for every configured sandbox: a first failure is an increase.
    assert value(metrics, "clawguard_restores_total", sandbox="other-box", outcome="failed", reason="gateway_down") == 0

    duration = "clawguard_restore_duration_seconds"
    assert value(metrics, f"{duration}_count", sandbox=SANDBOX, reason="pod_replaced") == 2
    assert value(metrics, f"{duration}_sum", sandbox=SANDBOX, reason="pod_replaced") == pytest.approx(8.4)
    assert value(metrics, f"{duration}_bucket", sandbox=SANDBOX, reason="pod_replaced", le="2.0") == 1
    assert value(metrics, f"{duration}_bucket", sandbox=SANDBOX, reason="pod_replaced", le="10.0") == 2


def test_a_restore_without_a_known_reason_is_labelled_so(metrics: Metrics) -> None:
    feed(metrics, "restore.done", outcome="ok", duration=1.0)  # today's restore.done: no reason field
    feed(metrics, "restore.done", outcome="ok", duration=1.0, reason="token=hunter2-secret")
    feed(metrics, "restore.done", outcome="ok", duration=1.0, reason="archive_changed")
    assert value(metrics, "clawguard_restores_total", sandbox=SANDBOX, outcome="ok", reason="unknown") == 1
    assert value(metrics, "clawguard_restores_total", sandbox=SANDBOX, outcome="ok", reason="other") == 1
    assert value(metrics, "clawguard_restores_total", sandbox=SANDBOX, outcome="ok", reason="archive_changed") == 1
    assert b"hunter2" not in metrics.exposition()


def test_every_known_reason_becomes_a_label(metrics: Metrics) -> None:
    reasons = {
        "pod replaced": "pod_replaced",
        "daemon start": "daemon_start",
        "drift check": "drift_check",
        "archive changed": "archive_changed",
        "gateway down": "gateway_down",
        "manual": "manual",
    }
    for reason in reasons:
        feed(metrics, "restore.done", outcome="ok", duration=0.5, reason=reason)
    for label in reasons.values():
        assert value(metrics, "clawguard_restores_total", sandbox=SANDBOX, outcome="ok", reason=label) == 1


def test_detection_duration_and_pod_replacements(metrics: Metrics) -> None:
    feed(metrics, "sandbox.detected", container_id="3f9c0a1b2c4d", previous="0123456789ab", since_event=0.35)
    feed(metrics, "sandbox.detected", container_id="4f9c0a1b2c4d", previous="3f9c0a1b2c4d")  # found by the poll
    assert value(metrics, "clawguard_pod_replacements_total", sandbox=SANDBOX) == 2
    assert value(metrics, "clawguard_detection_duration_seconds_count", sandbox=SANDBOX) == 1
    assert value(metrics, "clawguard_detection_duration_seconds_sum", sandbox=SANDBOX) == pytest.approx(0.35)
    assert value(metrics, "clawguard_detection_duration_seconds_bucket", sandbox=SANDBOX, le="0.5") == 1
    assert value(metrics, "clawguard_detection_duration_seconds_bucket", sandbox=SANDBOX, le="0.25") == 0
    assert value(metrics, "clawguard_pod_replacements_total", sandbox="other-box") == 0


def test_gateway_up_follows_health_and_down_events(metrics: Metrics, clock: Clock) -> None:
    assert value(metrics, "clawguard_gateway_up", sandbox=SANDBOX) is None  # unknown until observed
    feed(metrics, "gateway.health", outcome="healthy", status="200")
    assert value(metrics, "clawguard_gateway_up", sandbox=SANDBOX) == 1
    clock.now += 60
    feed(metrics, "gateway.down", container_id="3f9c0a1b2c4d", status="connection refused")
    assert value(metrics, "clawguard_gateway_up", sandbox=SANDBOX) == 0
    clock.now += 10
    feed(metrics, "gateway.health", outcome="healthy", status="200")
    assert value(metrics, "clawguard_gateway_up", sandbox=SANDBOX) == 1
    for event in ("gateway.probe_failed", "sandbox.unreachable", "sandbox.detected", "gateway.stopped"):
        clock.now += 1
        feed(metrics, "gateway.health", outcome="healthy")
        clock.now += 1
        feed(metrics, event)
        assert value(metrics, "clawguard_gateway_up", sandbox=SANDBOX) == 0, event
    feed(metrics, "gateway.health", outcome="unhealthy", status="the gateway did not start")
    assert value(metrics, "clawguard_gateway_up", sandbox=SANDBOX) == 0


def test_gateway_up_reads_the_silent_healthy_probes_from_the_state(clock: Clock) -> None:
    """A healthy periodic probe logs nothing; it only refreshes state.json's gateway."""
    state: dict[str, dict[str, Any]] = {SANDBOX: {}}
    metrics = Metrics([SANDBOX], state=lambda name: state[name], clock=clock, process_metrics=False)
    feed(metrics, "gateway.probe_failed", error="ssh: connection reset")
    assert value(metrics, "clawguard_gateway_up", sandbox=SANDBOX) == 0
    state[SANDBOX]["gateway"] = {"healthy": True, "status": "200", "checked_at": clock.now - 30}  # older
    assert value(metrics, "clawguard_gateway_up", sandbox=SANDBOX) == 0
    state[SANDBOX]["gateway"] = {"healthy": True, "status": "200", "checked_at": clock.now + 30}  # newer
    assert value(metrics, "clawguard_gateway_up", sandbox=SANDBOX) == 1


def test_no_gateway_series_for_a_sandbox_without_a_managed_gateway(clock: Clock) -> None:
    state = {"gateway": {"healthy": True, "checked_at": clock.now}}
    metrics = Metrics([SANDBOX], gateways=[], state=lambda _name: state, clock=clock, process_metrics=False)
    feed(metrics, "sandbox.unreachable", error="cluster container is exited", retry_in=2.0)
    feed(metrics, "gateway.health", outcome="healthy")
    assert b"clawguard_gateway_up{" not in metrics.exposition()


def test_capture_age_grows_between_captures(metrics: Metrics, clock: Clock) -> None:
    assert value(metrics, "clawguard_capture_age_seconds", sandbox=SANDBOX) is None  # no capture yet
    feed(metrics, "persist.captured", container_id="3f9c0a1b2c4d", reason="interval", generation=7, bytes=10)
    assert value(metrics, "clawguard_capture_age_seconds", sandbox=SANDBOX) == 0
    clock.now += 45
    assert value(metrics, "clawguard_capture_age_seconds", sandbox=SANDBOX) == 45
    assert value(metrics, "clawguard_last_capture_timestamp_seconds", sandbox=SANDBOX) == clock.now - 45
    clock.now += 200
    assert value(metrics, "clawguard_capture_age_seconds", sandbox=SANDBOX) == 245
    feed(metrics, "persist.unchanged", generation=7)  # persist logs it at debug level
    assert value(metrics, "clawguard_capture_age_seconds", sandbox=SANDBOX) == 0


def test_unchanged_captures_are_read_from_the_state(clock: Clock) -> None:
    """An unchanged capture logs nothing; it only refreshes persist.last_capture_at."""
    state: dict[str, Any] = {}
    metrics = Metrics([SANDBOX], state=lambda _name: state, clock=clock, process_metrics=False)
    feed(metrics, "persist.captured", generation=7)
    clock.now += 200
    state["persist"] = {"last_capture_at": clock.now - 20, "last_capture_generation": 7}
    assert value(metrics, "clawguard_capture_age_seconds", sandbox=SANDBOX) == 20
    state["persist"] = {"last_capture_at": clock.now - 500}  # older than the event: the event wins
    assert value(metrics, "clawguard_capture_age_seconds", sandbox=SANDBOX) == 200


def test_capture_age_from_a_real_state_file(tmp_path: Path, clock: Clock) -> None:
    store = StateStore(tmp_path)
    store.update(SANDBOX, persist={"live_pod": "abc", "last_capture_at": clock.now - 90})
    metrics = Metrics([SANDBOX], state=store.load, clock=clock, process_metrics=False)
    assert value(metrics, "clawguard_capture_age_seconds", sandbox=SANDBOX) == 90


def test_drift_repairs_count_steps(metrics: Metrics) -> None:
    feed(metrics, "sandbox.drift", container_id="3f9c0a1b2c4d", steps=["SOUL.md", "skills"], changes=["x", "y", "z"])
    feed(metrics, "sandbox.drift", steps=["telegram"])
    assert value(metrics, "clawguard_drift_repairs_total", sandbox=SANDBOX) == 3
    assert value(metrics, "clawguard_drift_repairs_total", sandbox="other-box") == 0


def test_sandbox_starts_count_requests_and_refusals(metrics: Metrics) -> None:
    feed(metrics, "openshell.start_requested")
    feed(metrics, "openshell.start_requested")
    feed(metrics, "openshell.start_refused", error="crashed: delete and create")
    assert value(metrics, "clawguard_sandbox_starts_total", sandbox=SANDBOX, outcome="requested") == 2
    assert value(metrics, "clawguard_sandbox_starts_total", sandbox=SANDBOX, outcome="refused") == 1


def test_config_error_is_set_by_input_errors_until_a_good_restore(metrics: Metrics) -> None:
    assert value(metrics, "clawguard_config_error", sandbox=SANDBOX) == 0
    feed(metrics, "restore.input_error", error="owner 'sandbox' does not exist in this pod", reason="pod replaced")
    assert value(metrics, "clawguard_config_error", sandbox=SANDBOX) == 1
    assert value(metrics, "clawguard_restores_total", sandbox=SANDBOX, outcome="failed", reason="pod_replaced") == 1
    assert value(metrics, "clawguard_config_error", sandbox="other-box") == 0
    feed(metrics, "restore.done", outcome="failed", duration=1.0, reason="pod replaced")
    assert value(metrics, "clawguard_config_error", sandbox=SANDBOX) == 1
    feed(metrics, "restore.done", outcome="ok", duration=1.0, reason="pod replaced")
    assert value(metrics, "clawguard_config_error", sandbox=SANDBOX) == 0


def test_config_error_is_set_by_an_invalid_archive_until_it_validates(metrics: Metrics) -> None:
    feed(metrics, "archive.invalid", error="openclaw.json: line 3: expecting ','", files=["/a/openclaw.json"])
    assert value(metrics, "clawguard_config_error", sandbox=SANDBOX) == 1
    # The last valid plan stays in force: a good drift check does not make the archive valid.
    feed(metrics, "restore.done", outcome="ok", duration=0.2, reason="drift check")
    assert value(metrics, "clawguard_config_error", sandbox=SANDBOX) == 1
    feed(metrics, "archive.changed", files=["/a/openclaw.json"], steps=["openclaw.json"])
    assert value(metrics, "clawguard_config_error", sandbox=SANDBOX) == 0
    feed(metrics, "archive.invalid", error="bad")
    feed(metrics, "archive.unchanged", files=["/a/openclaw.json"])
    assert value(metrics, "clawguard_config_error", sandbox=SANDBOX) == 0


def test_only_configured_sandboxes_become_labels(metrics: Metrics) -> None:
    for name in ("stranger", "ghp_abcdefghijklmnopqrstuvwxyz0123456789", None, 42):
        metrics(None, "info", {"event": "restore.done", "sandbox": name, "outcome": "ok", "duration": 1.0})
    metrics(None, "info", {"event": "restore.done", "outcome": "ok"})  # daemon-wide event: no sandbox
    text = metrics.exposition().decode()
    assert "stranger" not in text and "ghp_" not in text
    assert value(metrics, "clawguard_metrics_errors_total") == 0


def test_without_a_list_only_sandbox_shaped_names_become_labels(clock: Clock) -> None:
    metrics = Metrics(clock=clock, process_metrics=False)
    metrics(None, "info", {"event": "sandbox.drift", "sandbox": "box-1", "steps": ["a"]})
    metrics(None, "info", {"event": "sandbox.drift", "sandbox": "Bearer abc.def", "steps": ["a"]})
    metrics(None, "info", {"event": "sandbox.drift", "sandbox": "x" * 64, "steps": ["a"]})
    text = metrics.exposition().decode()
    assert 'clawguard_drift_repairs_total{sandbox="box-1"} 1.0' in text
    assert "Bearer" not in text and "x" * 64 not in text


def test_label_values_come_only_from_fixed_vocabularies(metrics: Metrics, clock: Clock) -> None:
    secret = "sk-live-0123456789abcdef"
    for event in (
        "restore.done",
        "restore.input_error",
        "archive.invalid",
        "gateway.health",
        "gateway.down",
        "sandbox.detected",
        "sandbox.drift",
        "persist.captured",
    ):
        feed(metrics, event, outcome=secret, reason=secret, error=secret, status=secret, steps=[secret], files=[secret])
    text = metrics.exposition().decode()
    assert secret not in text
    labels = {
        (key, label)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        for key, label in sample.labels.items()
        if key != "le"
    }
    assert {key for key, _ in labels} <= {"sandbox", "outcome", "reason", "version"}
    assert {label for key, label in labels if key == "sandbox"} <= {SANDBOX, "other-box"}
    assert {label for key, label in labels if key == "outcome"} <= {"ok", "failed"}


class _Exploding(Mapping[str, Any]):
    """An event dict whose every read fails."""

    def __getitem__(self, key: str) -> Any:
        raise RuntimeError("boom")

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("boom")

    def __len__(self) -> int:
        return 1


def test_the_processor_never_raises_and_counts_its_errors(metrics: Metrics) -> None:
    event: Any = _Exploding()
    assert metrics(None, "info", event) is event
    reason: list[str] = []
    odd = {"event": "restore.done", "sandbox": SANDBOX, "outcome": "ok", "duration": float("nan"), "reason": reason}
    assert metrics(None, "info", odd) is odd  # odd values are tolerated, not errors
    assert list(odd) == ["event", "sandbox", "outcome", "duration", "reason"] and odd["reason"] is reason
    assert value(metrics, "clawguard_metrics_errors_total") == 1
    assert value(metrics, "clawguard_restores_total", sandbox=SANDBOX, outcome="ok", reason="other") == 1
    assert value(metrics, "clawguard_restore_duration_seconds_count", sandbox=SANDBOX, reason="other") is None


def test_a_failing_state_reader_costs_the_state_only(clock: Clock) -> None:
    def broken(_name: str) -> Mapping[str, Any]:
        raise OSError("state.json unreadable")

    metrics = Metrics([SANDBOX], state=broken, clock=clock, process_metrics=False)
    feed(metrics, "persist.captured", generation=1)
    clock.now += 5
    assert value(metrics, "clawguard_capture_age_seconds", sandbox=SANDBOX) == 5
    assert (value(metrics, "clawguard_metrics_errors_total") or 0) >= 1


def test_the_event_is_passed_on_unchanged(metrics: Metrics) -> None:
    event = feed(metrics, "restore.done", outcome="ok", changed=3, duration=1.5, dry_run=False, reason="manual")
    assert event == {
        "event": "restore.done",
        "sandbox": SANDBOX,
        "outcome": "ok",
        "changed": 3,
        "duration": 1.5,
        "dry_run": False,
        "reason": "manual",
    }


def test_installed_in_the_log_chain_it_sees_info_events_the_log_hides(metrics: Metrics) -> None:
    out = io.StringIO()
    log.configure("warning", out)
    install(metrics, "warning")
    install(metrics, "warning")  # idempotent: observed once per event
    logger = structlog.get_logger("clawguard.test").bind(sandbox=SANDBOX)
    logger.info("restore.done", outcome="ok", changed=1, duration=0.5, dry_run=False, reason="pod replaced")
    logger.warning("sandbox.drift", steps=["SOUL.md"])
    logger.debug("watch.event", reason="containerd event")
    assert value(metrics, "clawguard_restores_total", sandbox=SANDBOX, outcome="ok", reason="pod_replaced") == 1
    assert value(metrics, "clawguard_drift_repairs_total", sandbox=SANDBOX) == 1
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and "event=sandbox.drift" in lines[0]  # the info line stays hidden


def test_installed_at_info_level_the_log_is_unchanged(metrics: Metrics) -> None:
    out = io.StringIO()
    log.configure("info", out)
    install(metrics, "info")
    structlog.get_logger("clawguard.test").info("persist.captured", sandbox=SANDBOX, generation=3)
    assert "event=persist.captured sandbox=my-assistant generation=3" in out.getvalue()
    assert value(metrics, "clawguard_capture_age_seconds", sandbox=SANDBOX) == 0


def _scrape(url: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.headers.get("Content-Type", ""), response.read().decode()


def test_the_endpoint_serves_the_registry_on_the_given_address(metrics: Metrics) -> None:
    feed(metrics, "restore.done", outcome="ok", duration=1.0, reason="daemon start")
    server = metrics.serve("127.0.0.1:0")
    try:
        host, port = server.address
        assert host == "127.0.0.1" and port > 0
        assert server.url == f"http://127.0.0.1:{port}/metrics"
        status, content_type, body = _scrape(server.url)
    finally:
        server.close()
    assert status == 200 and content_type.startswith("text/plain")
    assert 'clawguard_restores_total{outcome="ok",reason="daemon_start",sandbox="my-assistant"} 1.0' in body
    assert "clawguard_metrics_errors_total 0.0" in body
    assert "python_info" not in body  # its own registry, not the process-wide default one
    with pytest.raises(OSError):
        _scrape(server.url)


def test_a_taken_port_is_an_oserror(metrics: Metrics) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError):
            metrics.serve(f"127.0.0.1:{taken.getsockname()[1]}")


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        ("localhost:0", ("localhost", 0)),
        ("[::1]:9464", ("::1", 9464)),
        ("0.0.0.0:65535", ("0.0.0.0", 65535)),
    ],
)
def test_parse_listen(listen: str, expected: tuple[str, int]) -> None:
    assert parse_listen(listen) == expected


@pytest.mark.parametrize("listen", ["9464", ":9464", "127.0.0.1:", "127.0.0.1:http", "127.0.0.1:65536", ""])
def test_parse_listen_refuses(listen: str) -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_listen(listen)


def test_enable_serves_the_configured_sandboxes(archive: Path, tmp_path: Path) -> None:
    config = parse_config(basic_config(archive), "c.yaml")
    StateStore(tmp_path).update(SANDBOX, gateway={"healthy": True, "status": "200", "checked_at": 1.0})
    out = io.StringIO()
    log.configure("info", out)
    assert enable(None, config, StateStore(tmp_path), "info") is None  # off by default
    server = enable("127.0.0.1:0", config, StateStore(tmp_path), "info")
    assert server is not None
    try:
        structlog.get_logger("clawguard.test").warning("sandbox.drift", sandbox=SANDBOX, steps=["a", "b"])
        _, _, body = _scrape(server.url)
    finally:
        server.close()
    assert f"event=metrics.listening url={server.url}" in out.getvalue()
    assert 'clawguard_drift_repairs_total{sandbox="my-assistant"} 2.0' in body
    assert 'clawguard_gateway_up{sandbox="my-assistant"} 1.0' in body  # from the state file
    assert "process_resident_memory_bytes" in body


def test_enable_logs_an_address_it_cannot_bind_and_goes_on(archive: Path, tmp_path: Path) -> None:
    config = parse_config(basic_config(archive), "c.yaml")
    out = io.StringIO()
    log.configure("info", out)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert enable(f"127.0.0.1:{taken.getsockname()[1]}", config, StateStore(tmp_path), "info") is None
    assert enable("nonsense", config, StateStore(tmp_path), "info") is None
    assert out.getvalue().count("event=metrics.failed") == 2
