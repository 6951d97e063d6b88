"""Helpers shared by the test files (not a fixture module: imported as ``tests._util``)."""

import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def load_module(name: str, path):
    """Import the Python file ``path`` as module ``name`` (tools/ scripts, shared test files)."""
    spec = importlib.util.spec_from_file_location(name, str(path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
