"""Optional Prometheus metrics for ``clawguard run`` (``daemon.metrics.listen``).

The daemon already states every fact worth a metric as a structlog event
(``restore.done``, ``gateway.health``, ``persist.captured``, ``sandbox.drift``...).
So the metrics are a structlog processor that watches the event stream and
updates counters, instead of metrics calls threaded through the engine: the
restore, gateway and persist code stays unaware of Prometheus, the log line and
the metric can never disagree, and turning metrics off removes one processor.

Two facts are never logged at the default level, so they are also read from each
sandbox's state.json at scrape time (the file ``clawguard status`` reads):
- an *unchanged* capture only refreshes ``persist.last_capture_at``;
- a *healthy* periodic probe only refreshes ``gateway`` (healthy, checked_at).
For both, the newest of the two sources wins.

The processor never raises into logging: an error in it is counted in
``clawguard_metrics_errors_total`` and the event goes on unchanged. Label values
are only configured sandbox names and fixed vocabularies (outcome, reason): no
field of an event that might carry a secret (errors, paths, statuses) becomes a
label.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIServer

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram, Info, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from . import __version__
from .state import StateStore

if TYPE_CHECKING:
    from .config import Config

log = structlog.get_logger("clawguard.metrics")

# The converge reasons (converge.converge's ``reason``), as label values.
REASONS = {
    "pod replaced": "pod_replaced",
    "daemon start": "daemon_start",
    "drift check": "drift_check",
    "archive changed": "archive_changed",
    "gateway down": "gateway_down",
    "manual": "manual",
}
# Label values for a restore event without a reason field, or with one not above.
UNKNOWN_REASON = "unknown"
OTHER_REASON = "other"
# The reasons the daemon restores for: their counters start at 0, so that the first
# failure is an increase a rule can see.
DAEMON_REASONS = ("pod_replaced", "daemon_start", "drift_check", "archive_changed", "gateway_down")

# Same as config.SANDBOX_NAME (DNS-1123 labels); guards label values when no list of
# sandboxes was given.
SANDBOX_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
# Without a list of sandboxes, at most this many distinct names become labels.
MAX_SANDBOXES = 256

RESTORE_BUCKETS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
DETECTION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)

# Events after which the gateway is known not to serve (its pod is new, gone or
# unreachable, or it is being started or stopped). ``gateway.health`` sets it either way.
GATEWAY_DOWN_EVENTS = frozenset(
    {
        "gateway.down",
        "gateway.unhealthy",
        "gateway.start",
        "gateway.stopped",
        "gateway.probe_failed",
        "sandbox.unreachable",
        "sandbox.detected",
    }
)

StateReader = Callable[[str], Mapping[str, Any]]


@dataclass
class _Sandbox:
    """What the events said about one sandbox; read by the scrape-time collector."""

    gateway: tuple[float, bool] | None = None  # (when, up)
    captured_at: float | None = None
    input_error: bool = False  # restore.input_error until a restore succeeds
    archive_invalid: bool = False  # archive.invalid until the archive validates again


def parse_listen(listen: str) -> tuple[str, int]:
    """``"127.0.0.1:9464"`` or ``"[::1]:9464"`` to (host, port). Raises ValueError."""
    host, sep, port = listen.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{listen!r} is not HOST:PORT (e.g. 127.0.0.1:9464)")
    return host, int(port)


@dataclass
class Server:
    """The HTTP endpoint serving one registry, in a daemon thread."""

    httpd: WSGIServer
    thread: threading.Thread

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.httpd.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/metrics"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5.0)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) and number >= 0 else None


class Metrics:
    """A registry of clawguard's metrics, fed by the log events it observes.

    Use the instance itself as a structlog processor (see ``install``), and
    ``serve(listen)`` to expose the registry over HTTP.

    ``sandboxes``: the configured names; events about any other name are ignored.
    ``gateways``: the sandboxes whose gateway clawguard manages (default: all).
    ``state``: reads a sandbox's state.json (``StateStore.load``), at scrape time.
    """

    def __init__(
        self,
        sandboxes: Iterable[str] = (),
        *,
        gateways: Iterable[str] | None = None,
        state: StateReader | None = None,
        clock: Callable[[], float] = time.time,
        process_metrics: bool = True,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._known = frozenset(sandboxes)
        self._gateways = frozenset(gateways) if gateways is not None else None
        self._state = state
        self.clock = clock
        self._lock = threading.Lock()
        self._sandboxes: dict[str, _Sandbox] = {name: _Sandbox() for name in sorted(self._known)}
        r = self.registry
        self.errors = Counter(
            "clawguard_metrics_errors",
            "Log events the metrics processor failed to observe (a bug), and state files it could not read.",
            registry=r,
        )
        self.restores = Counter(
            "clawguard_restores",
            "Restores by outcome and reason (restore.done; restore.input_error counts as failed).",
            ["sandbox", "outcome", "reason"],
            registry=r,
        )
        self.restore_seconds = Histogram(
            "clawguard_restore_duration_seconds",
            "Time to apply and verify a restore plan (restore.done duration; the gateway wait excluded).",
            ["sandbox", "reason"],
            buckets=RESTORE_BUCKETS,
            registry=r,
        )
        self.detection_seconds = Histogram(
            "clawguard_detection_duration_seconds",
            "From the container event that woke the worker to sandbox.detected (sandbox.detected since_event).",
            ["sandbox"],
            buckets=DETECTION_BUCKETS,
            registry=r,
        )
        self.replacements = Counter(
            "clawguard_pod_replacements", "New pods detected (sandbox.detected).", ["sandbox"], registry=r
        )
        self.drift_repairs = Counter(
            "clawguard_drift_repairs",
            "Drifted steps re-applied by drift checks (sandbox.drift, one per step).",
            ["sandbox"],
            registry=r,
        )
        self.sandbox_starts = Counter(
            "clawguard_sandbox_starts",
            "StartSandbox calls for a sandbox the OpenShell 0.1.x gateway reported ERROR, STOPPED or COMPLETED, "
            "by outcome: requested, or refused (a crash or OOM death needs delete and create).",
            ["sandbox", "outcome"],
            registry=r,
        )
        Info("clawguard", "The clawguard daemon.", registry=r).info({"version": __version__})
        r.register(_ScrapeTimeCollector(self))
        if process_metrics:
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
        for name in self._sandboxes:
            self.replacements.labels(name)
            self.drift_repairs.labels(name)
            for reason in DAEMON_REASONS:
                for outcome in ("ok", "failed"):
                    self.restores.labels(name, outcome, reason)

    # --- the structlog processor -------------------------------------------------

    def __call__(self, _logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        """Observe one event; always returns it unchanged, never raises."""
        try:
            self.observe(event_dict)
        except Exception:
            with contextlib.suppress(Exception):  # nothing left to do
                self.errors.inc()
        return event_dict

    def observe(self, event: Mapping[str, Any]) -> None:
        """Update the metrics from one event dict (raises on a bug; ``__call__`` does not)."""
        name = event.get("event")
        if not isinstance(name, str):
            return
        sandbox = self._sandbox(event.get("sandbox"))
        if sandbox is None:
            return
        now = self.clock()
        if name == "restore.done":
            if event.get("dry_run"):
                return
            ok = event.get("outcome") == "ok"
            reason = _reason(event.get("reason"))
            self.restores.labels(sandbox, "ok" if ok else "failed", reason).inc()
            duration = _number(event.get("duration"))
            if duration is not None:
                self.restore_seconds.labels(sandbox, reason).observe(duration)
            if ok:
                with self._lock:
                    self._sandboxes[sandbox].input_error = False
        elif name == "restore.input_error":
            self.restores.labels(sandbox, "failed", _reason(event.get("reason"))).inc()
            with self._lock:
                self._sandboxes[sandbox].input_error = True
        elif name == "archive.invalid":
            with self._lock:
                self._sandboxes[sandbox].archive_invalid = True
        elif name in ("archive.changed", "archive.unchanged"):
            with self._lock:
                self._sandboxes[sandbox].archive_invalid = False
        elif name in ("persist.captured", "persist.unchanged"):  # unchanged: seen at debug level only, else state.json
            with self._lock:
                self._sandboxes[sandbox].captured_at = now
        elif name == "sandbox.drift":
            steps = event.get("steps")
            count = len(steps) if isinstance(steps, list | tuple) else 1
            if count:
                self.drift_repairs.labels(sandbox).inc(count)
        elif name == "gateway.health":
            self._gateway(sandbox, now, event.get("outcome") == "healthy")
        elif name in ("openshell.start_requested", "openshell.start_refused"):
            self.sandbox_starts.labels(sandbox, "requested" if name.endswith("requested") else "refused").inc()
        if name == "sandbox.detected":
            self.replacements.labels(sandbox).inc()
            waited = _number(event.get("since_event"))
            if waited is not None:
                self.detection_seconds.labels(sandbox).observe(waited)
        if name in GATEWAY_DOWN_EVENTS:
            self._gateway(sandbox, now, False)

    def _sandbox(self, value: Any) -> str | None:
        """The event's sandbox when it may be a label value, else None."""
        if not isinstance(value, str):
            return None
        if self._known:
            return value if value in self._known else None
        if not SANDBOX_NAME.fullmatch(value):
            return None
        with self._lock:
            if value not in self._sandboxes:
                if len(self._sandboxes) >= MAX_SANDBOXES:
                    return None
                self._sandboxes[value] = _Sandbox()
        return value

    def _manages_gateway(self, sandbox: str) -> bool:
        return self._gateways is None or sandbox in self._gateways

    def _gateway(self, sandbox: str, now: float, up: bool) -> None:
        if not self._manages_gateway(sandbox):
            return
        with self._lock:
            self._sandboxes[sandbox].gateway = (now, up)

    # --- reading and serving -----------------------------------------------------

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format, as a scrape would return it."""
        return generate_latest(self.registry)

    def serve(self, listen: str) -> Server:
        """Serve the registry on ``listen`` (HOST:PORT, port 0 picks a free one), bound
        to that address only, from a daemon thread. Raises ValueError for a bad
        address and OSError when it cannot be bound."""
        host, port = parse_listen(listen)
        httpd, thread = start_http_server(port, addr=host, registry=self.registry)
        return Server(httpd, thread)

    def snapshot(self) -> dict[str, _Sandbox]:
        """A copy of the per-sandbox facts, merged with state.json (newest source wins)."""
        with self._lock:
            merged = {name: _Sandbox(**vars(facts)) for name, facts in self._sandboxes.items()}
        if self._state is None:
            return merged
        for name, facts in merged.items():
            try:
                state = self._state(name)
            except Exception:
                self.errors.inc()
                continue
            persist = state.get("persist")
            captured = _number(persist.get("last_capture_at")) if isinstance(persist, Mapping) else None
            if captured is not None and (facts.captured_at is None or captured > facts.captured_at):
                facts.captured_at = captured
            gateway = state.get("gateway")
            if not self._manages_gateway(name) or not isinstance(gateway, Mapping):
                continue
            checked, healthy = _number(gateway.get("checked_at")), gateway.get("healthy")
            if checked is None or not isinstance(healthy, bool):
                continue
            if facts.gateway is None or checked > facts.gateway[0]:
                facts.gateway = (checked, healthy)
        return merged


def _reason(value: Any) -> str:
    if value is None:
        return UNKNOWN_REASON
    if not isinstance(value, str):
        return OTHER_REASON
    return REASONS.get(value.strip().lower().replace("_", " "), OTHER_REASON)


class _ScrapeTimeCollector(Collector):
    """The gauges computed when scraped: capture age grows between captures."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        try:
            facts = self.metrics.snapshot()
        except Exception:
            self.metrics.errors.inc()
            facts = {}
        return list(self._families(facts))

    def _families(self, facts: Mapping[str, _Sandbox] | None = None) -> Iterator[Metric]:
        facts = facts or {}
        now = self.metrics.clock()
        up = GaugeMetricFamily(
            "clawguard_gateway_up",
            "1 while the gateway is known healthy (last gateway.health or probe), 0 once it is not.",
            labels=["sandbox"],
        )
        age = GaugeMetricFamily(
            "clawguard_capture_age_seconds",
            "Seconds since the last capture of the persisted paths (saved or unchanged), at scrape time.",
            labels=["sandbox"],
        )
        last = GaugeMetricFamily(
            "clawguard_last_capture_timestamp_seconds",
            "Unix time of the last capture of the persisted paths (saved or unchanged).",
            labels=["sandbox"],
        )
        error = GaugeMetricFamily(
            "clawguard_config_error",
            "1 while the sandbox's config or archive is in error (restore.input_error, archive.invalid).",
            labels=["sandbox"],
        )
        for name, sandbox in sorted(facts.items()):
            if sandbox.gateway is not None:
                up.add_metric([name], 1.0 if sandbox.gateway[1] else 0.0)
            if sandbox.captured_at is not None:
                age.add_metric([name], max(0.0, now - sandbox.captured_at))
                last.add_metric([name], sandbox.captured_at)
            error.add_metric([name], 1.0 if sandbox.input_error or sandbox.archive_invalid else 0.0)
        yield from (up, age, last, error)


