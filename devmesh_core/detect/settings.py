"""Settings of the detectors and the incident lifecycle (``DEVMESH_DETECT__*``).

Each detector has its own block of fields, prefixed by its name, so one can be tuned (or
switched off) without touching the others. Durations are seconds.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class DetectSettings(BaseModel):
    """How signals are detected and correlated into incidents."""

    enabled: bool = Field(default=True, description="run the detection loop in the API server")
    interval: float = Field(default=5.0, gt=0, description="seconds between detection passes")
    batch: int = Field(default=5_000, ge=1, description="events read per pass")

    # Error-rate spike, per service and per host.
    spike_enabled: bool = True
    spike_window: float = Field(default=300.0, gt=0, description="length of a counting window")
    spike_history: int = Field(
        default=24, ge=3, description="past windows of the same time-of-day bucket kept"
    )
    spike_buckets: int = Field(
        default=24, ge=1, le=1440, description="time-of-day buckets (24 = one per hour)"
    )
    spike_min_errors: int = Field(
        default=10, ge=1, description="errors in a window below which nothing is a spike"
    )
    spike_mad_k: float = Field(default=6.0, gt=0, description="MADs above the median")
    spike_min_ratio: float = Field(default=3.0, ge=1, description="times the baseline median")

    # New signatures (templates) of a service, and known templates at a new host.
    new_signature_enabled: bool = True
    new_signature_warmup: float = Field(
        default=600.0,
        ge=0,
        description="seconds after a service is first seen before its templates count as new",
    )
    new_signature_min_level: Literal["WARNING", "ERROR", "CRITICAL"] = "ERROR"
    new_host_enabled: bool = True
    new_host_fleet_hosts: int = Field(
        default=10,
        ge=1,
        description="a known template already on this many hosts is fleet-wide background: "
        "at a new host it joins an open incident but opens none …",
    )
    new_host_fleet_age: float = Field(
        default=86_400.0,
        ge=0,
        description="… once it has been around this many seconds (a fast spread is news)",
    )
    group_seconds: float = Field(
        default=2.0,
        ge=0,
        description="new templates of one host this close together (a multi-line crash "
        "dump split into lines) are one signal",
    )

    # Health events from node event files and shipper heartbeats.
    health_enabled: bool = True
    health_event_types: list[str] = Field(
        default_factory=lambda: [
            "service_unhealthy",
            "healthcheck_failed",
            "deployment_failed",
            "node_offline",
        ]
    )
    recovery_event_types: list[str] = Field(
        default_factory=lambda: ["service_recovered", "node_online"]
    )
    heartbeat_event_types: list[str] = Field(default_factory=lambda: ["heartbeat", "node_online"])
    heartbeat_timeout: float = Field(
        default=180.0, gt=0, description="seconds of silence after which a shipping node is offline"
    )

    # Runbook trigger patterns.
    runbooks_enabled: bool = True

    # Correlation and lifecycle.
    correlation_window: float = Field(
        default=900.0,
        gt=0,
        description="a signal joins an active incident touching the same "
        "service, a dependency or the same host if its last signal is this recent",
    )
    open_min_severity: Literal["low", "medium", "high", "critical"] = Field(
        default="medium", description="weaker signals only join incidents, never open one"
    )
    auto_resolve_after: float = Field(
        default=1800.0, gt=0, description="quiet seconds after which an incident resolves"
    )
    reopen_window: float = Field(
        default=3600.0,
        ge=0,
        description="a resolved incident reopens if one of its "
        "signatures returns within this many seconds",
    )
    update_interval: float = Field(
        default=300.0, ge=0, description="at most one 'updated' event per incident this often"
    )
    throttle: float = Field(
        default=60.0,
        ge=0,
        description="a repeat of the same signal within this many seconds "
        "only adds to the count of the one in the timeline",
    )
    use_graph: bool = Field(
        default=True,
        description="read dependencies and past fixes from (and project incidents to) the "
        "knowledge graph when it is there: already open in this process, an external "
        "graph_url, or an embedded graph that exists under data_dir/graph; false = never",
    )
    start_graph: bool = Field(
        default=False,
        description="also start the embedded FalkorDB for detection when no graph is there "
        "yet (takes seconds and memory; normally the projection loop or `devmesh graph "
        "project` creates it)",
    )
    max_timeline: int = Field(default=200, ge=10, description="signals kept per incident")
