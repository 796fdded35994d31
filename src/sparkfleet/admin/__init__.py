"""Admin HTTP server: REST API and Prometheus metrics."""
