"""Test setup: isolated HF caches, the stock clients pointed at a real local hub on loopback.

huggingface_hub reads HF_ENDPOINT once at import, so the session server's port is chosen and the
environment set here, before anything imports huggingface_hub or transformers.
"""

from __future__ import annotations

import os
import socket
import tempfile
import uuid
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_SESSION_DIR = Path(tempfile.mkdtemp(prefix="hubckpt-tests-"))
_PORT = _free_port()
ENDPOINT = f"http://127.0.0.1:{_PORT}"

for var in (
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HUGGINGFACE_CO_STAGING",
    "HUBCKPT_HUB",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HUBCKPT_FAULT",
):
    os.environ.pop(var, None)
os.environ.update(
    {
        "HF_ENDPOINT": ENDPOINT,
        "HF_HOME": str(_SESSION_DIR / "hf_home"),
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "DISABLE_SAFETENSORS_CONVERSION": "1",
        "HUBCKPT_HUB_ROOT": str(_SESSION_DIR / "default-hub-root"),
        "NO_COLOR": "1",
        "COLUMNS": "200",
    }
)


@pytest.fixture(scope="session")
def local_hub():
    """One single-user local hub for the session, at HF_ENDPOINT."""
    from hubckpt.server import LocalHubServer

    with LocalHubServer(_SESSION_DIR / "hub", port=_PORT) as hub:
        yield hub


@pytest.fixture
def api(local_hub):
    from huggingface_hub import HfApi

    return HfApi(endpoint=local_hub.url, token="unused-in-single-user-mode")


@pytest.fixture
def repo_id(api) -> str:
    """A fresh repo (mixed case on purpose: repo ids are case-insensitive on the Hub)."""
    rid = f"alice/Repo-{uuid.uuid4().hex[:8]}"
    api.create_repo(rid)
    return rid


@pytest.fixture
def cache_dir(tmp_path) -> Path:
    """A fresh download cache, so each test sees cold-cache request sequences."""
    return tmp_path / "hf_cache"


def free_port() -> int:
    return _free_port()
