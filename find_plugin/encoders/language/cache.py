"""Disk cache of frozen text-encoder token features, one file per (model, layer, max length, text).

FIND keeps the language model frozen, so its token features can be computed once and reused (the
official code names its files by an md5 of the text). Here the key also covers the model identity,
the feature layer and the maximum length, so features of different settings never mix.

File format (little endian)::

    b"FINDTFC1" | uint32 header length | JSON header | payload

The JSON header holds the key, dtype, ``n_tokens``, ``dim``, the byte sizes and the sha256 of the
payload. The payload is the features ``[n_tokens, dim]`` (valid tokens only, stored dtype)
followed by the character offsets ``[n_tokens, 2]`` as int32. A reader checks magic, key, sizes
and checksum; an entry failing any check is deleted with a warning and reported as a miss, never
trusted.

Writers write a temporary file in the same directory and ``os.replace`` it into place, which is
atomic on POSIX, so concurrent readers see either no file or a complete one, and concurrent
writers of the same key leave one complete entry.
"""

import contextlib
import hashlib
import json
import os
import struct
import tempfile
import warnings
from dataclasses import dataclass
from typing import Optional

import torch

from .errors import CacheCorruptionError

__all__ = ["CachedTokens", "TokenFeatureCache", "make_cache_key"]

_MAGIC = b"FINDTFC1"
_LEN = struct.Struct("<I")
_FORMAT_VERSION = 1
_DTYPES = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
}
_DTYPE_NAMES = {v: k for k, v in _DTYPES.items()}


