"""Network receivers that turn pushed logs into ingest batches (syslog)."""
