"""find_plugin: FIND (Interfacing Foundation Models' Embeddings) for detectron2 and MMDetection.

Importing ``find_plugin`` loads only the framework-free core. The detectron2 side registers itself
with ``import find_plugin.d2`` and the MMDetection side with ``import find_plugin.mmdet``.
"""

from .version import __version__

__all__ = ["__version__"]
