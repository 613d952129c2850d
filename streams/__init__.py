"""Topics and event models of the likeflow contract (docs/events.md)."""
