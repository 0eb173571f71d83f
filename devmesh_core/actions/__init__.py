"""Remediation: typed allowlisted actions, approvals, execution by node agents, audit."""
