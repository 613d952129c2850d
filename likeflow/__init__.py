"""likeflow: turns a like into a one-tap order prompt within milliseconds (Faust on Kafka, Redis)."""

__version__ = "0.2.0"
