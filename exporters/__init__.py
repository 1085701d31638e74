"""Turn a store snapshot into an output format (Prometheus text and OpenMetrics)."""
