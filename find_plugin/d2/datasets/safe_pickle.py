"""Moved to :mod:`find_plugin.data.safe_pickle` (framework-free); re-exported here."""

from ...data.safe_pickle import PLAIN_TYPES, UnsafePickleError, load_plain_pickle

__all__ = ["UnsafePickleError", "load_plain_pickle", "PLAIN_TYPES"]
