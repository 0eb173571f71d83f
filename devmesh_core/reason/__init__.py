"""Reasoning: runbooks, GraphRAG retrieval, LLM ports and runbook-guided diagnosis."""
