"""Incident detection: detectors turn events into signals, correlation turns signals into
incidents with a lifecycle."""
