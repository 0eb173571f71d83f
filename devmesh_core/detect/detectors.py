"""The detectors: small units that each turn stored events into signals.

Each has ``observe(event) -> list[Signal]`` (and, when time alone can produce a signal,
``tick(now)``), keeps only bounded state, and can save/restore that state as JSON so a
restart of the server neither re-detects old news nor forgets what is normal. They see the
event's own timestamp as the clock, which is what makes replays (bench, tests) exact.
"""

from __future__ import annotations

import hashlib
import re
import statistics
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from devmesh_core.detect.models import Severity, Signal
from devmesh_core.detect.settings import DetectSettings
from devmesh_core.models import Level, LogEvent, from_micros, to_micros
from devmesh_core.reason.runbooks import Runbook

_SAMPLE = 20  # stored event ids kept per signal
_DIGITS = re.compile(r"\d+")


def event_id(event: LogEvent) -> int | None:
    """The stored row id of an event (``None`` for an event not stored)."""
    value = getattr(event, "id", None)
    return value if isinstance(value, int) else None


def merge_sample(kept: list[int], more: list[int], limit: int = _SAMPLE) -> list[int]:
    """A bounded sample of event ids: the first half of what was kept (how it started) and
    the latest ids (how it goes on), so a long incident still names its recent events."""
    ids = kept + [i for i in more if i not in kept]
    if len(ids) <= limit:
        return ids
    head = limit // 2
    return ids[:head] + ids[-(limit - head) :]


def signature_of(event: LogEvent) -> str:
    """The event's template id, or (mining off) a stable hash of its digit-masked message."""
    template_id = getattr(event, "template_id", None)
    if isinstance(template_id, str) and template_id:
        return template_id
    masked = _DIGITS.sub("<*>", event.message[:512])
    return "msg-" + hashlib.blake2b(masked.encode(), digest_size=8).hexdigest()


