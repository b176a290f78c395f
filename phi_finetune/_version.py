"""The single place the package version is defined."""

__version__ = "0.2.0.dev0"
