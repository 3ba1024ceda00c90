"""Operating the server: health, readiness, Prometheus metrics, log format (docs/operations.md)."""
