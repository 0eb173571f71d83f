"""The server's background parts beside the HTTP API: the graph projection loop, metrics
and the chat bots. The API's lifespan starts them in order and stops them in reverse, inside
:func:`devmesh_core.wiring.serve_services` (runbooks, remediation, the notifier hub and
detection), which the bot-only commands share.

Kept out of ``app.py`` so the lifespan reads as a list of steps, and out of ``devmesh_core``
because the bots are front ends the core must not import.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from devmesh_core.errors import DevMeshError
from devmesh_core.log import get_logger
from devmesh_core.metrics import Metrics
from devmesh_core.runtime import Core

if TYPE_CHECKING:
    from devmesh_core.detect.loop import DetectionHandle
    from devmesh_core.graph import GraphStore
    from devmesh_core.graph.loop import ProjectionLoop

log = get_logger(__name__)


def start_projection(core: Core) -> ProjectionLoop | None:
    """The graph projection loop (graph opened lazily in its thread), with the runbooks
    linked into the graph once it is up; ``None`` when the graph is off in settings."""
    if not core.settings.graph_enabled:
        return None
    from devmesh_core.graph.loop import ProjectionLoop
    from devmesh_core.wiring import configured_topology

    topology = None
    try:
        topology = configured_topology(core.settings)
    except DevMeshError as exc:
        log.warning("topology_not_loaded", reason=str(exc))
    linked: list[GraphStore] = []

    def graph() -> GraphStore | None:
        store = core.graph()
        if store is not None and store not in linked and core.runbooks:
            from devmesh_core.reason.runbook_index import link_runbooks

            link_runbooks(store, core.runbooks, core.store)
            linked.append(store)
        return store

    loop = ProjectionLoop(
        core.store,
        graph,
        interval=core.settings.graph_interval,
        lag=timedelta(seconds=core.settings.graph_lag),
        topology=topology,
    )
    loop.start()
    return loop


def setup_metrics(core: Core, detection: DetectionHandle | None = None) -> Metrics:
    """``core.metrics`` with counters fed by the incident and action services and gauges
    read from the store at scrape time; with ``detection``, how far it is behind ingest."""
    metrics = Metrics()
    core.metrics = metrics
    store = core.store
    # COUNT(*) over the log table grows with it: read at most once a minute.
    metrics.probe(
        "devmesh_events_stored",
        "Events in the store (refreshed at most every 60 s).",
        (),
        lambda: {(): float(store.count())},
        max_age=60.0,
    )
    metrics.probe(
        "devmesh_templates",
        "Distinct templates (signatures) mined.",
        (),
        lambda: {(): float(store.template_count())},
    )
    if core.incidents is not None:
        incidents = core.incidents
        metrics.probe(
            "devmesh_incidents_open",
            "Incidents not resolved, by severity.",
            ("severity",),
            lambda: {(k,): float(v) for k, v in incidents.repo.counts_by_severity().items()},
        )
        incidents.add_listener(metrics.record_incident_event)
    if detection is not None:
        runner = detection.runner
        metrics.probe(
            "devmesh_detection_backlog_events",
            "Stored events the detection loop has not examined yet (0 when it keeps up; "
            "a growing value means incidents open late).",
            (),
            lambda: {(): float(runner.backlog())},
        )
    if core.actions is not None:
        actions = core.actions
        metrics.probe(
            "devmesh_actions_pending",
            "Remediation requests waiting for approval.",
            (),
            lambda: {(): float(len(actions.pending()))},
        )
        actions.add_listener(metrics.record_action)
    return metrics


def start_bots(core: Core) -> list[asyncio.Task[None]]:
    """A task per chat bot whose token is configured (none when ``bots_enabled`` is off).
    A bot that fails is logged; the server keeps running."""
    if not core.settings.bots_enabled:
        return []
    runners: list[tuple[str, Callable[[Core], Any]]] = []
    if core.settings.discord.token is not None:
        from bots.discord import run_discord

        runners.append(("discord", run_discord))
    if core.settings.telegram.token is not None:
        from bots.telegram.app import run_telegram

        runners.append(("telegram", run_telegram))
    tasks = []
    for name, runner in runners:
        tasks.append(asyncio.create_task(_supervised(name, runner, core), name=f"bot-{name}"))
    return tasks


async def _supervised(name: str, runner: Callable[[Core], Any], core: Core) -> None:
    try:
        log.info("bot_starting", bot=name)
        await runner(core)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # a bot's failure (bad token, API down) must not stop the server
        log.error("bot_stopped", bot=name, error=str(exc) or repr(exc))


async def stop_bots(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel the bot tasks and wait for them to close their connections."""
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(task, timeout=10)
