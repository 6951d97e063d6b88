"""Test-session settings shared by every test: offline hubs, small CPU thread count, seeds."""

import json
import os

# No network at test time: any attempt to reach a model hub must fail fast.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

SHARED_DIR = os.environ.get(
    "FIND_SHARED_DIR",
    os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared"),
)
FIXTURES_DIR = os.path.join(SHARED_DIR, "fixtures", "official_find")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def official_fixtures_dir():
    """Path of ../shared/fixtures/official_find (reference data from the official FIND code)."""
    if not os.path.isdir(FIXTURES_DIR):
        pytest.fail(f"reference fixtures not found at {FIXTURES_DIR} (set FIND_SHARED_DIR)")
    return FIXTURES_DIR


@pytest.fixture(scope="session")
def parity_dir(official_fixtures_dir):
    """parity_small/: the reduced official model, its inputs and outputs (see its README)."""
    path = os.path.join(official_fixtures_dir, "parity_small")
    if not os.path.isdir(path):
        pytest.fail(f"parity fixture directory missing: {path}")
    return path


@pytest.fixture(scope="session")
def parity_load(parity_dir):
    """``parity_load(name)``: a parity_small file (``.pt`` as plain tensors, ``.json`` parsed),
    loaded once per session."""
    cache = {}

    def load(name):
        if name not in cache:
            path = os.path.join(parity_dir, name)
            if name.endswith(".json"):
                with open(path) as f:
                    cache[name] = json.load(f)
            else:
                cache[name] = torch.load(path, map_location="cpu", weights_only=True)
        return cache[name]

    return load
