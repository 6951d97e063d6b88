"""Checks of an mmdet config that uses FIND, run by ``tools/mmdet_train.py`` / ``mmdet_test.py``
before anything is built, so a forgotten ``custom_imports`` gives a message that says what to
add (mmdet alone would only say ``'FINDDetector is not in the mmdet::model registry'``)."""

from typing import Iterable

__all__ = ["PLUGIN_MODULE", "check_find_config", "FINDConfigError"]

PLUGIN_MODULE = "find_plugin.mmdet"


class FINDConfigError(KeyError):
    """The config cannot build FIND as it is; the message says what to change."""

    def __str__(self):
        return str(self.args[0])


def _types(obj) -> Iterable[str]:
    if isinstance(obj, dict):
        if isinstance(obj.get("type"), str):
            yield obj["type"]
        for v in obj.values():
            yield from _types(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _types(v)


def check_find_config(cfg, filename: str = "<config>") -> None:
    """Raise :class:`FINDConfigError` when ``cfg`` names FIND types (``FIND*``, ``PackFINDInputs``)
    but its ``custom_imports`` does not import ``find_plugin.mmdet`` (or allows failed imports)."""
    plain = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
    names = sorted({t for t in _types(plain) if "FIND" in t})
    if not names:
        return
    ci = cfg.get("custom_imports") or {}
    imports = ci.get("imports", [])
    imports = [imports] if isinstance(imports, str) else list(imports)
    if PLUGIN_MODULE not in imports:
        raise FINDConfigError(
            f"{filename} uses FIND types {names[:4]} but does not import the plugin: add\n"
            f"    custom_imports = dict(imports=['{PLUGIN_MODULE}'], allow_failed_imports=False)\n"
            "to the config (or inherit projects/find_mmdet/configs/_base_/find_runtime.py)"
        )
    if ci.get("allow_failed_imports", False):
        raise FINDConfigError(
            f"{filename}: custom_imports has allow_failed_imports=True; set it to False so a "
            f"broken {PLUGIN_MODULE} install fails here instead of as a missing registry name"
        )
