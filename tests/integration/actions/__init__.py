"""Remediation: agent execution, end to end over a real server, store contract."""
