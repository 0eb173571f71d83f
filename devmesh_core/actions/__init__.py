"""Remediation: typed allowlisted actions, approvals, execution by node agents, audit.

Import the service from :mod:`devmesh_core.actions.service` and the shapes from
:mod:`devmesh_core.actions.models`; this package imports nothing heavy on its own, so the
node agent can use the catalog without the server stack.
"""