def _snippet(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---------------------------------------------------------------------------- error spike


@dataclass
class _Series:
    """Error counts of one service or host: the open window and past windows per bucket."""

    window: int = -1  # index of the open window (ts // window length)
    count: int = 0
    critical: int = 0
    fired: bool = False
    ids: list[int] = field(default_factory=list)
    templates: Counter[str] = field(default_factory=Counter)
    history: dict[int, deque[int]] = field(default_factory=dict)  # bucket → past counts
    recent: deque[int] = field(default_factory=lambda: deque(maxlen=48))  # any bucket


class ErrorSpikeDetector:
    """Error-rate spikes per service and per host against a robust baseline.

    Errors (level ≥ ERROR) are counted in fixed windows. A window is a spike when its count
    reaches ``spike_min_errors`` (a quiet service with 2 errors is never one) *and* exceeds
    both ``median + k·1.4826·MAD`` and ``ratio × median`` of past windows of the same
    time-of-day bucket (falling back to recent windows of any bucket while a bucket has
    fewer than three) — so a chatty service with its usual 500 errors is not one either.
    It fires at most once per window, as soon as the threshold is crossed.
    """

    def __init__(self, settings: DetectSettings) -> None:
        self.s = settings
        self.window_us = int(settings.spike_window * 1_000_000)
        self.series: dict[tuple[str, str], _Series] = {}

    def _bucket(self, window: int) -> int:
        start_s = window * self.window_us // 1_000_000
        day_fraction = (start_s % 86_400) / 86_400
        return int(day_fraction * self.s.spike_buckets)

    def baseline(self, series: _Series, window: int) -> list[int]:
        """Past counts the window is compared with."""
        past = list(series.history.get(self._bucket(window), ()))
        if len(past) < 3:
            past = list(series.recent)
        return past

    def threshold(self, past: Sequence[int]) -> float:
        """The count a window must reach to be a spike, given past windows."""
        floor = float(self.s.spike_min_errors)
        if not past:
            return floor
        median = statistics.median(past)
        mad = statistics.median(abs(x - median) for x in past) * 1.4826
        return max(floor, median + self.s.spike_mad_k * mad, self.s.spike_min_ratio * median)

    def _close(self, series: _Series, upto: int) -> None:
        """Move the open window (and empty windows up to ``upto``) into the history."""
        if series.window < 0:
            series.window = upto
            return
        window, count = series.window, series.count
        while window < upto:
            series.history.setdefault(
                self._bucket(window), deque(maxlen=self.s.spike_history)
            ).append(count)
            series.recent.append(count)
            count = 0
            window += 1
            if window < upto - self.s.spike_history * self.s.spike_buckets:
                window = upto - self.s.spike_history * self.s.spike_buckets  # skip long gaps
        series.window, series.count, series.critical, series.fired = upto, 0, 0, False
        series.ids, series.templates = [], Counter()

    def observe(self, event: LogEvent) -> list[Signal]:
        if not self.s.spike_enabled or event.level.rank < Level.ERROR.rank:
            return []
        window = event.timestamp_us // self.window_us
        out = []
        for kind, name in (("service", event.service), ("host", event.host)):
            series = self.series.setdefault((kind, name), _Series())
            if window > series.window:
                self._close(series, window)
            elif window < series.window:
                continue  # late event for a closed window: counted nowhere, never fires
            series.count += 1
            series.critical += event.level == Level.CRITICAL
            series.templates[signature_of(event)] += 1
            rid = event_id(event)
            if rid is not None and len(series.ids) < _SAMPLE:
                series.ids.append(rid)
            if series.fired:
                continue
            past = self.baseline(series, window)
            limit = self.threshold(past)
            if series.count >= limit:
                series.fired = True
                median = statistics.median(past) if past else 0
                out.append(
                    Signal(
                        kind="error_spike",
                        at=event.timestamp,
                        service=event.service if kind == "service" else None,
                        host=event.host,
                        template_id=series.templates.most_common(1)[0][0],
                        count=series.count,
                        severity="high" if series.critical else "medium",
                        detail=f"{series.count} errors in {self.s.spike_window:g}s on {kind} "
                        f"{name} (usual {median:g})",
                        event_ids=list(series.ids),
                    )
                )
        return out

    def state(self) -> dict[str, Any]:
        return {
            f"{kind}\x1f{name}": {
                "h": {str(b): list(q) for b, q in s.history.items()},
                "r": list(s.recent),
            }
            for (kind, name), s in self.series.items()
        }

    def load(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            kind, _, name = key.partition("\x1f")
            series = _Series()
            series.history = {
                int(b): deque(q, maxlen=self.s.spike_history) for b, q in value["h"].items()
            }
            series.recent.extend(value["r"])
            self.series[(kind, name)] = series


# ---------------------------------------------------------------------------- new signature


class NewSignatureDetector:
    """A template a service never showed before, at ERROR or worse, after the service's
    warm-up (while a service is new, all its templates are); and a known error template at
    a host that never had it (a problem spreading).

    A template that has become part of the fleet's background — seen on at least
    ``new_host_fleet_hosts`` hosts, over at least ``new_host_fleet_age`` seconds — still
    signals at a new host, but only ``low``: it joins an incident that is open anyway and
    opens none (chatter that slowly reaches every host is not news; a problem that spreads
    fast is, and it spreads within the age).
    """

    def __init__(self, settings: DetectSettings) -> None:
        self.s = settings
        self.min_rank = Level(settings.new_signature_min_level).rank
        self.first_seen: dict[str, int] = {}  # service → µs
        self.known: dict[str, set[str]] = {}  # service → signatures
        self.hosts: dict[str, set[str]] = {}  # "service\x1fsignature" → hosts (error+ only)
        self.since: dict[str, int] = {}  # "service\x1fsignature" → µs of its first error+

    def established(self, key: str, ts: int) -> bool:
        """Whether an error template is fleet-wide background by now (see the class doc)."""
        hosts = self.hosts.get(key, ())
        since = self.since.get(key, ts)
        return (
            len(hosts) >= self.s.new_host_fleet_hosts
            and ts - since >= self.s.new_host_fleet_age * 1_000_000
        )

    def observe(self, event: LogEvent) -> list[Signal]:
        if not self.s.new_signature_enabled:
            return []
        service, ts = event.service, event.timestamp_us
        first = self.first_seen.setdefault(service, ts)
        sig = signature_of(event)
        known = self.known.setdefault(service, set())
        is_new = sig not in known
        known.add(sig)
        if event.level.rank < self.min_rank:
            return []
        key = f"{service}\x1f{sig}"
        hosts = self.hosts.get(key)
        new_host = hosts is not None and event.host not in hosts
        background = new_host and self.established(key, ts)
        self.hosts.setdefault(key, set()).add(event.host)
        self.since.setdefault(key, ts)
        rid = event_id(event)
        ids = [rid] if rid is not None else []
        critical = event.level == Level.CRITICAL
        warm = ts - first >= self.s.new_signature_warmup * 1_000_000
        if is_new and warm:
            return [
                Signal(
                    kind="new_signature",
                    at=event.timestamp,
                    service=service,
                    host=event.host,
                    template_id=sig,
                    severity="high" if critical else "medium",
                    detail=f"new {event.level.value} signature in {service}: "
                    f"{_snippet(event.message)}",
                    event_ids=ids,
                )
            ]
        if new_host and self.s.new_host_enabled:
            severity: Severity = "low" if background or not critical else "medium"
            where = f"{len(hosts or ())} hosts before" if background else event.host
            return [
                Signal(
                    kind="new_host_signature",
                    at=event.timestamp,
                    service=service,
                    host=event.host,
                    template_id=sig,
                    severity=severity,
                    detail=f"known {event.level.value} signature of {service} now on "
                    f"{event.host}{' (fleet-wide: ' + where + ')' if background else ''}: "
                    f"{_snippet(event.message)}",
                    event_ids=ids,
                )
            ]
        return []

    def state(self) -> dict[str, Any]:
        return {
            "first": self.first_seen,
            "known": {k: sorted(v) for k, v in self.known.items()},
            "hosts": {k: sorted(v) for k, v in self.hosts.items()},
            "since": self.since,
        }

    def load(self, state: dict[str, Any]) -> None:
        self.first_seen = {k: int(v) for k, v in state.get("first", {}).items()}
        self.known = {k: set(v) for k, v in state.get("known", {}).items()}
        self.hosts = {k: set(v) for k, v in state.get("hosts", {}).items()}
        self.since = {k: int(v) for k, v in state.get("since", {}).items()}


# ---------------------------------------------------------------------------- health


_HEALTH_SEVERITY: dict[str, Severity] = {
    "node_offline": "high",
    "service_unhealthy": "high",
    "deployment_failed": "high",
    "healthcheck_failed": "medium",
}


@dataclass(frozen=True, slots=True)
class Recovery:
    """A sign that a problem is over: the host's heartbeat is back, a service recovered."""

    at: datetime
    host: str
    service: str | None
    signature_prefixes: tuple[str, ...]


class HealthDetector:
    """Health events from node event files (``service_unhealthy``, ``healthcheck_failed``,
    ``deployment_failed``, ``node_offline``) and silent shippers: a host that sent
    heartbeats and then nothing for ``heartbeat_timeout`` is offline until it speaks again.
    """

    def __init__(self, settings: DetectSettings) -> None:
        self.s = settings
        self.last_heartbeat: dict[str, int] = {}  # host → µs of its last heartbeat/event
        self.offline: set[str] = set()
        self.recoveries: list[Recovery] = []

    def observe(self, event: LogEvent) -> list[Signal]:
        if not self.s.health_enabled:
            return []
        etype = event.event_type or ""
        host = event.host
        if etype in self.s.heartbeat_event_types or host in self.last_heartbeat:
            previous = self.last_heartbeat.get(host, 0)
            self.last_heartbeat[host] = max(previous, event.timestamp_us)
            if host in self.offline:  # heard again: back online
                self.offline.discard(host)
                self.recoveries.append(
                    Recovery(event.timestamp, host, None, ("heartbeat_missing|", "health_event|"))
                )
        if etype in self.s.recovery_event_types and etype not in self.s.heartbeat_event_types:
            self.recoveries.append(
                Recovery(event.timestamp, host, event.service, ("health_event|",))
            )
        if etype not in self.s.health_event_types:
            return []
        rid = event_id(event)
        return [
            Signal(
                kind="health_event",
                at=event.timestamp,
                service=None if etype == "node_offline" else event.service,
                host=host,
                severity=_HEALTH_SEVERITY.get(etype, "medium"),
                detail=_snippet(event.message),
                event_ids=[rid] if rid is not None else [],
                template_id=None,
                runbook_id=None,
                count=1,
            )
        ]

    def tick(self, now: datetime) -> list[Signal]:
        """Hosts silent past the timeout (each once, until they are heard again)."""
        if not self.s.health_enabled:
            return []
        limit = to_micros(now) - int(self.s.heartbeat_timeout * 1_000_000)
        out = []
        for host, last in self.last_heartbeat.items():
            if last < limit and host not in self.offline:
                self.offline.add(host)
                silent = (to_micros(now) - last) / 1_000_000
                out.append(
                    Signal(
                        kind="heartbeat_missing",
                        at=now,
                        host=host,
                        severity="high",
                        detail=f"node {host} silent for {silent:.0f}s (last heard "
                        f"{from_micros(last):%Y-%m-%d %H:%M:%S}Z)",
                    )
                )
        return out

    def take_recoveries(self) -> list[Recovery]:
        out, self.recoveries = self.recoveries, []
        return out

    def state(self) -> dict[str, Any]:
        return {"last": self.last_heartbeat, "offline": sorted(self.offline)}

    def load(self, state: dict[str, Any]) -> None:
        self.last_heartbeat = {k: int(v) for k, v in state.get("last", {}).items()}
        self.offline = set(state.get("offline", []))


# ---------------------------------------------------------------------------- runbooks


class RunbookDetector:
    """Runbook triggers (OOM killer, disk full, certificate expiry …): a matching event
    opens (or joins) an incident with that runbook attached."""

    def __init__(self, settings: DetectSettings, runbooks: Sequence[Runbook]) -> None:
        self.s = settings
        self.runbooks = [rb for rb in runbooks if rb.triggers]
        # Every trigger's needles in one tuple: a message holding none of them can only fire
        # the runbooks that have a trigger without needles (checked as usual).
        self._needles = tuple(
            sorted({n for rb in self.runbooks for t in rb.triggers for n in t.needles or ()})
        )
        self._unfiltered = [
            rb for rb in self.runbooks if any(t.needles is None for t in rb.triggers)
        ]

    def observe(self, event: LogEvent) -> list[Signal]:
        if not self.s.runbooks_enabled or not self.runbooks:
            return []
        message = event.message
        lowered = message.lower() if message.isascii() else None  # once, for every trigger
        runbooks = self.runbooks
        if lowered is not None and not any(n in lowered for n in self._needles):
            runbooks = self._unfiltered  # the common case: no trigger's words occur
        out = []
        for runbook in runbooks:
            trigger = runbook.match(
                message, service=event.service, level=event.level, lowered=lowered
            )
            if trigger is None:
                continue
            rid = event_id(event)
            out.append(
                Signal(
                    kind="runbook_pattern",
                    at=event.timestamp,
                    service=event.service,
                    host=event.host,
                    template_id=signature_of(event),
                    runbook_id=runbook.id,
                    severity=trigger.severity,
                    detail=f"{runbook.title}: {_snippet(event.message)}",
                    event_ids=[rid] if rid is not None else [],
                )
            )
        return out


def seconds(value: float) -> timedelta:
    """A settings duration as a timedelta."""
    return timedelta(seconds=value)
