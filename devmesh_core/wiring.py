"""The core's long-running services for one process, wired in one place.

The API server and the bot-only commands (``devmesh discord``, ``devmesh telegram``) each run
the same services over a :class:`~devmesh_core.runtime.Core`: runbooks, remediation, the
notifier hub and incidents (with or without the detection loop). Wiring them in each front
end let the copies drift (one did not start the remediation sweeper, one dropped every
runbook when a single file was broken); :func:`serve_services` is the one wiring they share.

It lives in the core (it imports no web framework and no chat library) so the server and
both bots can use it without importing each other.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from devmesh_core.errors import DevMeshError
from devmesh_core.log import get_logger

if TYPE_CHECKING:
    from datetime import timedelta
    from pathlib import Path

    from devmesh_core.actions.service import ActionService
    from devmesh_core.config import Settings
    from devmesh_core.detect.loop import DetectionHandle
    from devmesh_core.graph import GraphStore
    from devmesh_core.graph.projection import ProjectionReport
    from devmesh_core.graph.topology import Topology
    from devmesh_core.notify.base import NotifierHub
    from devmesh_core.reason.runbooks import Runbook
    from devmesh_core.runtime import Core
    from devmesh_core.store import LogStore

log = get_logger(__name__)


@dataclass
class Wiring:
    """What :func:`serve_services` started, for the caller that needs a handle on it (the
    API pokes ``detection`` after an ingest; tests and reports read the rest)."""

    hub: NotifierHub
    actions: ActionService | None = None
    detection: DetectionHandle | None = None
    runbook_problems: list[str] = field(default_factory=list)


def usable_runbooks(settings: Settings) -> tuple[list[Runbook], list[str]]:
    """Every runbook of the configured folder that parses, and one line per broken file,
    which is skipped with a warning rather than stopping the process or emptying the list
    (``devmesh runbooks lint`` reports the same lines)."""
    from devmesh_core.reason.runbooks import lint_runbooks, runbooks_dir

    runbooks, problems = lint_runbooks(runbooks_dir(settings))
    if problems:
        log.warning("runbooks_skipped", problems=problems, hint="run `devmesh runbooks lint`")
    return runbooks, problems


def load_runbooks(core: Core) -> list[str]:
    """Fill ``core.runbooks`` with the :func:`usable_runbooks`; return the problems."""
    core.runbooks, problems = usable_runbooks(core.settings)
    log.info("runbooks_loaded", count=len(core.runbooks))
    return problems


def configured_topology(settings: Settings, path: Path | None = None) -> Topology | None:
    """The topology file ``path``, else the settings' ``topology_file``, parsed (``None``
    when neither is set). A broken file raises its ``DevMeshError``: the caller decides
    whether to go on without declared dependencies."""
    from devmesh_core.graph.topology import load_topology

    chosen = path if path is not None else settings.topology_file
    return load_topology(chosen) if chosen is not None else None


def project_graph(
    store: LogStore,
    graph: GraphStore,
    settings: Settings,
    *,
    topology: Topology | None,
    rebuild: bool = False,
    propose: bool | None = None,
    lag: timedelta | None = None,
) -> ProjectionReport:
    """One projection pass into the graph (or a rebuild from scratch), then the runbooks
    linked to the services and templates they cover, as every command that updates the
    graph outside the server must do it: a rebuild clears the graph, runbooks included, and
    a pass may bring templates a runbook covers.

    ``propose``: recompute dependencies proposed from error co-occurrence now (``True``),
    never (``False``) or when due (``None``; a rebuild proposes unless ``False``). ``lag``
    defaults to the projector's (events younger than it wait for the next pass).
    """
    from devmesh_core.graph.projection import DEFAULT_LAG, Projector
    from devmesh_core.graph.topology import CooccurrenceSettings
    from devmesh_core.reason.runbook_index import link_runbooks

    projector = Projector(
        store,
        graph,
        topology=topology,
        cooccurrence=None if propose is False else CooccurrenceSettings(),
        lag=DEFAULT_LAG if lag is None else lag,
    )
    report = projector.rebuild() if rebuild else projector.run_once(propose=propose)
    runbooks, _ = usable_runbooks(settings)
    if runbooks:
        link_runbooks(graph, runbooks, store)
    return report


@contextlib.asynccontextmanager
async def serve_services(core: Core, *, detect: bool) -> AsyncIterator[Wiring]:
    """Run the core's services for this process until the block exits, then stop them in
    reverse order (also when the block, or a later start step, raises).

    In order: runbooks (broken files skipped, see :func:`load_runbooks`); remediation
    (``core.actions``, its sweeper started; a ``DevMeshError`` such as a bad actions config
    turns remediation off with a warning instead of failing the process); the notifier hub
    (``core.notifiers``, attached to the running loop so detection threads publish on it);
    incidents: with ``detect`` the detection loop (when enabled in settings), else only
    ``core.incidents`` publishing to the hub (another process detects for this store).

    Blocking steps (files, store) run in a worker thread so the loop stays responsive.
    """
    from devmesh_core.actions.service import ActionService
    from devmesh_core.detect.loop import build_hub, incident_service, start_detection

    async with contextlib.AsyncExitStack() as stack:
        problems = await asyncio.to_thread(load_runbooks, core)
        actions: ActionService | None = None
        try:
            actions = ActionService.from_core(core)
        except DevMeshError as exc:
            log.warning("remediation_off", reason=str(exc))
        if actions is not None:
            core.actions = actions
            actions.start()
            stack.push_async_callback(asyncio.to_thread, actions.stop)
        hub = build_hub(core)
        hub.attach(asyncio.get_running_loop())
        core.notifiers = hub
        stack.push_async_callback(hub.aclose)
        detection: DetectionHandle | None = None
        if detect:
            detection = await asyncio.to_thread(start_detection, core, hub)
            if detection is not None:
                stack.push_async_callback(asyncio.to_thread, detection.stop)
        else:
            incident_service(core).add_listener(hub.submit)
        yield Wiring(hub=hub, actions=actions, detection=detection, runbook_problems=problems)
