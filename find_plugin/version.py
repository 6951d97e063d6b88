"""The one place the find_plugin version is written (setup.py reads it from here)."""

__version__ = "0.1.0"
