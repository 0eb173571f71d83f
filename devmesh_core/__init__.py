"""DevMesh core library: ingest, store, understand, reason and act on homelab logs.

Front ends (the HTTP API, the CLI, the chat bots) are thin layers over this package;
nothing here imports a chat, HTTP or CLI framework, and nothing connects at import time.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
