"""The web status page (``/ui``): overview, incidents with approvals, logs with a live
tail, semantic search. The router is in :mod:`devmesh.web.routes` (imported by the API
only, so the CLI's ``devmesh ui`` commands do not load FastAPI); see ``README.md`` here."""
