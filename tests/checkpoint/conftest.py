"""Fixtures of the checkpoint tests (names start with ckpt_): official manifests synthesised as
checkpoints, the parity_small fixture, a FINDModel at full Focal-T size, a loopback HTTP server."""

import functools
import http.server
import json
import os
import threading

import pytest
import torch

TEXT_TOWER_GROUP = "lang_encoder.model (text tower)"


def _synthesise(manifest):
    """Official state dict with every manifest key. Values: the dropped 7B/UniCL text tower lives
    on the meta device (shape and dtype only, no memory); the constant buffers hold their official
    values; every other key is the scalar ``index + 1`` expanded to its shape (no memory either),
    so a test can check where each value landed."""
    sd, code = {}, {}
    for i, e in enumerate(manifest["keys"]):
        dtype = getattr(torch, e["dtype"])
        shape = tuple(e["shape"])
        if e["group"] == TEXT_TOWER_GROUP:
            sd[e["key"]] = torch.empty(shape, dtype=dtype, device="meta")
        elif e["key"] == "dilation_kernel":
            sd[e["key"]] = torch.ones(shape, dtype=dtype)
        elif e["key"] == "criterion.empty_weight":
            w = torch.ones(shape, dtype=dtype)
            w[-1] = 0.1
            sd[e["key"]] = w
        else:
            sd[e["key"]] = torch.tensor(float(i + 1), dtype=dtype).expand(shape)
            code[e["key"]] = float(i + 1)
    return sd, code


@pytest.fixture(scope="session")
def ckpt_manifest(official_fixtures_dir):
    cache = {}

    def load(name):
        if name not in cache:
            with open(os.path.join(official_fixtures_dir, f"manifest_{name}.json")) as f:
                manifest = json.load(f)
            sd, code = _synthesise(manifest)
            cache[name] = {"manifest": manifest, "state_dict": sd, "code": code}
        return cache[name]

    return load


@pytest.fixture(scope="session")
def ckpt_full_model():
    """FINDModel at the full Focal-T config (FocalNet-T, pixel decoder 512, interface 512 / 9
    layers / 100 queries), one per text width; built on meta then materialised uninitialised
    (every value is overwritten by the strict load under test)."""
    from find_plugin.model import build_find_model

    cache = {}

    def get(preset):
        if preset not in cache:
            with torch.device("meta"):
                model = build_find_model(preset)
            cache[preset] = model.to_empty(device="cpu").eval()
        return cache[preset]

    return get


@pytest.fixture(scope="session")
def ckpt_parity_config(parity_load):
    from find_plugin.checkpoint import find_config_from_official

    return find_config_from_official(parity_load("config.json")["resolved"])


@pytest.fixture
def ckpt_parity_model(ckpt_parity_config):
    """A fresh (randomly initialised) FINDModel of the parity_small configuration."""
    from find_plugin.model import build_find_model

    return build_find_model(**ckpt_parity_config).eval()


@pytest.fixture(scope="session")
def ckpt_parity_meta(ckpt_parity_config):
    """The parity_small FINDModel on the meta device (keys, shapes and dtypes only): a cheap
    conversion target."""
    from find_plugin.model import build_find_model

    with torch.device("meta"):
        return build_find_model(**ckpt_parity_config)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="session")
def ckpt_http(tmp_path_factory):
    """(base URL, folder): a loopback HTTP server on 127.0.0.1 serving the files of ``folder``."""
    folder = tmp_path_factory.mktemp("ckpt_http")
    handler = functools.partial(_QuietHandler, directory=str(folder))
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", folder
    srv.shutdown()
    srv.server_close()
