"""structlog setup for DevMesh's own logs: JSON for services, pretty output in a terminal."""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal, TextIO

import structlog


def configure_logging(
    fmt: Literal["auto", "json", "console"] = "auto",
    level: str = "INFO",
    stream: TextIO | None = None,
) -> None:
    """Configure structlog (and route stdlib logging through it) once, at an entry point.

    ``auto`` picks the console renderer when the stream is a TTY and JSON otherwise, so the
    same binary logs readable lines for a person and parseable lines under systemd.
    """
    out = stream if stream is not None else sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any
    if use_json:
        renderer = structlog.processors.JSONRenderer()
        shared.append(structlog.processors.format_exc_info)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=out.isatty())
    numeric = logging.getLevelName(level.upper())
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    # Libraries (uvicorn, httpx, …) log through stdlib logging: render them the same way.
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)


def get_logger(name: str | None = None, **initial: Any) -> Any:
    """Return a structlog logger bound to ``name`` (the module) and any initial context."""
    logger = structlog.get_logger(name)
    return logger.bind(logger=name, **initial) if name else logger.bind(**initial)
