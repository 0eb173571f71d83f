"""Log stores: the ``LogStore`` port and ``open_store`` to pick an adapter by URL."""

from __future__ import annotations

from devmesh_core.errors import ConfigError
from devmesh_core.store.base import Cursor, LogQuery, LogStore, Page


def open_store(url: str, *, migrate: bool = True) -> LogStore:
    """Open the store a URL names: ``sqlite:///relative``, ``sqlite:////absolute`` or
    ``mysql://user:password@host:port/database`` (also ``mariadb://``, ``mysql+pymysql://``).

    With ``migrate`` the schema is created or upgraded before the store is returned.
    """
    scheme = url.split(":", 1)[0].lower()
    store: LogStore
    if scheme == "sqlite":
        from devmesh_core.store.sqlite import SQLiteLogStore

        store = SQLiteLogStore.from_url(url)
    elif scheme in ("mysql", "mariadb", "mysql+pymysql"):
        from devmesh_core.store.mysql import MySQLLogStore

        store = MySQLLogStore.from_url(url)
    else:
        raise ConfigError(f"unsupported database URL scheme {scheme!r} (use sqlite:// or mysql://)")
    if migrate:
        try:
            store.migrate()
        except BaseException:
            store.close()
            raise
    return store


__all__ = ["Cursor", "LogQuery", "LogStore", "Page", "open_store"]
