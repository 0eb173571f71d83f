"""The status page over HTTP (httpx through FastAPI's TestClient, the real app with its
lifespan, a real SQLite store and a real FalkorDB): login, sessions, CSRF, approvals by
role, logs with keyset paging, redaction, login links; and the live tail's server-sent
events from a real ``devmesh serve`` process."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from devmesh.api.app import create_app
from devmesh.web.auth import LINKS_FILE, SESSION_COOKIE, WebAuth
from devmesh_core.actions.service import ActionService
from devmesh_core.store import open_store
from tests.conftest import start_server
from tests.web.conftest import (
    PASSWORD,
    SECRET,
    Seeded,
    csrf_of,
    login,
    seed,
    settings_for,
    web_env,
)


@pytest.fixture
def seeded(tmp_path: Path, graph_url: str, monkeypatch: pytest.MonkeyPatch) -> Seeded:
    return seed(settings_for(tmp_path / "data", graph_url, monkeypatch))


@pytest.fixture
def client(seeded: Seeded, graph_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    settings = settings_for(seeded.data_dir, graph_url, monkeypatch)
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as test_client:
        yield test_client


def _request_status(seeded: Seeded, graph_url: str, request_id: str, mp: pytest.MonkeyPatch) -> str:
    """Read a request's status straight from the store (not through the page)."""
    settings = settings_for(seeded.data_dir, graph_url, mp)
    with open_store(settings.effective_database_url) as store:
        return ActionService(settings, store).get(request_id).status


def _audit_actors(
    seeded: Seeded, graph_url: str, request_id: str, mp: pytest.MonkeyPatch
) -> list[tuple[str, str]]:
    settings = settings_for(seeded.data_dir, graph_url, mp)
    with open_store(settings.effective_database_url) as store:
        return [
            (r.step, r.actor) for r in ActionService(settings, store).audit(request_id=request_id)
        ]


def test_pages_need_a_login_and_a_right_password(client: TestClient) -> None:
    first = client.get("/ui/incidents", follow_redirects=False)
    assert first.status_code == 303
    assert first.headers["location"] == "/ui/login?next=%2Fui%2Fincidents"
    wrong = login(client, "alice", "not the password")
    assert wrong.status_code == 401 and "Wrong user name or password" in wrong.text
    nobody = login(client, "mallory", PASSWORD)
    assert nobody.status_code == 401
    assert client.get("/ui/", follow_redirects=False).status_code == 303
    ok = login(client, "alice")
    assert ok.status_code == 200 and ok.url.path == "/ui/"
    assert ok.headers["content-security-policy"].startswith("default-src 'self'")
    # the overview: hosts with heartbeat, services with server-side sparklines, incidents
    assert ">web1<" in ok.text and ">db1<" in ok.text
    assert re.search(r'<svg class="spark[^"]*"[^>]*>.*?<polyline points="', ok.text)
    assert "nginx" in ok.text and "/ui/incidents/INC-" in ok.text
    cookie = client.cookies[SESSION_COOKIE]
    assert PASSWORD not in cookie


def test_repeated_wrong_passwords_are_throttled(client: TestClient) -> None:
    for _ in range(5):
        assert login(client, "alice", "guess").status_code == 401
    refused = login(client, "alice")  # even the right password waits now
    assert refused.status_code == 429 and "Too many failed logins" in refused.text
    assert int(refused.headers["retry-after"]) > 0
    assert client.get("/ui/", follow_redirects=False).status_code == 303  # not logged in
    other = login(client, "bob", "guess")  # same client address
    assert other.status_code == 429


def test_login_next_never_leaves_the_site(client: TestClient) -> None:
    page = client.get("/ui/login")
    answer = client.post(
        "/ui/login",
        data={
            "username": "alice",
            "password": PASSWORD,
            "csrf": csrf_of(page.text),
            "next": "//evil.example/",
        },
        follow_redirects=False,
    )
    assert answer.status_code == 303 and answer.headers["location"] == "/ui/"


