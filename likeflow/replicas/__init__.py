"""In-memory followers of compacted topics: video mappings and creator weights."""
