"""Cold loads by parallel verified Range streams (load/fast_read.py): the same values as the stock path, the
sha256 checked before anything is cached, a cache `hf_hub_download` finds offline, a fallback where the hub
ignores Range, the token only to the hub's own origin."""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from pathlib import Path

import pytest
import torch
from safetensors.torch import load as load_bytes

import hubckpt
from hubckpt.errors import IntegrityError
from hubckpt.load import fast_read
from hubckpt.publishing import Publisher

from .hostile_hub import COMMIT, HostileHub
from .test_untrusted import _port_pair, repo_files, safetensors_bytes


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """A fresh default huggingface_hub cache (and hubckpt's markers under HF_HOME)."""
    from huggingface_hub import constants

    home = tmp_path / "hf_home"
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    return home / "hub"


@pytest.fixture
def fast_reads(monkeypatch) -> list[str]:
    """The files the fast path read (a spy on FileRead.read: the values still come from it)."""
    seen: list[str] = []
    real = fast_read.FileRead.read

    def spy(self):
        seen.append(self.path)
        return real(self)

    monkeypatch.setattr(fast_read.FileRead, "read", spy)
    return seen


def big_weights() -> tuple[bytes, dict[str, torch.Tensor]]:
    """~3 MiB in three dtypes, with a 3-byte tensor first so the F32 after it is misaligned in the file."""
    torch.manual_seed(0)
    tensors = {
        "odd": torch.tensor([1, 2, 3], dtype=torch.uint8),
        "f32": torch.randn(512, 1024),
        "bf16": torch.randn(300, 1000).to(torch.bfloat16),
        "empty": torch.zeros(0, 4),
    }
    parts, entries, offset = [], {}, 0
    names = {"odd": "U8", "f32": "F32", "bf16": "BF16", "empty": "F32"}
    for name, t in tensors.items():
        raw = t.contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b""
        entries[name] = (names[name], list(t.shape), [offset, offset + len(raw)])
        parts.append(raw)
        offset += len(raw)
    return safetensors_bytes(entries, b"".join(parts)), tensors


def _repo() -> str:
    return f"eve/fast-{uuid.uuid4().hex[:8]}"


def _range_gets(hub: HostileHub, file: str) -> list[str]:
    return [r.headers["range"] for r in hub.requests if r.path.endswith(file) and "range" in r.headers]


