"""The node agent's executor running real (harmless) processes: a fake ``systemctl`` first
on PATH, a real script in the allowlisted directory, a real cache directory and log file."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import pytest

from devmesh_core.actions.settings import load_action_settings
from ingest.agent import Executor
from tests.integration.actions.conftest import FakeNode


def _executor(node: FakeNode, **kw: Any) -> Executor:
    return Executor(host="web1", settings=load_action_settings(node.config), **kw)


def _req(action: str, params: dict[str, Any], host: str = "web1") -> dict[str, Any]:
    return {"id": "A-test2", "action": action, "params": params, "host": host}


def test_restart_unit_runs_systemctl_argv_and_verifies(node: FakeNode) -> None:
    result = _executor(node).execute(_req("restart_unit", {"unit": "nginx"}))
    assert result["exit_code"] == 0
    assert result["argv"] == [str(node.bin_dir / "systemctl"), "restart", "nginx.service"]
    assert node.systemctl_calls() == ["[restart][nginx.service]", "[is-active][nginx.service]"]
    assert result["verify"]["ok"] is True and result["verify"]["state"] == "active"
    assert result["duration"] >= 0


def test_script_runs_with_typed_args_only(node: FakeNode) -> None:
    params = {"script": "touch-marker", "args": {"label": "hello", "count": 3}}
    result = _executor(node).execute(_req("run_script", params))
    assert result["exit_code"] == 0, result
    assert "marker written" in result["output"]
    assert node.touched.read_text().splitlines() == ["--count=3", "--label=hello"]


def test_script_writable_by_others_is_refused(node: FakeNode) -> None:
    script = node.scripts / "touch-marker"
    script.chmod(0o777)
    result = _executor(node).execute(_req("run_script", {"script": "touch-marker"}))
    assert result["exit_code"] == 126 and "writable" in result["refused"]
    assert not node.touched.exists()


def test_script_timeout_is_enforced(node: FakeNode) -> None:
    result = _executor(node).execute(_req("run_script", {"script": "slow"}))
    assert result["exit_code"] == 124
    assert "timed out" in result["output"]
    assert result["duration"] < 10


def test_clear_cache_removes_contents_not_symlink_targets(node: FakeNode, tmp_path: Path) -> None:
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    (node.cache / "a.bin").write_bytes(b"x" * 100)
    (node.cache / "sub").mkdir()
    (node.cache / "sub" / "b.bin").write_bytes(b"y")
    (node.cache / "link").symlink_to(outside)
    result = _executor(node).execute(_req("clear_cache", {"cache": "thumbs"}))
    assert result["exit_code"] == 0, result
    assert result["removed"] == 3
    assert list(node.cache.iterdir()) == []
    assert node.cache.is_dir()
    assert (outside / "keep.txt").read_text() == "keep"


def test_rotate_logs_gzips_and_truncates(node: FakeNode) -> None:
    node.log_file.write_text("line 1\nline 2\n")
    result = _executor(node).execute(_req("rotate_logs", {"target": "app"}))
    assert result["exit_code"] == 0, result
    assert node.log_file.read_text() == ""
    rotated = [p for p in node.log_file.parent.iterdir() if p.name.endswith(".gz")]
    assert len(rotated) == 1
    assert gzip.decompress(rotated[0].read_bytes()) == b"line 1\nline 2\n"


def test_dry_run_runs_nothing(node: FakeNode) -> None:
    (node.cache / "a.bin").write_bytes(b"x")
    executor = _executor(node, dry_run=True)
    unit = executor.execute(_req("stop_unit", {"unit": "nginx"}))
    cache = executor.execute(_req("clear_cache", {"cache": "thumbs"}))
    assert unit["dry_run"] and unit["argv"][1:] == ["stop", "nginx.service"]
    assert cache["dry_run"] and cache["paths"] == [str(node.cache)]
    assert node.systemctl_calls() == []
    assert (node.cache / "a.bin").exists()


def test_node_refuses_what_its_own_config_does_not_allow(node: FakeNode) -> None:
    executor = _executor(node)
    for request in (
        _req("restart_unit", {"unit": "sshd"}),  # the server allowed it? the node does not
        _req("restart_unit", {"unit": "nginx; rm -rf /"}),
        _req("restart_unit", {"unit": "nginx"}, host="db1"),  # not this node
        _req("run_shell", {"cmd": "reboot"}),
        _req("clear_cache", {"cache": "/etc"}),
    ):
        result = executor.execute(request)
        assert result["exit_code"] == 126, request
        assert result["refused"]
    assert node.systemctl_calls() == []


def test_missing_tool_is_reported_not_crashed(
    node: FakeNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(node.root / "empty"))
    result = _executor(node).execute(_req("restart_unit", {"unit": "nginx"}))
    assert result["exit_code"] == 126 and "not on PATH" in result["refused"]
