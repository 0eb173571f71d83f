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

    data_dir: Path = Field(default_factory=_default_data_dir)
    database_url: str | None = Field(
        default=None,
        description="sqlite:///path or mysql://user:pw@host:port/db; default SQLite in data_dir",
    )

    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8770, ge=0, le=65535)
    # Plain tokens given through the environment (e.g. a deploy secret). Tokens made with
    # `devmesh token create` live as hashes in the store instead.
    api_tokens: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    max_batch_events: int = Field(default=10_000, ge=1)
    max_page_size: int = Field(default=1_000, ge=1)

    retention_days: int = Field(default=90, ge=1)

    # Syslog receiver (off unless a port is set). Syslog has no authentication: bind it to
    # an address only trusted nodes reach (e.g. DEVMESH_SYSLOG_HOST=0.0.0.0 on a home LAN).
    syslog_host: str = "127.0.0.1"
    syslog_udp_port: int | None = Field(default=None, ge=0, le=65535)
    syslog_tcp_port: int | None = Field(default=None, ge=0, le=65535)

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
    vector_api_key: SecretStr | None = None
    embed_batch: int = Field(default=32, ge=1, le=1024)
    embed_threads: int = Field(default=1, ge=1, le=64)
    embed_interval: float = Field(default=10.0, gt=0)

    topology_file: Path | None = Field(
        default=None,
        description="YAML of declared service dependencies for the graph (DEPENDS_ON, "
        "source=config)",
    )

    mine_templates: bool = Field(
        default=True, description="mine every ingested message into a template (signature)"
    )

    # One section per capability, each defined next to the code it configures.
    detect: DetectSettings = Field(default_factory=DetectSettings)
    notify: NotifySettings = Field(default_factory=NotifySettings)
    reason: ReasonSettings = Field(default_factory=ReasonSettings)
    actions: ActionSettings = Field(default_factory=ActionSettings)
    discord: DiscordSettings = Field(default_factory=DiscordSettings)
    telegram: TelegramSettings = Field(default_factory=TelegramSettings)

    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

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
