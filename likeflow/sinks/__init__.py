"""Sinks: where the agents hand their results (dead letters, Redis serving)."""
