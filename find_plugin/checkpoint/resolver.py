"""One weights resolver for every entry point (d2 ``MODEL.WEIGHTS``, mmdet ``load_from``, tools).

``resolve_weights(spec)`` turns a spec into a local file path:

* a local path (``~`` expanded) is returned as is; a missing one is an error naming it;
* an ``http(s)://`` URL is downloaded once into the cache (``$FIND_PLUGIN_CACHE``, default
  ``~/.cache/find_plugin/weights``) and reused afterwards;
* a model-zoo name (``find_focalt_llama_x640`` or ``zoo://find_focalt_llama_x640``) is looked up in
  :mod:`find_plugin.checkpoint.model_zoo` and fetched like a URL, then its sha256 is verified
  (entries without a published sha256 are fetched unverified; the table says which).

Downloads write to a temporary file and are renamed into place only when complete and verified, so a
failed or corrupted download never takes the place of a good file. Without network the error names
the URL and the exact path where the file can be put by hand.
"""

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from typing import Optional

from .model_zoo import MODEL_ZOO, ZooEntry

__all__ = ["WeightsNotFoundError", "default_cache_dir", "resolve_weights", "sha256_of"]

ZOO_SCHEME = "zoo://"


class WeightsNotFoundError(FileNotFoundError):
    """The weights spec could not be turned into a local, verified file."""


def default_cache_dir() -> str:
    root = os.environ.get("FIND_PLUGIN_CACHE")
    if root:
        return os.path.expanduser(root)
    base = os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache"))
    return os.path.join(base, "find_plugin", "weights")


def sha256_of(path: str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _cache_path(url: str, cache_dir: str) -> str:
    # One folder per URL (its hash) keeps identical basenames from different hosts apart.
    key = hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]
    name = os.path.basename(url.split("?", 1)[0]) or "weights.bin"
    return os.path.join(cache_dir, key, name)


def _download(url: str, dest: str, sha256: Optional[str], timeout: float) -> str:
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".part-", dir=os.path.dirname(dest))
    try:
        with os.fdopen(fd, "wb") as out:
            with urllib.request.urlopen(
                url, timeout=timeout
            ) as resp:  # noqa: S310 (http/https only)
                shutil.copyfileobj(resp, out)
        if sha256 is not None:
            got = sha256_of(tmp)
            if got != sha256:
                raise WeightsNotFoundError(
                    f"downloaded {url} but its sha256 is {got}, expected {sha256}; the file was "
                    "discarded (a truncated download or a changed upstream file)"
                )
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        if isinstance(e, WeightsNotFoundError):
            raise
        raise WeightsNotFoundError(
            f"could not download {url} ({e}). Without network, download it elsewhere and put it "
            f"at {dest} (or pass that local path instead)"
        ) from e
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return dest


def _fetch(url: str, sha256: Optional[str], cache_dir: str, allow_download: bool, timeout) -> str:
    dest = _cache_path(url, cache_dir)
    if os.path.isfile(dest):
        if sha256 is None or sha256_of(dest) == sha256:
            return dest
        bad = dest + ".corrupt"
        os.replace(dest, bad)  # keep it for inspection, never use it
        if not allow_download:
            raise WeightsNotFoundError(
                f"cached file for {url} failed its sha256 check (moved to {bad}); put a good copy "
                f"at {dest}"
            )
    if not allow_download:
        raise WeightsNotFoundError(
            f"{url} is not in the cache and downloads are disabled; put the file at {dest}"
        )
    return _download(url, dest, sha256, timeout)


def resolve_weights(
    spec: str,
    *,
    cache_dir: Optional[str] = None,
    allow_download: bool = True,
    timeout: float = 60.0,
) -> str:
    """Return a local path for ``spec`` (path, http(s) URL, or model-zoo name); see module docs.

    Raises:
        WeightsNotFoundError: missing path, unknown zoo name, failed download or checksum.
    """
    if not isinstance(spec, str) or not spec:
        raise WeightsNotFoundError(f"weights spec must be a non-empty string, got {spec!r}")
    cache_dir = cache_dir or default_cache_dir()
    if spec.startswith(("http://", "https://")):
        return _fetch(spec, None, cache_dir, allow_download, timeout)
    name = spec[len(ZOO_SCHEME) :] if spec.startswith(ZOO_SCHEME) else spec
    path = os.path.expanduser(spec)
    if os.path.exists(path):
        return path
    entry: Optional[ZooEntry] = MODEL_ZOO.get(name)
    if entry is not None:
        return _fetch(entry.url, entry.sha256, cache_dir, allow_download, timeout)
    if spec.startswith(ZOO_SCHEME):
        raise WeightsNotFoundError(
            f"unknown model-zoo name {name!r}; known names: {', '.join(sorted(MODEL_ZOO))}"
        )
    raise WeightsNotFoundError(
        f"weights not found: {spec!r} is neither an existing file, an http(s) URL, nor a model-zoo "
        f"name (known: {', '.join(sorted(MODEL_ZOO))})"
    )
