"""A miner that owns its state directory, so two processes never fight over one state file."""

from __future__ import annotations

import contextlib
import fcntl
from pathlib import Path
from typing import IO

from devmesh_core.errors import BackendUnavailable
from devmesh_core.templates.miner import MinerConfig, SignatureMiner


class OwnedMiner(SignatureMiner):
    """``SignatureMiner`` holding an exclusive lock on its state directory.

    The miner's state (and so its template ids) lives in one file; a second process mining
    into the same directory would overwrite it. The lock turns that into a clear error at
    start instead (``BackendUnavailable``), e.g. for ``devmesh import`` while the server runs.
    """

    def __init__(self, state_dir: Path, config: MinerConfig | None = None) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self._lock_file: IO[str] | None = (state_dir / "lock").open("w")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            self._lock_file.close()
            self._lock_file = None
            raise BackendUnavailable(
                f"the template miner state in {state_dir} is in use by another DevMesh process",
                backend="miner",
            ) from exc
        try:
            super().__init__(state_dir, config)
        except BaseException:
            self._release()
            raise

    def _release(self) -> None:
        if self._lock_file is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._release()
