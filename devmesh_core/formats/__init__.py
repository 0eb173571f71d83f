"""Translators from other log wire formats (Loki push, syslog) to DevMesh log objects."""
