"""Graph URL parsing (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from devmesh_core.errors import ConfigError
from devmesh_core.graph.base import DEFAULT_GRAPH, parse_graph_url, redact_url

DATA = Path("/var/lib/devmesh")


@pytest.mark.parametrize("url", [None, "", "  ", "falkordb+embedded://", "falkordb+embedded:///"])
def test_embedded_default(url: str | None) -> None:
    parsed = parse_graph_url(url, DATA)
    assert parsed.kind == "embedded"
    assert parsed.directory == DATA / "graph"
    assert parsed.graph == DEFAULT_GRAPH
    assert parsed.persistence == "aof"


def test_embedded_directory_and_options() -> None:
    parsed = parse_graph_url(
        "falkordb+embedded:///srv/graph%20data?graph=lab&persistence=rdb", DATA
    )
    assert parsed.directory == Path("/srv/graph data")
    assert (parsed.graph, parsed.persistence) == ("lab", "rdb")


@pytest.mark.parametrize(
    "url",
    [
        "falkordb+embedded://relative/dir",
        "falkordb+embedded://?persistence=sometimes",
        "falkordb+embedded://?colour=blue",
        "falkordb+embedded://?graph=bad%20name",
    ],
)
def test_embedded_errors(url: str) -> None:
    with pytest.raises(ConfigError):
        parse_graph_url(url, DATA)


@pytest.mark.parametrize(
    ("url", "graph", "server_url"),
    [
        ("redis://localhost:6379", DEFAULT_GRAPH, "redis://localhost:6379"),
        ("redis://localhost:6379/incidents", "incidents", "redis://localhost:6379"),
        ("redis://localhost:6379/0", DEFAULT_GRAPH, "redis://localhost:6379/0"),
        ("redis://localhost/2?graph=g", "g", "redis://localhost/2"),
        ("rediss://u:p%40ss@db.lan:6380/kg", "kg", "rediss://u:p%40ss@db.lan:6380"),
        ("falkor://db.lan:6379/kg", "kg", "falkor://db.lan:6379"),
        ("falkordb://db.lan/kg", "kg", "redis://db.lan"),
        ("redis://h:1/kg?socket_keepalive=true", "kg", "redis://h:1?socket_keepalive=true"),
    ],
)
def test_server_urls(url: str, graph: str, server_url: str) -> None:
    parsed = parse_graph_url(url, DATA)
    assert parsed.kind == "server"
    assert parsed.graph == graph
    assert parsed.server_url == server_url
    assert parsed.directory is None


@pytest.mark.parametrize(
    "url",
    ["redis://", "redis://host:notaport/g", "redis://h/a?graph=b", "mysql://h/db", "graph.db"],
)
def test_server_url_errors(url: str) -> None:
    with pytest.raises(ConfigError):
        parse_graph_url(url, DATA)


def test_errors_do_not_leak_passwords() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_graph_url("redis://user:hunter2@host:bad/g", DATA)
    assert "hunter2" not in str(caught.value)
    assert redact_url("redis://user:hunter2@host:1/g") == "redis://user:***@host:1/g"
    assert redact_url("redis://host:1/g") == "redis://host:1/g"
