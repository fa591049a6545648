"""The package version, in one place (read by the package, the download client and exports)."""

__version__ = "0.1.0"
