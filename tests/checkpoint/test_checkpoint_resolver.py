"""Weights resolver: local paths, URLs (loopback HTTP server), zoo names, checksums, offline."""

import hashlib
import os
import socket

import pytest

from find_plugin.checkpoint import MODEL_ZOO, WeightsNotFoundError, ZooEntry, resolve_weights
from find_plugin.checkpoint.resolver import _cache_path

PAYLOAD = b"find_plugin weights payload " * 100


@pytest.fixture()
def server(ckpt_http):
    """Base URL of the shared loopback server, with ``w.pth`` (= PAYLOAD) in its folder."""
    url, folder = ckpt_http
    (folder / "w.pth").write_bytes(PAYLOAD)
    yield url
    (folder / "w.pth").unlink(missing_ok=True)


def test_local_path_and_missing_path(tmp_path):
    p = tmp_path / "m.pth"
    p.write_bytes(b"x")
    assert resolve_weights(str(p)) == str(p)
    with pytest.raises(WeightsNotFoundError, match="neither an existing file"):
        resolve_weights(str(tmp_path / "nope.pth"))


def test_url_download_is_cached(server, ckpt_http, tmp_path):
    path = resolve_weights(server + "/w.pth", cache_dir=str(tmp_path))
    assert open(path, "rb").read() == PAYLOAD
    (ckpt_http[1] / "w.pth").unlink()  # the server no longer has it: only the cache can answer
    assert resolve_weights(server + "/w.pth", cache_dir=str(tmp_path)) == path
    assert open(path, "rb").read() == PAYLOAD


def _files(folder):
    return sorted(
        os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder) for f in fs
    )


def test_zoo_name_checksum_verified(server, tmp_path, monkeypatch):
    good = hashlib.sha256(PAYLOAD).hexdigest()
    monkeypatch.setitem(MODEL_ZOO, "toy_good", ZooEntry(server + "/w.pth", good, "c.yaml", "x", ""))
    monkeypatch.setitem(MODEL_ZOO, "toy_bad", ZooEntry(server + "/w.pth?b", "0" * 64, "c", "x", ""))
    path = resolve_weights("zoo://toy_good", cache_dir=str(tmp_path))
    assert open(path, "rb").read() == PAYLOAD
    with pytest.raises(WeightsNotFoundError, match="expected 0000.*discarded"):
        resolve_weights("toy_bad", cache_dir=str(tmp_path))
    # the rejected download left nothing behind that a later call could trust: no partial file and
    # nothing at the final cache path ...
    bad_dest = _cache_path(server + "/w.pth?b", str(tmp_path))
    assert not os.path.exists(bad_dest)
    assert _files(tmp_path) == [os.path.relpath(path, tmp_path)]
    # ... and the good cached file next to it is untouched
    assert open(path, "rb").read() == PAYLOAD
    with pytest.raises(WeightsNotFoundError, match="unknown model-zoo name"):
        resolve_weights("zoo://nope", cache_dir=str(tmp_path))


def test_rejected_redownload_does_not_reinstate_a_bad_cached_file(server, tmp_path, monkeypatch):
    """A cached file that fails its checksum is set aside; if the new download fails too, the cache
    path stays empty (a later call must not find either file there)."""
    url = server + "/w.pth?c"
    monkeypatch.setitem(MODEL_ZOO, "toy_bad", ZooEntry(url, "0" * 64, "c", "x", ""))
    dest = _cache_path(url, str(tmp_path))
    os.makedirs(os.path.dirname(dest))
    with open(dest, "wb") as f:
        f.write(b"stale")
    with pytest.raises(WeightsNotFoundError, match="expected 0000"):
        resolve_weights("toy_bad", cache_dir=str(tmp_path))
    assert not os.path.exists(dest)
    assert open(dest + ".corrupt", "rb").read() == b"stale"  # kept for inspection only
    assert _files(tmp_path) == [os.path.relpath(dest + ".corrupt", tmp_path)]


def test_no_network_error_names_url_and_destination(tmp_path):
    with socket.socket() as s:  # a loopback port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/find.pt"
    with pytest.raises(WeightsNotFoundError) as err:
        resolve_weights(url, cache_dir=str(tmp_path), timeout=5)
    assert url in str(err.value) and str(tmp_path) in str(err.value)
    with pytest.raises(WeightsNotFoundError, match="downloads are disabled"):
        resolve_weights(url, cache_dir=str(tmp_path), allow_download=False)


def test_official_entries_present():
    assert {"find_focalt_llama_x640", "find_focall_llama_x640"} <= set(MODEL_ZOO)


def test_zoo_configs_name_real_presets():
    from find_plugin.presets import FIND_MODEL_PRESETS

    for name, entry in MODEL_ZOO.items():
        assert entry.config in FIND_MODEL_PRESETS, name
