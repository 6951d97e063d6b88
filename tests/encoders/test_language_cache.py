"""Disk cache of token features: round trip, corruption detection, concurrent writers."""

import multiprocessing
import os
import threading
import warnings

import pytest
import torch

from find_plugin.encoders.language import TokenFeatureCache, make_cache_key


def _key(text="a cat on a couch", layer="hidden_states[21]", max_length=77):
    return make_cache_key(
        model_identity="m|decoder|float16|abc", layer=layer, max_length=max_length, text=text
    )


def _entry(n=5, d=16, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(n, d, generator=g).to(dtype)
    offsets = torch.stack([torch.arange(n) * 2, torch.arange(n) * 2 + 1], dim=1)
    return feats, offsets


def test_key_depends_on_every_field():
    base = _key()
    assert len(base) == 64
    assert base == _key()
    assert (
        len(
            {
                base,
                _key(text="a cat on a sofa"),
                _key(layer="hidden_states[20]"),
                _key(max_length=150),
            }
        )
        == 4
    )
    other_model = make_cache_key(
        model_identity="other", layer="hidden_states[21]", max_length=77, text="a cat on a couch"
    )
    assert other_model != base


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_round_trip_identical(tmp_path, dtype):
    cache = TokenFeatureCache(cache_dir=str(tmp_path))
    feats, offsets = _entry(n=7, d=12, dtype=dtype)
    key = _key()
    assert cache.get(key) is None
    path = cache.put(key, feats, offsets, text="a cat on a couch")
    assert os.path.isfile(path) and os.path.dirname(path).endswith(key[:2])
    got = cache.get(key, expected_dim=12)
    assert got.features.dtype == dtype and got.features.shape == (7, 12)
    assert torch.equal(got.features, feats)
    assert got.offsets.dtype == torch.int64 and torch.equal(got.offsets, offsets)
    # No temporary files left behind.
    assert os.listdir(os.path.dirname(path)) == [os.path.basename(path)]


def test_empty_entry_round_trip(tmp_path):
    cache = TokenFeatureCache(cache_dir=str(tmp_path))
    cache.put(_key(), torch.zeros(0, 8), torch.zeros(0, 2, dtype=torch.long))
    got = cache.get(_key())
    assert got.features.shape == (0, 8) and got.offsets.shape == (0, 2)


def _truncate(blob):
    return blob[: len(blob) - 7]


def _flip_payload(blob):
    b = bytearray(blob)
    b[-3] ^= 0xFF
    return bytes(b)


def _flip_header(blob):
    b = bytearray(blob)
    b[2] ^= 0x01  # inside the magic
    return bytes(b)


def _half_header(blob):
    return blob[:20]


def _empty(blob):
    return b""


@pytest.mark.parametrize("corrupt", [_truncate, _flip_payload, _flip_header, _half_header, _empty])
def test_corrupted_entry_detected_and_deleted(tmp_path, corrupt):
    cache = TokenFeatureCache(cache_dir=str(tmp_path))
    feats, offsets = _entry()
    key = _key()
    path = cache.put(key, feats, offsets)
    with open(path, "rb") as f:
        blob = f.read()
    with open(path, "wb") as f:
        f.write(corrupt(blob))
    with pytest.warns(RuntimeWarning, match="invalid"):
        assert cache.get(key) is None
    assert not os.path.exists(path)


def test_wrong_dim_and_misplaced_entry_rejected(tmp_path):
    cache = TokenFeatureCache(cache_dir=str(tmp_path))
    feats, offsets = _entry(d=16)
    key = _key()
    cache.put(key, feats, offsets)
    with pytest.warns(RuntimeWarning, match="expected 8"):
        assert cache.get(key, expected_dim=8) is None
    # An entry copied under another key's name is not trusted either.
    path = cache.put(key, feats, offsets)
    other = _key(text="something else")
    os.makedirs(os.path.dirname(cache.path_for(other)), exist_ok=True)
    os.replace(path, cache.path_for(other))
    with pytest.warns(RuntimeWarning, match="key mismatch"):
        assert cache.get(other) is None


def test_bad_arguments(tmp_path):
    cache = TokenFeatureCache(cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match="key"):
        cache.path_for("not-a-digest")
    with pytest.raises(ValueError, match="offsets"):
        cache.put(_key(), torch.zeros(3, 4), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="features"):
        cache.put(_key(), torch.zeros(3), torch.zeros(3, 2))
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="cache_dir"):
        TokenFeatureCache(cache_dir=str(tmp_path / "file"))


def test_concurrent_threads_same_key(tmp_path):
    cache = TokenFeatureCache(cache_dir=str(tmp_path))
    feats, offsets = _entry(n=64, d=256)
    key = _key()
    errors = []

    def writer():
        try:
            for _ in range(20):
                cache.put(key, feats, offsets)
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    def reader():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # a torn read would warn: fail instead
                for _ in range(40):
                    got = cache.get(key)
                    if got is not None:
                        assert torch.equal(got.features, feats)
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    threads += [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    got = cache.get(key)
    assert got is not None and torch.equal(got.features, feats)
    assert os.listdir(os.path.dirname(cache.path_for(key))) == [key + ".tfc"]


def _process_writer(cache_dir, key, seed):
    cache = TokenFeatureCache(cache_dir=cache_dir)
    feats, offsets = _entry(n=32, d=128, seed=seed)
    for _ in range(25):
        cache.put(key, feats, offsets)


def test_concurrent_processes_same_key(tmp_path):
    ctx = multiprocessing.get_context("fork")
    key = _key()
    # Two writers with different contents: the survivor must be one of them, complete.
    procs = [ctx.Process(target=_process_writer, args=(str(tmp_path), key, s)) for s in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    got = TokenFeatureCache(cache_dir=str(tmp_path)).get(key)
    assert got is not None
    candidates = [_entry(n=32, d=128, seed=s)[0] for s in (1, 2)]
    assert any(torch.equal(got.features, c) for c in candidates)
