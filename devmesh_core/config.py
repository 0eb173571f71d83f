"""Settings: read once at an entry point (CLI, server, bot) and passed down.

Everything comes from ``DEVMESH_*`` environment variables or a ``.env`` file. Nothing in the
library reads the environment on its own; code that needs a setting receives ``Settings``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from devmesh_core.actions.settings import ActionSettings
from devmesh_core.chat_settings import DiscordSettings, TelegramSettings
from devmesh_core.detect.settings import DetectSettings
from devmesh_core.notify.settings import NotifySettings
from devmesh_core.reason.settings import ReasonSettings


def _default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "devmesh"


class Settings(BaseSettings):
    """DevMesh configuration. All state lives under ``data_dir`` unless a URL says otherwise."""

    model_config = SettingsConfigDict(
        env_prefix="DEVMESH_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        # Nested sections: DEVMESH_DETECT__SPIKE_MIN_ERRORS=5 sets detect.spike_min_errors.
        env_nested_delimiter="__",
    )

    data_dir: Path = Field(
        default_factory=_default_data_dir,
        description="where all state lives: SQLite file, miner state, vectors, graph, keys",
    )
    database_url: str | None = Field(
        default=None,
        description="sqlite:///path or mysql://user:pw@host:port/db; default SQLite in data_dir",
    )

    api_host: str = Field(
        default="127.0.0.1", description="address the API binds (loopback unless tokens exist)"
    )
    api_port: int = Field(default=8770, ge=0, le=65535, description="port of the HTTP API")
    # Plain tokens given through the environment (e.g. a deploy secret). Tokens made with
    # `devmesh token create` live as hashes in the store instead.
    api_tokens: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, description="comma-separated bearer tokens accepted by the API"
    )
    max_body_bytes: int = Field(
        default=32 * 1024 * 1024, ge=1024, description="largest request body (413 above)"
    )
    max_batch_events: int = Field(
        default=10_000, ge=1, description="most events in one ingest batch (413 above)"
    )
    max_page_size: int = Field(default=1_000, ge=1, description="most events per query page")

    retention_days: int = Field(
        default=90, ge=1, description="events older than this are deleted by retention"
    )

    # Syslog receiver (off unless a port is set). Syslog has no authentication: bind it to
    # an address only trusted nodes reach (e.g. DEVMESH_SYSLOG_HOST=0.0.0.0 on a home LAN).
    syslog_host: str = Field(default="127.0.0.1", description="address the syslog receiver binds")
    syslog_udp_port: int | None = Field(
        default=None, ge=0, le=65535, description="syslog over UDP (RFC 3164/5424); off if unset"
    )
    syslog_tcp_port: int | None = Field(
        default=None, ge=0, le=65535, description="syslog over TCP (octet-counted or LF-framed)"
    )

    graph_url: str | None = Field(
        default=None,
        description="redis://host:port/graph for an external FalkorDB; default: the embedded "
        "server DevMesh runs under data_dir/graph",
    )

    # Template embeddings (semantic search over log signatures).
    vectors_enabled: bool = Field(default=True, description="embed templates into Qdrant")
    vector_url: str | None = Field(
        default=None,
        description="http(s)://host:6333 for a Qdrant server; default: Qdrant local mode in "
        "data_dir/vectors (one process at a time)",
    )
    vector_api_key: SecretStr | None = Field(default=None, description="API key of a Qdrant server")
    embed_batch: int = Field(default=32, ge=1, le=1024, description="templates per embedding batch")
    embed_threads: int = Field(default=1, ge=1, le=64, description="torch threads for embedding")
    embed_interval: float = Field(
        default=10.0, gt=0, description="seconds between embedding worker passes"
    )

    graph_enabled: bool = Field(
        default=True,
        description="keep the knowledge graph projected from the logs while the server runs "
        "(starts the embedded FalkorDB unless graph_url names one)",
    )
    graph_interval: float = Field(
        default=30.0, gt=0, description="seconds between graph projection passes"
    )
    graph_lag: float = Field(
        default=60.0,
        ge=0,
        description="seconds the projection stays behind the newest writes, so rows of "
        "transactions still committing are not skipped",
    )
    bots_enabled: bool = Field(
        default=True, description="run each chat bot whose token is set inside the server"
    )

    topology_file: Path | None = Field(
        default=None,
        description="YAML of declared service dependencies for the graph (DEPENDS_ON, "
        "source=config)",
    )

    mine_templates: bool = Field(
        default=True, description="mine every ingested message into a template (signature)"
    )
    miner_url: str | None = Field(
        default=None,
        description="redis://host:6379/0 of a Redis through which several API workers share "
        "one template miner (ids agree); default: the miner state in data_dir/miner, one "
        "process at a time",
    )
    miner_process: bool = Field(
        default=True,
        description="in the server, run the template miner (the data_dir/miner one) in a child "
        "process, so mining runs beside ingest instead of under its interpreter lock",
    )
    miner_key: str | None = Field(
        default=None,
        description="key prefix of the shared miner state in Redis; default "
        "devmesh:miner:<name of data_dir>",
    )

    # One section per capability, each defined next to the code it configures.
    detect: DetectSettings = Field(default_factory=DetectSettings)
    notify: NotifySettings = Field(default_factory=NotifySettings)
    reason: ReasonSettings = Field(default_factory=ReasonSettings)
    actions: ActionSettings = Field(default_factory=ActionSettings)
    discord: DiscordSettings = Field(default_factory=DiscordSettings)
    telegram: TelegramSettings = Field(default_factory=TelegramSettings)

    log_format: Literal["auto", "json", "console"] = Field(
        default="auto", description="DevMesh's own logs: JSON when not a terminal (auto)"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="level of DevMesh's own logs"
    )

    @field_validator("api_tokens", mode="before")
    @classmethod
    def _split_tokens(cls, value: object) -> object:
        """Accept a comma-separated string, as environment variables are flat."""
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("data_dir", mode="after")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @property
    def effective_database_url(self) -> str:
        """The store URL in force: the configured one, or SQLite inside ``data_dir``."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'devmesh.db'}"

    @property
    def miner_dir(self) -> Path:
        """Where the template miner keeps its state (template ids must survive restarts)."""
        return self.data_dir / "miner"

    def ensure_data_dir(self) -> Path:
        """Create the data directory (private to the user) and return it."""
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        return self.data_dir
