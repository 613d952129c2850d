"""Creator quality: event-time window counters, smoothing against platform averages, demotion."""
