"""The on-vehicle daemon: score every frame, ship only what is worth a label."""

__version__ = "0.1.0"