def make_cache_key(*, model_identity: str, layer: str, max_length: int, text: str) -> str:
    """sha256 hex digest over the model identity, feature layer, max length and text."""
    blob = json.dumps(
        {
            "v": _FORMAT_VERSION,
            "model": model_identity,
            "layer": layer,
            "max_length": int(max_length),
            "text": text,
        },
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass
class CachedTokens:
    """One cache entry: ``features`` [n_tokens, D] (stored dtype, CPU) and ``offsets`` [n_tokens, 2]
    (int64 character spans ``[start, end)`` in the text; ``(0, 0)`` for special tokens)."""

    features: torch.Tensor
    offsets: torch.Tensor


def _tensor_bytes(t: torch.Tensor) -> bytes:
    # Viewing as uint8 works for every dtype (bfloat16 included, which numpy lacks).
    return t.detach().to("cpu").contiguous().view(-1).view(torch.uint8).numpy().tobytes()


class TokenFeatureCache:
    """Directory of token-feature entries, sharded by the first two hex digits of the key.

    Args:
        cache_dir: root directory; created if missing.
        fsync: flush entries to disk before renaming them into place (slower; only matters for
            crashes, since a torn entry is detected and recomputed anyway).
    """

    def __init__(self, *, cache_dir: str, fsync: bool = False):
        if not cache_dir:
            raise ValueError("cache_dir: expected a directory path, got an empty value")
        self.cache_dir = os.path.abspath(os.path.expanduser(str(cache_dir)))
        if os.path.exists(self.cache_dir) and not os.path.isdir(self.cache_dir):
            raise NotADirectoryError(f"cache_dir={self.cache_dir!r} exists and is not a directory")
        os.makedirs(self.cache_dir, exist_ok=True)
        self.fsync = bool(fsync)

    def path_for(self, key: str) -> str:
        """File path of ``key`` (a 64-character hex digest)."""
        if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
            raise ValueError(f"key: expected a sha256 hex digest, got {key!r}")
        return os.path.join(self.cache_dir, key[:2], key + ".tfc")

    def put(
        self, key: str, features: torch.Tensor, offsets: torch.Tensor, *, text: str = ""
    ) -> str:
        """Atomically write an entry: ``features`` [n, D] float, ``offsets`` [n, 2] int.

        Returns the path of the entry.
        """
        if features.dim() != 2:
            raise ValueError(f"features: expected [n_tokens, D], got shape {tuple(features.shape)}")
        if offsets.shape != (features.shape[0], 2):
            raise ValueError(
                f"offsets: expected [{features.shape[0]}, 2], got shape {tuple(offsets.shape)}"
            )
        if features.dtype not in _DTYPE_NAMES:
            raise ValueError(f"features: unsupported dtype {features.dtype}")
        feat = _tensor_bytes(features)
        offs = _tensor_bytes(offsets.to(torch.int32))
        payload = feat + offs
        header = json.dumps(
            {
                "version": _FORMAT_VERSION,
                "key": key,
                "dtype": _DTYPE_NAMES[features.dtype],
                "n_tokens": int(features.shape[0]),
                "dim": int(features.shape[1]),
                "feat_nbytes": len(feat),
                "off_nbytes": len(offs),
                "sha256": hashlib.sha256(payload).hexdigest(),
                "text": text,
            },
            ensure_ascii=False,
        ).encode("utf-8")
        path = self.path_for(key)
        directory = os.path.dirname(path)
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-" + key[:16] + "-", suffix=".part", dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(_MAGIC + _LEN.pack(len(header)) + header + payload)
                if self.fsync:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return path

    def get(self, key: str, *, expected_dim: Optional[int] = None) -> Optional[CachedTokens]:
        """Return the verified entry of ``key``, or None when it is missing or fails verification
        (then it is deleted with a warning, so the caller recomputes it)."""
        path = self.path_for(key)
        try:
            with open(path, "rb") as f:
                ino = os.fstat(f.fileno()).st_ino
                blob = f.read()
        except FileNotFoundError:
            return None
        try:
            return self._decode(blob, key, expected_dim)
        except CacheCorruptionError as err:
            warnings.warn(
                f"text-feature cache entry {path} is invalid ({err}); deleting it and recomputing",
                RuntimeWarning,
                stacklevel=2,
            )
            self._delete_if_same(path, ino)
            return None

    def delete(self, key: str) -> None:
        """Remove an entry if present."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path_for(key))

    @staticmethod
    def _delete_if_same(path: str, ino: int) -> None:
        # A concurrent writer may already have replaced the bad file with a good one: keep that.
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_ino == ino:
                os.unlink(path)

    @staticmethod
    def _decode(blob: bytes, key: str, expected_dim: Optional[int]) -> CachedTokens:
        head = len(_MAGIC) + _LEN.size
        if len(blob) < head or blob[: len(_MAGIC)] != _MAGIC:
            raise CacheCorruptionError("bad magic or truncated header")
        (hlen,) = _LEN.unpack_from(blob, len(_MAGIC))
        if head + hlen > len(blob):
            raise CacheCorruptionError("truncated header")
        try:
            meta = json.loads(blob[head : head + hlen].decode("utf-8"))
            dtype = _DTYPES[meta["dtype"]]
            n, dim = int(meta["n_tokens"]), int(meta["dim"])
            feat_nbytes, off_nbytes = int(meta["feat_nbytes"]), int(meta["off_nbytes"])
            digest, version, stored_key = meta["sha256"], meta["version"], meta["key"]
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
            raise CacheCorruptionError(f"unreadable header: {err!r}") from None
        if version != _FORMAT_VERSION or stored_key != key:
            raise CacheCorruptionError("format version or key mismatch")
        itemsize = torch.empty((), dtype=dtype).element_size()
        if n < 0 or dim <= 0 or feat_nbytes != n * dim * itemsize or off_nbytes != n * 2 * 4:
            raise CacheCorruptionError("sizes in the header do not match the shapes")
        if expected_dim is not None and dim != expected_dim:
            raise CacheCorruptionError(f"feature dim {dim} != expected {expected_dim}")
        payload = blob[head + hlen :]
        if len(payload) != feat_nbytes + off_nbytes:
            raise CacheCorruptionError(
                f"payload has {len(payload)} bytes, expected {feat_nbytes + off_nbytes}"
            )
        if hashlib.sha256(payload).hexdigest() != digest:
            raise CacheCorruptionError("checksum mismatch")
        if n == 0:  # torch.frombuffer rejects empty buffers
            return CachedTokens(
                features=torch.empty(0, dim, dtype=dtype),
                offsets=torch.empty(0, 2, dtype=torch.int64),
            )
        # Writable copies: torch.frombuffer warns on read-only buffers.
        features = torch.frombuffer(bytearray(payload[:feat_nbytes]), dtype=dtype).reshape(n, dim)
        offsets = torch.frombuffer(bytearray(payload[feat_nbytes:]), dtype=torch.int32)
        offsets = offsets.reshape(n, 2).to(torch.int64)
        return CachedTokens(features=features, offsets=offsets)
