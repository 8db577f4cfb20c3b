"""Event-log loaders, replay, benchmarks and reports."""
