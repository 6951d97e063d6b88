"""Reading data pickles (RefCOCO's ``refs(*).p``) without executing code from the file.

``pickle.load`` calls whatever callable a pickle names (``os.system`` through a ``__reduce__``,
any class constructor), so a downloaded pickle is code. :func:`load_plain_pickle` reads one with
an unpickler whose ``find_class`` admits only what plain data needs: ``set``/``frozenset``
(pickled by reference in protocols < 4) and ``_codecs.encode`` (how Python 3 writes ``bytes`` in
protocol 2). Everything else (a class instance, a function, ``os.system``) raises
:class:`UnsafePickleError` naming the file and the global, before anything runs. The result is
then walked to check it holds only dict, list, tuple, set, frozenset, str, bytes, int, float,
bool and None.
"""

import io
import pickle
from typing import Any

__all__ = ["UnsafePickleError", "load_plain_pickle", "PLAIN_TYPES"]

#: Types a plain-data pickle may hold.
PLAIN_TYPES = (dict, list, tuple, set, frozenset, str, bytes, int, float, bool, type(None))

# (module, name) -> the callable. Python 2 pickles name ``__builtin__``.
_ALLOWED_GLOBALS = {
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("__builtin__", "set"): set,
    ("__builtin__", "frozenset"): frozenset,
    ("_codecs", "encode"): __import__("codecs").encode,
}


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle names a global (class, function) outside the plain-data allow-list."""


class _PlainUnpickler(pickle.Unpickler):
    def __init__(self, file, path: str, **kwargs):
        super().__init__(file, **kwargs)
        self._path = path

    def find_class(self, module: str, name: str):
        fn = _ALLOWED_GLOBALS.get((module, name))
        if fn is None:
            raise UnsafePickleError(
                f"pickle {self._path!r} refers to the global {module}.{name}, which is not plain "
                "data (allowed: dict, list, tuple, set, str, bytes, int, float, bool, None); "
                "refusing to load it (it could run code)"
            )
        return fn

    def persistent_load(self, pid):
        raise UnsafePickleError(
            f"pickle {self._path!r} holds a persistent id {pid!r}, which is not plain data"
        )


def _check_plain(obj: Any, path: str, where: str = "<root>") -> None:
    if not isinstance(obj, PLAIN_TYPES):
        raise UnsafePickleError(
            f"pickle {path!r}: {where} is a {type(obj).__name__}, not plain data"
        )
    if isinstance(obj, dict):
        for k, v in obj.items():
            _check_plain(k, path, f"{where} key {k!r:.40}")
            _check_plain(v, path, f"{where}[{k!r:.40}]")
    elif isinstance(obj, (list, tuple, set, frozenset)):
        for i, v in enumerate(obj):
            _check_plain(v, path, f"{where}[{i}]")


def load_plain_pickle(path: str, *, encoding: str = "utf-8") -> Any:
    """The plain-data content of the pickle file ``path`` (see the module docstring).

    ``encoding`` decodes Python 2 ``str`` objects (RefCOCO's pickles were written by Python 2;
    their text is ASCII/UTF-8). Raises :class:`UnsafePickleError` for anything but plain data and
    ``ValueError`` naming the file for a truncated or corrupt pickle."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        obj = _PlainUnpickler(io.BytesIO(data), path, encoding=encoding).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, UnicodeDecodeError) as e:
        raise ValueError(f"pickle {path!r} could not be read: {type(e).__name__}: {e}") from e
    _check_plain(obj, path)
    return obj
