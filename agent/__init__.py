"""gpulse: where every GPU-second goes, and why a GPU is not doing useful work."""

__version__ = "0.1.0"
