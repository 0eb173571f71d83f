"""A Qdrant server (``QdrantClient(url=...)``): for fleets, or more templates than local mode
handles well (it warns above 20,000 points).

Same collection layout as the embedded default, so moving is a re-embed, not a migration.
The server indexes the payload keys search filters on (services, hosts, the maximum level
rank and ``doc_id``), which local mode cannot use.

No Qdrant server can run on DevMesh's development machines (it is not packaged for PyPI,
apt or npm), so this class also accepts a prebuilt client: the contract tests run it over a
local-mode client, which speaks the same ``QdrantClient`` API.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit, urlunsplit

from qdrant_client import QdrantClient, models

from devmesh_core.errors import ConfigError
from devmesh_core.vectors._qdrant import ID_KEY, QdrantIndex
from devmesh_core.vectors.base import DEFAULT_COLLECTION

_KEYWORD_FIELDS = (ID_KEY, "services", "hosts")
_INTEGER_FIELDS = ("max_level",)


class QdrantServerIndex(QdrantIndex):
    """A collection on a Qdrant server (or on any prebuilt ``QdrantClient``)."""

    backend = "qdrant"

    def __init__(
        self,
        client: QdrantClient,
        *,
        dim: int,
        collection: str = DEFAULT_COLLECTION,
        ensure: bool = True,
    ) -> None:
        super().__init__(client, dim=dim, collection=collection)
        if ensure:
            try:
                self.ensure_collection()
            except BaseException:
                self.close()
                raise

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        dim: int,
        collection: str | None = None,
        api_key: str | None = None,
        timeout: float = 10.0,
    ) -> QdrantServerIndex:
        """Connect to ``http(s)://host:port[?collection=NAME&api_key=KEY]``.

        The query string is optional; explicit arguments win over it. Raises ``ConfigError``
        for a malformed URL and ``BackendUnavailable`` when the server does not answer.
        """
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"not a Qdrant server URL: {url!r} (use http://host:6333)")
        query = dict(parse_qsl(parts.query))
        unknown = set(query) - {"collection", "api_key"}
        if unknown:
            raise ConfigError(f"unknown Qdrant URL parameter(s): {', '.join(sorted(unknown))}")
        base = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
        client = QdrantClient(
            url=base,
            api_key=api_key or query.get("api_key"),
            timeout=int(timeout),
            check_compatibility=False,
        )
        return cls(
            client, dim=dim, collection=collection or query.get("collection") or DEFAULT_COLLECTION
        )

    def _created(self) -> None:
        for name in _KEYWORD_FIELDS:
            self._client.create_payload_index(
                self.collection, name, field_schema=models.PayloadSchemaType.KEYWORD
            )
        for name in _INTEGER_FIELDS:
            self._client.create_payload_index(
                self.collection, name, field_schema=models.PayloadSchemaType.INTEGER
            )
