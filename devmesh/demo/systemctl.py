"""A ``systemctl`` stand-in for the demo: the node agent's restart reaches the demo's units.

DevMesh's node agent restarts a unit by running ``systemctl restart UNIT`` (an argv, never a
shell). The demo's services are plain processes, not systemd units, so ``devmesh demo`` puts
an executable named ``systemctl`` first on the shipper's ``PATH``; it runs this module with
the demo's control directory. **It stands in for systemd in the demo only**: it understands
``start``, ``stop``, ``restart``, ``reload`` and ``is-active`` for the units the demo's
supervisor (:class:`devmesh.demo.units.UnitSupervisor`) manages, by dropping a request file
in ``<control>/requests`` and waiting for the supervisor's reply, like ``systemctl`` waits
for systemd's job to finish. Exit codes follow systemctl's: 0 done/active, 3 not active,
5 unit not found, 1 failure.

Standard library only: it starts in a fraction of a second on a busy node.

    python -m devmesh.demo.systemctl --control DIR restart demo-inventory.service
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from pathlib import Path

JOB_VERBS = ("start", "stop", "restart", "reload")
EXIT_NOT_ACTIVE = 3
EXIT_NO_UNIT = 5
JOB_TIMEOUT = 60.0


def unit_state(control: Path, unit: str) -> str | None:
    """The unit's state as the supervisor last wrote it (``active``, ``failed``,
    ``inactive``, ``activating``), or ``None`` for a unit it does not manage."""
    try:
        return (control / "state" / unit).read_text(encoding="utf-8").strip() or "inactive"
    except FileNotFoundError:
        return None


def request_job(control: Path, verb: str, unit: str, *, timeout: float = JOB_TIMEOUT) -> int:
    """Ask the supervisor to run a job on ``unit`` and wait for its reply; the exit code."""
    job = uuid.uuid4().hex
    requests = control / "requests"
    tmp = requests / f".{job}.tmp"
    tmp.write_text(json.dumps({"id": job, "verb": verb, "unit": unit}), encoding="utf-8")
    os.replace(tmp, requests / f"{job}.json")  # atomic: the supervisor never reads half
    reply = control / "replies" / f"{job}.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            answer = json.loads(reply.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            time.sleep(0.05)
            continue
        reply.unlink(missing_ok=True)
        message = str(answer.get("message", ""))
        if message:
            print(message)
        return int(answer.get("exit_code", 1))
    print(f"Job for {unit} timed out (no answer from the demo supervisor in {timeout:g}s).")
    return 1


def main(argv: list[str] | None = None) -> int:
    """``systemctl [options] VERB UNIT`` against the demo supervisor's control directory."""
    args = list(sys.argv[1:] if argv is None else argv)
    control: Path | None = None
    if len(args) >= 2 and args[0] == "--control":
        control = Path(args[1])
        args = args[2:]
    if control is None:
        env = os.environ.get("DEVMESH_DEMO_CONTROL")
        control = Path(env) if env else None
    words = [a for a in args if not a.startswith("-")]  # --no-pager, -q … are accepted
    if control is None or len(words) != 2:
        print("usage: systemctl [--no-pager] {start|stop|restart|reload|is-active} UNIT")
        return 1
    verb, unit = words
    if not unit.endswith((".service", ".socket", ".timer", ".target")):
        unit += ".service"
    state = unit_state(control, unit)
    if state is None:  # what systemctl says about a unit that does not exist
        if verb == "is-active":
            print("inactive")
            return EXIT_NOT_ACTIVE
        print(f"Failed to {verb} {unit}: Unit {unit} not found.")
        return EXIT_NO_UNIT
    if verb == "is-active":
        print(state)
        return 0 if state == "active" else EXIT_NOT_ACTIVE
    if verb in JOB_VERBS:
        return request_job(control, verb, unit)
    print(f"Unknown command verb {verb}.")
    return 1


if __name__ == "__main__":
    sys.exit(main())
