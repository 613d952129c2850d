"""A user's profile beyond likes: engagement weights, interest tags, consumption level (docs/profile.md)."""