class _DropBelow:
    """Drops events under the display level, after the metrics saw them."""

    def __init__(self, level: int) -> None:
        self.level = level

    def __call__(self, _logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        name = str(event_dict.get("level", method)).upper()
        if logging.getLevelName(name) < self.level:  # an unknown name is a str: never dropped
            raise structlog.DropEvent
        return event_dict


def install(metrics: Metrics, level: str = "info") -> None:
    """Insert ``metrics`` into the structlog chain set up by ``log.configure(level)``.

    Call after ``log.configure`` and before the Daemon is constructed (bound loggers
    keep the chain they were made with). The metrics need the info events even when
    the log shows only warnings: then structlog passes info on, and a processor right
    after the metrics drops what the log should not show.
    """
    config = structlog.get_config()
    chain = [p for p in config["processors"] if not isinstance(p, Metrics | _DropBelow)]
    try:  # first thing after the level is known: a dropped event costs nothing more
        index = chain.index(structlog.processors.add_log_level) + 1
    except ValueError:
        index = max(len(chain) - 1, 0)  # before the renderer
    extra: list[Any] = [metrics]
    threshold = logging.getLevelName(level.upper())
    wrapper = config["wrapper_class"]
    if isinstance(threshold, int) and threshold > logging.INFO:
        extra.append(_DropBelow(threshold))
        wrapper = structlog.make_filtering_bound_logger(logging.INFO)
    structlog.configure(processors=[*chain[:index], *extra, *chain[index:]], wrapper_class=wrapper)


def enable(listen: str | None, config: Config, store: StateStore, level: str = "info") -> Server | None:
    """For ``clawguard run``, with ``daemon.metrics.listen``: observe the log and serve
    the metrics; nothing when ``listen`` is unset. An address that cannot be bound is
    logged, never fatal: restores matter more than their metrics (Prometheus shows the
    target down)."""
    if not listen:
        return None
    metrics = Metrics(
        config.sandboxes,
        gateways=[name for name, sandbox in config.sandboxes.items() if sandbox.gateway.get("enabled", True)],
        state=store.load,
    )
    install(metrics, level)
    try:
        server = metrics.serve(listen)
    except (OSError, ValueError) as exc:
        log.error("metrics.failed", listen=listen, error=str(exc))
        return None
    log.info("metrics.listening", url=server.url)
    return server
