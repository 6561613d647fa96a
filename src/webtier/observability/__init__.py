"""Seeing the tier work: logs, pool metrics, the live event stream and the dashboard."""
