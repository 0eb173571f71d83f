"""The graph tests' real embedded FalkorDB fixtures, reused for incident projection tests
(``graph_server`` is session-scoped; ``graph`` is a fresh graph key per test)."""

from tests.integration.graph.conftest import graph, graph_server

__all__ = ["graph", "graph_server"]