def test_posts_without_the_session_csrf_token_are_refused(
    client: TestClient, seeded: Seeded, graph_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    page = client.get("/ui/login")
    no_token = client.post("/ui/login", data={"username": "alice", "password": PASSWORD})
    assert no_token.status_code == 403
    forged = client.post(
        "/ui/login", data={"username": "alice", "password": PASSWORD, "csrf": "x" * 32}
    )
    assert forged.status_code == 403
    assert login(client, "alice").status_code == 200
    url = f"/ui/actions/{seeded.low_request}/approve"
    assert client.post(url, data={}).status_code == 403
    # a token from another (older) session does not count
    assert client.post(url, data={"csrf": csrf_of(page.text)}).status_code == 403
    assert _request_status(seeded, graph_url, seeded.low_request, monkeypatch) == "pending"


def test_a_read_only_user_cannot_approve(
    client: TestClient, seeded: Seeded, graph_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert login(client, "vera").status_code == 200
    page = client.get(f"/ui/incidents/{seeded.incident_id}")
    assert page.status_code == 200
    assert "Approve</button>" not in page.text
    assert "your page role is read-only (viewer)" in page.text
    answer = client.post(
        f"/ui/actions/{seeded.low_request}/approve", data={"csrf": csrf_of(page.text)}
    )
    assert answer.status_code == 403 and "read-only" in answer.text
    assert _request_status(seeded, graph_url, seeded.low_request, monkeypatch) == "pending"
    assert ("approved", "web:vera") not in _audit_actors(
        seeded, graph_url, seeded.low_request, monkeypatch
    )


def test_approvers_approve_with_the_two_person_rule(
    client: TestClient, seeded: Seeded, graph_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert login(client, "alice").status_code == 200
    page = client.get(f"/ui/incidents/{seeded.incident_id}")
    token = csrf_of(page.text)
    assert f'id="action-{seeded.low_request}"' in page.text
    hx = {"HX-Request": "true"}
    low = client.post(f"/ui/actions/{seeded.low_request}/approve", data={"csrf": token}, headers=hx)
    assert low.status_code == 200
    assert 'data-status="approved"' in low.text and "approved by you" in low.text
    assert _request_status(seeded, graph_url, seeded.low_request, monkeypatch) == "approved"

    high = f"/ui/actions/{seeded.high_request}/approve"
    first = client.post(high, data={"csrf": token}, headers=hx)
    assert 'data-status="pending"' in first.text and "approvals 1/2" in first.text
    again = client.post(high, data={"csrf": token}, headers=hx)
    assert "already approved" in again.text and 'class="msg err"' in again.text
    assert _request_status(seeded, graph_url, seeded.high_request, monkeypatch) == "pending"

    client.cookies.clear()
    assert login(client, "carol").status_code == 200
    token = csrf_of(client.get(f"/ui/incidents/{seeded.incident_id}").text)
    second = client.post(high, data={"csrf": token}, follow_redirects=False)
    assert second.status_code == 303  # without htmx: back to the incident page
    assert _request_status(seeded, graph_url, seeded.high_request, monkeypatch) == "approved"
    steps = _audit_actors(seeded, graph_url, seeded.high_request, monkeypatch)
    assert ("approved", "web:alice") in steps and ("approved", "web:carol") in steps
    assert ("refused", "web:alice") in steps


def test_incident_page_links_evidence_and_draws_the_neighbourhood(
    client: TestClient, seeded: Seeded
) -> None:
    assert login(client, "vera").status_code == 200
    page = client.get(f"/ui/incidents/{seeded.incident_id}").text
    links = re.findall(r'href="/ui/logs/event/(\d+)"', page)
    assert links and all(int(i) in seeded.event_ids for i in links)
    graph = re.search(r'<svg class="graph".*?</svg>', page, re.S)
    assert graph, "no dependency picture"
    assert "postgres" in graph.group(0) and "haproxy" in graph.group(0)
    event = client.get(f"/ui/logs/event/{links[0]}")
    assert event.status_code == 200 and f"Event #{links[0]}" in event.text
    assert client.get("/ui/incidents/INC-999").status_code == 404


def test_logs_filter_and_keyset_paging_and_no_secret_shown(
    client: TestClient, seeded: Seeded
) -> None:
    assert login(client, "vera").status_code == 200
    errors = client.get("/ui/logs", params={"service": "nginx", "level": "error"})
    assert errors.status_code == 200
    assert len(re.findall(r'class="ev lvl-error', errors.text)) == 4
    assert "lvl-info" not in errors.text
    # keyset paging, 5 at a time, through the htmx "Older" fragments
    seen: list[int] = []
    page = client.get("/ui/logs", params={"limit": 5}).text
    while True:
        seen += [int(i) for i in re.findall(r'data-id="(\d+)"', page)]
        more = re.search(r'hx-get="(/ui/logs/rows\?[^"]+)"', page)
        if not more:
            break
        page = client.get(more.group(1).replace("&amp;", "&")).text
    assert sorted(seen) == sorted(seeded.event_ids) and len(seen) == len(set(seen))
    # the line holding a password is listed, its password is not
    critical = client.get("/ui/logs", params={"text": "disk full"})
    assert "disk full" in critical.text and "[REDACTED:" in critical.text
    secret_id = re.findall(r'data-id="(\d+)"', critical.text)[0]
    incidents = re.findall(r'href="(/ui/incidents/INC-\d+)"', client.get("/ui/").text)
    assert len(incidents) >= 2  # the postgres incident's title quotes the line with the secret
    pages = ["/ui/", "/ui/incidents", "/ui/logs", f"/ui/logs/event/{secret_id}", *incidents]
    for path in pages:
        assert SECRET not in client.get(path).text
    bad = client.get("/ui/logs", params={"since": "yesterday-ish"})
    assert bad.status_code == 422 and "not a time" in bad.text


def test_search_says_when_semantic_search_is_off(client: TestClient) -> None:
    assert login(client, "vera").status_code == 200
    page = client.get("/ui/search", params={"q": "database down"})
    assert page.status_code == 200
    assert "Semantic search is off on this server" in page.text
    assert "/ui/logs?text=database%20down" in page.text


def test_one_time_login_link(client: TestClient, seeded: Seeded) -> None:
    auth = WebAuth(seeded.data_dir)
    token, _ = auth.create_link("carol")
    landing = client.get("/ui/link", params={"token": token})
    assert landing.status_code == 200 and "Continue" in landing.text
    # a link preview (GET) does not log in or burn the token
    assert client.get("/ui/", follow_redirects=False).status_code == 303
    answer = client.post("/ui/link", data={"token": token, "csrf": csrf_of(landing.text)})
    assert answer.status_code == 200 and "carol · approver" in answer.text
    client.cookies.clear()
    landing = client.get("/ui/link", params={"token": token})
    reuse = client.post("/ui/link", data={"token": token, "csrf": csrf_of(landing.text)})
    assert reuse.status_code == 401 and "already used" in reuse.text
    # an expired link is refused
    token, _ = auth.create_link("carol")
    links_path = seeded.data_dir / LINKS_FILE
    links = json.loads(links_path.read_text())
    for entry in links.values():
        entry["expires"] = datetime(2000, 1, 1, tzinfo=UTC).isoformat()
    links_path.write_text(json.dumps(links))
    landing = client.get("/ui/link", params={"token": token})
    late = client.post("/ui/link", data={"token": token, "csrf": csrf_of(landing.text)})
    assert late.status_code == 401


def test_a_password_change_ends_sessions(client: TestClient, seeded: Seeded) -> None:
    assert login(client, "alice").status_code == 200
    assert client.get("/ui/", follow_redirects=False).status_code == 200
    WebAuth(seeded.data_dir).add("alice", "another password", "approver", replace=True)
    assert client.get("/ui/", follow_redirects=False).status_code == 303


def test_users_file_holds_no_password_and_is_private(seeded: Seeded) -> None:
    path = seeded.data_dir / "users.json"
    assert path.stat().st_mode & 0o777 == 0o600
    assert (seeded.data_dir / "web-secret.key").exists() is False or (
        (seeded.data_dir / "web-secret.key").stat().st_mode & 0o777 == 0o600
    )
    text = path.read_text()
    assert PASSWORD not in text and "$argon2id$" in text


def test_live_tail_streams_a_newly_ingested_line(seeded: Seeded, graph_url: str) -> None:
    proc, base = start_server(seeded.data_dir, env=web_env(seeded.data_dir, graph_url))
    try:
        with httpx.Client(base_url=base, timeout=10) as http:
            assert login(http, "vera").status_code == 200
            marker = f"tail-marker-{time.time_ns()}"
            with http.stream(
                "GET", "/ui/logs/stream", params={"service": "nginx"}, timeout=20
            ) as stream:
                assert stream.headers["content-type"].startswith("text/event-stream")
                lines = stream.iter_lines()
                assert next(lines).startswith("retry:")  # the stream is open, watermark set
                stored = http.post(
                    "/ingest/logs",
                    json=[
                        {
                            "timestamp": datetime.now(UTC).isoformat(),
                            "service": "postgres",
                            "host": "db1",
                            "message": "not for this tail",
                        },
                        {
                            "timestamp": datetime.now(UTC).isoformat(),
                            "service": "nginx",
                            "host": "web1",
                            "level": "WARNING",
                            "message": f"{marker} <b>escaped</b>",
                        },
                    ],
                )
                assert stored.status_code == 200 and stored.json()["accepted"] == 2
                data: list[str] = []
                deadline = time.monotonic() + 15
                for line in lines:
                    if line.startswith("data: "):
                        data.append(line[6:])
                    if marker in "".join(data) or time.monotonic() > deadline:
                        break
                joined = "\n".join(data)
                assert marker in joined
                assert "&lt;b&gt;escaped&lt;/b&gt;" in joined and "<b>" not in joined
                assert "not for this tail" not in joined
            # without a session the stream is refused
            anonymous = httpx.get(f"{base}/ui/logs/stream", timeout=5)
            assert anonymous.status_code == 401
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def test_cli_adds_users_and_prints_a_working_login_link(
    tmp_path: Path, graph_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from devmesh.cli.main import app

    data_dir = tmp_path / "cli"
    runner = CliRunner()
    env = {"DEVMESH_DATA_DIR": str(data_dir)}
    added = runner.invoke(
        app,
        ["ui", "user", "add", "dora", "--role", "approver"],
        input=f"{PASSWORD}\n{PASSWORD}\n",
        env=env,
    )
    assert added.exit_code == 0, added.output
    assert "web-role:approver" in added.output  # tells how the action layer grants it
    bad = runner.invoke(
        app, ["ui", "user", "add", "eve", "--role", "root"], input="x\nx\n", env=env
    )
    assert bad.exit_code == 2
    listed = runner.invoke(app, ["ui", "user", "list"], env=env)
    assert "dora" in listed.output and "approver" in listed.output
    made = runner.invoke(app, ["ui", "link", "dora", "--base-url", "http://testserver"], env=env)
    assert made.exit_code == 0, made.output
    url = next(
        line
        for line in made.output.splitlines()
        if line.startswith("http://testserver/ui/link?token=")
    )
    settings = settings_for(data_dir, graph_url, monkeypatch)
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as http:
        landing = http.get(url.removeprefix("http://testserver"))
        token = url.split("token=", 1)[1]
        answer = http.post("/ui/link", data={"token": token, "csrf": csrf_of(landing.text)})
        assert answer.status_code == 200 and "dora · approver" in answer.text
    assert runner.invoke(app, ["ui", "link", "nobody"], env=env).exit_code == 1
