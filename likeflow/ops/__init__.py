"""Operator tools behind the `likeflow` command: topics, replay, backfill, rebuild, status, demo."""