def test_a_cold_load_streams_ranges_bit_equal_and_caches_for_offline_hf_hub_download(hf_cache, fast_reads, monkeypatch):
    from huggingface_hub import constants, hf_hub_download

    weights, tensors = big_weights()
    repo = _repo()
    with HostileHub(repo_id=repo, files=repo_files(weights), branches={"main": COMMIT, "step-1": COMMIT}) as hub:
        state = hubckpt.load_state_dict(repo, step=1, hub=hub.url)
        ranges = _range_gets(hub, "model.safetensors")
    assert fast_reads == ["model.safetensors"]
    assert len(ranges) >= 4, ranges  # the header read, then several chunks in parallel
    assert set(state) == set(tensors)
    for name, t in tensors.items():  # bit-equal to what was published and to safetensors' own reading
        assert state[name].dtype == t.dtype and state[name].shape == t.shape
        assert torch.equal(state[name].view(torch.uint8), t.view(torch.uint8)), name
    stock = load_bytes(weights)
    assert all(torch.equal(state[k].view(torch.uint8), stock[k].view(torch.uint8)) for k in stock)

    # the cache is laid out as hf_hub_download does it: an offline download finds exactly these bytes
    sha = hashlib.sha256(weights).hexdigest()
    storage = hf_cache / f"models--{repo.replace('/', '--')}"
    assert (storage / "blobs" / sha).read_bytes() == weights
    assert not list(storage.rglob("*.incomplete"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    found = hf_hub_download(repo, "model.safetensors", revision=COMMIT)
    assert Path(found) == storage / "snapshots" / COMMIT / "model.safetensors"
    assert Path(found).read_bytes() == weights
    # and a warm load reads the cache, with no request and no second hash
    again = hubckpt.load_state_dict(repo, COMMIT, hub=hub.url)
    assert torch.equal(again["f32"], tensors["f32"]) and fast_reads == ["model.safetensors"]


def test_the_local_hub_cold_load_equals_the_stock_path(local_hub, hf_cache, fast_reads, monkeypatch, tmp_path):
    repo = f"alice/fast-{uuid.uuid4().hex[:8]}"
    torch.manual_seed(1)
    state = {"a": torch.randn(700, 1000), "b": torch.randn(64).to(torch.float16), "c": torch.arange(5)}
    with Publisher(repo, hub=local_hub.url, spool_dir=tmp_path / "spool") as pub:
        pub.publish(state_dict=state, step=1)
    fast = hubckpt.load_state_dict(repo, step=1, hub=local_hub.url)
    assert fast_reads == ["model.safetensors"]
    monkeypatch.setenv("HUBCKPT_READ_STREAMS", "0")
    stock = hubckpt.load_state_dict(repo, step=1, hub=local_hub.url, cache_dir=tmp_path / "other-cache")
    assert fast_reads == ["model.safetensors"]  # the second load went the stock way
    assert set(fast) == set(stock) == set(state)
    for k in state:
        assert fast[k].dtype == stock[k].dtype and torch.equal(fast[k], stock[k]) and torch.equal(fast[k], state[k])


def test_a_corrupted_byte_is_detected_and_nothing_is_cached(hf_cache, fast_reads):
    weights, _ = big_weights()
    files = repo_files(weights)  # checkpoint.json records the sha256 of the good bytes
    bad = bytearray(weights)
    bad[len(bad) - 1000] ^= 0x01  # one bit, deep in a late chunk
    files["model.safetensors"] = bytes(bad)
    repo = _repo()
    with HostileHub(repo_id=repo, files=files, branches={"main": COMMIT, "step-1": COMMIT}) as hub:
        with pytest.raises(IntegrityError, match="sha256 .* recorded in checkpoint.json; nothing was loaded or cached"):
            hubckpt.load_state_dict(repo, step=1, hub=hub.url)
        assert len(_range_gets(hub, "model.safetensors")) >= 4
    storage = hf_cache / f"models--{repo.replace('/', '--')}"
    assert fast_reads == ["model.safetensors"]
    assert not list((storage / "blobs").iterdir()) or all(
        p.stat().st_size < 10_000 for p in (storage / "blobs").iterdir()
    )  # only the small metadata files: no weights blob, no partial file
    assert not (storage / "snapshots" / COMMIT / "model.safetensors").exists()


def test_a_hub_that_ignores_range_falls_back_to_the_stock_download(hf_cache, fast_reads, caplog):
    weights, tensors = big_weights()
    repo = _repo()
    files = repo_files(weights)
    with HostileHub(repo_id=repo, files=files, branches={"main": COMMIT, "step-1": COMMIT}, range_mode="whole") as hub:
        with caplog.at_level(logging.INFO, logger="hubckpt.load.fast_read"):
            state = hubckpt.load_state_dict(repo, step=1, hub=hub.url)
        whole = [r for r in hub.requests if r.path.endswith("model.safetensors") and r.method == "GET"]
    assert torch.equal(state["f32"], tensors["f32"]) and torch.equal(state["bf16"], tensors["bf16"])
    assert fast_reads == ["model.safetensors"]  # tried, then
    assert "downloading it with hf_hub_download" in caplog.text
    assert any("range" not in r.headers for r in whole)  # the stock GET of the whole file


def test_a_transient_error_on_a_chunk_is_retried(hf_cache, fast_reads):
    weights, tensors = big_weights()
    repo = _repo()
    with HostileHub(
        repo_id=repo, files=repo_files(weights), branches={"main": COMMIT, "step-1": COMMIT}, fail_ranges=2
    ) as hub:
        state = hubckpt.load_state_dict(repo, step=1, hub=hub.url)
        assert hub.fail_ranges == 0
    assert torch.equal(state["f32"], tensors["f32"]) and fast_reads == ["model.safetensors"]


def test_a_206_of_another_range_fails_and_caches_nothing(hf_cache):
    weights, _ = big_weights()
    repo = _repo()
    with HostileHub(
        repo_id=repo, files=repo_files(weights), branches={"main": COMMIT, "step-1": COMMIT}, range_mode="shifted"
    ) as hub:
        with pytest.raises(IntegrityError, match="exactly that range"):
            hubckpt.load_state_dict(repo, step=1, hub=hub.url)
    storage = hf_cache / f"models--{repo.replace('/', '--')}"
    assert not (storage / "snapshots" / COMMIT / "model.safetensors").exists()


def test_the_token_does_not_follow_the_fast_paths_redirect_to_another_port(hf_cache, fast_reads):
    weights, tensors = big_weights()
    repo = _repo()
    hub_port, evil_port = _port_pair()
    files = repo_files(weights)
    with HostileHub(repo_id=repo, files=files, port=evil_port, branches={"main": COMMIT}) as evil:
        target = f"{evil.url}/{repo}/resolve/{COMMIT}/model.safetensors"
        with HostileHub(
            repo_id=repo,
            files=files,
            port=hub_port,
            branches={"main": COMMIT, "step-1": COMMIT},
            redirect={"model.safetensors": target},
        ) as hub:
            state = hubckpt.load_state_dict(repo, step=1, hub=hub.url, token="hf_secret")
            assert hub.authorized()  # the hub itself got the token
        assert len(_range_gets(evil, "model.safetensors")) >= 4  # the chunks went to the data URL
        assert not evil.authorized()
    assert torch.equal(state["f32"], tensors["f32"]) and fast_reads == ["model.safetensors"]


def test_hf_hub_downloads_redirect_to_another_port_of_the_same_host_gets_no_token(hf_cache):
    """Guard on huggingface_hub's own rule (the files hubckpt downloads with hf_hub_download: checkpoint.json,
    config, shards index): a redirect to another port of the hub's host must not carry the token."""
    weights, _ = big_weights()
    repo = _repo()
    hub_port, evil_port = _port_pair()
    files = repo_files(weights)
    with HostileHub(repo_id=repo, files=files, port=evil_port, branches={"main": COMMIT}) as evil:
        target = f"{evil.url}/{repo}/resolve/{COMMIT}/checkpoint.json"
        with HostileHub(
            repo_id=repo,
            files=files,
            port=hub_port,
            branches={"main": COMMIT, "step-1": COMMIT},
            redirect={"checkpoint.json": target},
        ) as hub:
            hubckpt.load_state_dict(repo, step=1, hub=hub.url, token="hf_secret")
            assert hub.authorized()
        assert [r for r in evil.requests if r.path.endswith("checkpoint.json")]
        assert not evil.authorized()


def test_a_chunks_memory_is_faulted_in_at_once_before_its_reads():
    """Each stream populates its chunk's pages with one madvise (cheaper than a fault per page while the
    socket reads write them: 0.1-0.15 CPU-s less per GiB here, bench/README.md)."""
    from pathlib import Path

    def rss() -> int:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    image = fast_read._file_image(64 << 20)
    address = image.data_ptr()
    before = rss()
    fast_read._populate(address + 4096, 32 << 20)
    assert rss() - before >= 30 << 20  # resident before anything was written
    del image
