"""The demo's record of what happened: printed as it happens and kept as JSON lines.

Every step of ``devmesh demo`` is one :class:`StepRecord`: printed (with rich) with its wall
time and the seconds since the demo started, appended to ``<data_dir>/demo-steps.jsonl``
and kept in memory, so a person watches the loop close and a test asserts on the same
records, in order.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from rich.console import Console
from rich.markup import escape

Status = Literal["ok", "info", "failed"]

_MARK = {"ok": "[green]✓[/green]", "info": "[cyan]•[/cyan]", "failed": "[red]✗[/red]"}


@dataclass(frozen=True, slots=True)
class StepRecord:
    """One step: its name (stable, for tests), outcome, message and details."""

    seq: int
    step: str
    status: Status
    message: str
    at: str
    elapsed_s: float
    detail: dict[str, Any] = field(default_factory=dict)


class DemoFailed(Exception):
    """A step did not happen (timed out or went wrong); ``step`` names it."""

    def __init__(self, step: str, message: str, *, transient: bool = False) -> None:
        super().__init__(f"{step}: {message}")
        self.step = step
        self.message = message
        self.transient = transient  # worth asking again (no answer, or a 5xx)


class StepLog:
    """Prints and records steps (see the module docstring)."""

    def __init__(self, console: Console, path: Path) -> None:
        self.console = console
        self.path = path
        self.records: list[StepRecord] = []
        self.started = time.monotonic()
        path.parent.mkdir(parents=True, exist_ok=True)

    def record(
        self, step: str, message: str, *, status: Status = "ok", **detail: Any
    ) -> StepRecord:
        """Print and keep one step."""
        now = datetime.now(UTC)
        record = StepRecord(
            seq=len(self.records) + 1,
            step=step,
            status=status,
            message=message,
            at=now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            elapsed_s=round(time.monotonic() - self.started, 2),
            detail=detail,
        )
        self.records.append(record)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(asdict(record), default=str) + "\n")
        self.console.print(
            f"[dim]{now:%H:%M:%S} +{record.elapsed_s:6.1f}s[/dim] {_MARK[status]} "
            f"[bold]{step}[/bold]  {escape(message)}"
        )
        return record

    def note(self, text: str) -> None:
        """An indented line under the last step (not recorded)."""
        self.console.print(f"                     {text}")


def read_steps(path: Path) -> list[dict[str, Any]]:
    """The records of a ``demo-steps.jsonl`` file, in order."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
