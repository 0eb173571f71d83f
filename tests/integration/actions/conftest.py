"""Fixtures of the remediation tests: a fake ``systemctl`` first on PATH that records each
call's argv (one ``[word]`` per argument, so word boundaries are visible), and a node
actions config over temp directories."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml


@dataclass
class FakeNode:
    """A node's world in a temp dir: fake tools on PATH, a cache, logs and scripts."""

    root: Path
    bin_dir: Path
    calls: Path
    cache: Path
    log_file: Path
    scripts: Path
    config: Path
    touched: Path

    def systemctl_calls(self) -> list[str]:
        """Each recorded call, e.g. ``[restart][nginx.service]``."""
        return self.calls.read_text().splitlines() if self.calls.exists() else []

    def env(self) -> dict[str, str]:
        """The environment of an agent process using the fake tools."""
        return {**os.environ, "PATH": f"{self.bin_dir}{os.pathsep}{os.environ['PATH']}"}


def _executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)


def make_node(root: Path, host: str = "web1") -> FakeNode:
    """Build the fake node under ``root`` (see :class:`FakeNode`)."""
    bin_dir, cache, scripts, logs = root / "bin", root / "cache", root / "scripts", root / "logs"
    for d in (bin_dir, cache, scripts, logs):
        d.mkdir(parents=True)
    calls = root / "systemctl.calls"
    _executable(
        bin_dir / "systemctl",
        "#!/bin/sh\n"
        f"for a in \"$@\"; do printf '[%s]' \"$a\"; done >> '{calls}'\n"
        f"echo >> '{calls}'\n"
        'if [ "$1" = "is-active" ]; then echo active; fi\n'
        "exit 0\n",
    )
    touched = root / "touched"
    _executable(
        scripts / "touch-marker",
        f"#!/bin/sh\nprintf '%s\\n' \"$@\" > '{touched}'\necho marker written\n",
    )
    _executable(scripts / "slow", "#!/bin/sh\nsleep 30\n")
    log_file = logs / "app.log"
    config = root / "actions.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "allow": {
                    name: {
                        "units": ["nginx"],
                        "caches": ["thumbs"],
                        "logs": ["app"],
                        "scripts": ["touch-marker", "slow"],
                    }
                    for name in (host, f"{host}-b")
                },
                "caches": {"thumbs": str(cache)},
                "logs": {"app": [str(log_file)]},
                "scripts_dir": str(scripts),
                "scripts": {
                    "touch-marker": {
                        "risk": "low",
                        "params": {"label": {"type": "str"}, "count": {"type": "int"}},
                    },
                    "slow": {"timeout": 0.5},
                },
                "roles": {"web:alice": ["approver"], "web:bob": ["admin"]},
                "verify_minutes": 0,
            }
        )
    )
    return FakeNode(root, bin_dir, calls, cache, log_file, scripts, config, touched)


@pytest.fixture
def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeNode:
    """A fake node whose ``systemctl`` is first on this process's PATH."""
    fake = make_node(tmp_path / "node")
    monkeypatch.setenv("PATH", f"{fake.bin_dir}{os.pathsep}{os.environ['PATH']}")
    return fake
