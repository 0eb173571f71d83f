"""Fixtures of the status page tests: a real SQLite store seeded with log lines, an incident
made by the real detector from them (with a diagnosis from the real rule-based ``ask``),
action requests proposed through the real ``ActionService``, and page users in a real
``users.json``. Settings are passed as environment variables so the same seed serves the
in-process app (httpx) and the ``devmesh serve`` subprocess (the browser tests)."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi.testclient import TestClient

from devmesh.web.auth import WebAuth
from devmesh_core import services
from devmesh_core.config import Settings
from devmesh_core.graph.base import DependsOn, HostNode, RunsOn, ServiceNode
from devmesh_core.graph.server import EmbeddedServer, ServerConfig
from devmesh_core.runtime import Core
from devmesh_core.store import LogQuery

PASSWORD = "correct horse battery"
SECRET = "hunter2-s3cr3t"
"""A password in a log line: the page must never show it."""


@pytest.fixture(scope="session")
def graph_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    """One real embedded FalkorDB for the session (owned: stopped at the end); each test
    uses a graph key of its own on it."""
    server = EmbeddedServer(
        ServerConfig(directory=tmp_path_factory.mktemp("web-graph") / "graph"), owned=True
    )
    server.ensure_running()
    yield server
    server.close()


@pytest.fixture
def graph_url(graph_server: EmbeddedServer) -> str:
    """URL of a fresh graph on the session's server."""
    info = graph_server.ensure_running()
    return (
        f"redis://:{quote(info.password, safe='')}@{info.host}:{info.port}/"
        f"web_{uuid.uuid4().hex[:12]}"
    )


def web_env(data_dir: Path, graph_url: str, **extra: str) -> dict[str, str]:
    """The settings of a test server as ``DEVMESH_*`` variables."""
    env = {
        "DEVMESH_DATA_DIR": str(data_dir),
        "DEVMESH_GRAPH_URL": graph_url,
        "DEVMESH_VECTORS_ENABLED": "false",
        "DEVMESH_DETECT__ENABLED": "false",
        "DEVMESH_ACTIONS__ALLOW": json.dumps({"web1": {"units": ["nginx"]}}),
        "DEVMESH_ACTIONS__ROLES": json.dumps({"web-role:approver": ["approver"]}),
        "DEVMESH_ACTIONS__HIGH_RISK_APPROVALS": "2",
        "DEVMESH_ACTIONS__VERIFY_MINUTES": "0",
    }
    env.update(extra)
    return env


@dataclass
class Seeded:
    """What the seed made: ids the tests look for on the page."""

    data_dir: Path
    incident_id: str
    event_ids: list[int]
    low_request: str
    high_request: str


def settings_for(
    data_dir: Path, graph_url: str, monkeypatch: pytest.MonkeyPatch, **extra: str
) -> Settings:
    """Settings from the environment the test server would get (set for this test)."""
    for key, value in web_env(data_dir, graph_url, **extra).items():
        monkeypatch.setenv(key, value)
    return Settings()


def seed(settings: Settings) -> Seeded:
    """Log lines, one incident with a diagnosis, one low- and one high-risk request, and
    three page users (viewer ``vera``, approvers ``alice`` and ``carol``)."""
    from devmesh_core.actions.service import ActionService
    from devmesh_core.detect.engine import Detector
    from devmesh_core.detect.service import IncidentService
    from devmesh_core.detect.settings import DetectSettings
    from devmesh_core.reason.ask import ask

    core = Core.open(settings, vectors=False)
    try:
        now = datetime.now(UTC).replace(microsecond=0)
        lines = []
        for i in range(12):
            lines.append(
                {
                    "timestamp": (now - timedelta(minutes=50 - i * 4)).isoformat(),
                    "service": "nginx",
                    "host": "web1",
                    "level": "INFO",
                    "message": f"GET /index.html 200 {i}ms",
                }
            )
        for i in range(4):
            lines.append(
                {
                    "timestamp": (now - timedelta(minutes=9 - i)).isoformat(),
                    "service": "nginx",
                    "host": "web1",
                    "level": "ERROR",
                    "message": f"upstream db:5432 connection refused (attempt {i})",
                }
            )
        lines.append(
            {
                "timestamp": (now - timedelta(minutes=5)).isoformat(),
                "service": "postgres",
                "host": "db1",
                "level": "CRITICAL",
                "message": f"FATAL could not open file: disk full; dsn password={SECRET}",
            }
        )
        graph = core.graph()
        assert graph is not None, "the test graph server is not reachable"
        graph.upsert(
            [
                HostNode("web1"),
                HostNode("db1"),
                ServiceNode("nginx"),
                ServiceNode("postgres"),
                ServiceNode("haproxy"),
                RunsOn("nginx", "web1"),
                RunsOn("postgres", "db1"),
                DependsOn("nginx", "postgres", 0.9),
                DependsOn("haproxy", "nginx", 0.8),
            ]
        )
        report = services.ingest(core.store, lines, default_source="test")
        assert report.accepted == len(lines), report
        events = list(reversed(core.store.query(LogQuery(limit=100)).events))
        incidents = IncidentService(core.store, graph=core.graph)
        core.incidents = incidents
        Detector(incidents, DetectSettings(new_signature_warmup=0)).process(events)
        found = incidents.list("active")
        assert found, "the detector opened no incident from a CRITICAL line"
        incident = found[-1]
        diagnosis = ask(core, "why is postgres failing?", incident_id=incident.id, llm="none")
        incidents.attach_diagnosis(incident.id, diagnosis.model_dump(mode="json"))
        actions = ActionService(settings, core.store, core=core)
        low = actions.propose(
            "restart_unit",
            {"unit": "nginx"},
            host="web1",
            incident_id=incident.id,
            requested_by="system:diagnosis",
        )
        high = actions.propose(
            "restart_unit",
            {"unit": "nginx"},
            host="web1",
            incident_id=incident.id,
            requested_by="system:diagnosis",
            min_risk="high",
        )
    finally:
        core.close()
    auth = WebAuth(settings.data_dir)
    auth.add("vera", PASSWORD, "viewer")
    auth.add("alice", PASSWORD, "approver")
    auth.add("carol", PASSWORD, "approver")
    return Seeded(settings.data_dir, incident.id, [e.id for e in events], low.id, high.id)


_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    """The CSRF token of the first form on a page."""
    found = _CSRF.search(html)
    assert found, "no CSRF field on the page"
    return found.group(1)


def login(client: httpx.Client | TestClient, user: str, password: str = PASSWORD) -> Any:
    """Log in through the real form (GET for the token, POST the form)."""
    page = client.get("/ui/login")
    assert page.status_code == 200
    return client.post(
        "/ui/login",
        data={"username": user, "password": password, "csrf": csrf_of(page.text), "next": "/ui/"},
        follow_redirects=True,
    )
