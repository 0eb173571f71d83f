"""Real parts for the reasoning tests: the session's embedded FalkorDB (from the graph
tests) and the fake Ollama HTTP server (from the LLM adapter tests)."""

from tests.integration.graph.conftest import graph, graph_server
from tests.integration.reason_llm.conftest import fake_ollama

__all__ = ["fake_ollama", "graph", "graph_server"]
