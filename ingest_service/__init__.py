"""The central service: selected frames from Kafka into a labeling queue."""

__version__ = "0.1.0"
