"""A minimal name -> object registry, shared by the framework-free registries.

Task prototypes (:mod:`.prototypes`), task-input kinds (:mod:`.variables`) and tasks
(:mod:`find_plugin.tasks`) are registered by name; the frameworks' own registries (detectron2's
``Registry``, mmengine's ``Registry``) cannot be used here because the core imports neither.
"""

from typing import Dict, Generic, List, TypeVar

__all__ = ["NameRegistry"]

T = TypeVar("T")


class NameRegistry(Generic[T]):
    """``what`` names the registered things in error messages (e.g. "task prototype")."""

    def __init__(self, what: str):
        self.what = what
        self._items: Dict[str, T] = {}

    def add(self, name: str, obj: T, *, overwrite: bool = False) -> T:
        """Register ``obj`` as ``name``; a taken name raises unless ``overwrite``."""
        if name in self._items and not overwrite:
            raise KeyError(f"{self.what} {name!r} is already registered")
        self._items[name] = obj
        return obj

    def remove(self, name: str) -> None:
        self._items.pop(name, None)

    def get(self, name: str) -> T:
        if name not in self._items:
            raise KeyError(f"unknown {self.what} {name!r}; registered: {sorted(self._items)}")
        return self._items[name]

    def names(self) -> List[str]:
        """Registered names in registration order."""
        return list(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items
