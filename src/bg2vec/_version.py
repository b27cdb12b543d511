"""The package version, in one place: imported by everything that records it."""

__version__ = "0.1.0"
