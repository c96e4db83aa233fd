"""stationd: an enrollment-station daemon for iPads."""

__version__ = "0.1.0"
