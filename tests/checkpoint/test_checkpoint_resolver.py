"""Weights resolver: local paths, URLs (loopback HTTP server), zoo names, checksums, offline."""

import hashlib
import os
import socket

import pytest

from find_plugin.checkpoint import MODEL_ZOO, WeightsNotFoundError, ZooEntry, resolve_weights

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


def test_zoo_name_checksum_verified(server, tmp_path, monkeypatch):
    good = hashlib.sha256(PAYLOAD).hexdigest()
    monkeypatch.setitem(MODEL_ZOO, "toy_good", ZooEntry(server + "/w.pth", good, "c.yaml", "x", ""))
    monkeypatch.setitem(MODEL_ZOO, "toy_bad", ZooEntry(server + "/w.pth?b", "0" * 64, "c", "x", ""))
    path = resolve_weights("zoo://toy_good", cache_dir=str(tmp_path))
    assert open(path, "rb").read() == PAYLOAD
    with pytest.raises(WeightsNotFoundError, match="expected 0000"):
        resolve_weights("toy_bad", cache_dir=str(tmp_path))
    # the rejected download left nothing behind that a later call could trust
    leftovers = [f for _, _, fs in os.walk(tmp_path) for f in fs if f.startswith(".part-")]
    assert leftovers == []
    with pytest.raises(WeightsNotFoundError, match="unknown model-zoo name"):
        resolve_weights("zoo://nope", cache_dir=str(tmp_path))


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
