"""Consumer-side figures, each with its baseline measured in the same run.

1. Warm-cache `hubckpt.load_state_dict` of a ~1 GiB revision vs `safetensors.torch.load_file` of the same
   cached file; both then touch every byte (a sum over a uint8 view). Ratio = load_file time / ours (aim ≥ 0.9).
2. One 4 MiB tensor from that 1 GiB remote revision with `open_revision(...).get_tensor`, from an empty
   cache: bytes received for the whole call (index, checkpoint.json, header, tensor; HTTP headers
   included) counted by a byte-counting transport under huggingface_hub's own client, and requests counted
   by the server (aim ≤ tensor + header + 64 KiB); time vs `hf_hub_download` of the whole file.
3. `list_revisions` on a repo with 1,000 revisions: requests at the server (aim 1) and time.
4. `iter_revisions` over 50 revisions with cache="bounded": the repo's cache size on disk (du of its blobs)
   after every revision, peak vs the bound.

Usage:  flock /tmp/hubckpt-heavy.lock .venv/bin/python bench/load.py [--size-mib 1024] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


class Wire:
    """Bytes and requests huggingface_hub's client receives: status line + headers + raw body bytes."""

    def __init__(self) -> None:
        self.bytes = 0
        self.requests = 0

    def install(self) -> None:
        import httpx2
        from huggingface_hub import set_client_factory
        from huggingface_hub.utils._http import hf_request_event_hook

        wire = self

        class Counted(httpx2.SyncByteStream):
            def __init__(self, inner) -> None:
                self.inner = inner

            def __iter__(self):
                for chunk in self.inner:
                    wire.bytes += len(chunk)
                    yield chunk

            def close(self) -> None:
                self.inner.close()

        class CountingTransport(httpx2.HTTPTransport):
            def handle_request(self, request):
                response = super().handle_request(request)
                wire.requests += 1
                wire.bytes += 20 + sum(len(k) + len(v) + 4 for k, v in response.headers.raw)
                response.stream = Counted(response.stream)
                return response

        set_client_factory(
            lambda: httpx2.Client(
                transport=CountingTransport(),
                event_hooks={"request": [hf_request_event_hook]},
                follow_redirects=True,
                timeout=None,
            )
        )


def _fresh_cache(work: Path, name: str) -> Path:
    """Point huggingface_hub's cache (and hubckpt's markers/header cache under HF_HOME) at a new folder."""
    from huggingface_hub import constants

    home = work / name
    shutil.rmtree(home, ignore_errors=True)
    constants.HF_HOME = str(home)
    constants.HF_HUB_CACHE = str(home / "hub")
    return home / "hub"


def _touch(state: dict) -> float:
    """Read every byte of every tensor (a sum: vectorised, so the reads, not the arithmetic, dominate)."""
    return float(sum(float(t.sum()) for t in state.values() if t.numel()))


def _du(folder: Path) -> int:
    return (
        sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink()) if folder.exists() else 0
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--iter-revisions", type=int, default=50)
    parser.add_argument("--parts", default="1,2,3,4", help="Which figures, e.g. 1,3.")
    args = parser.parse_args()
    parts = {int(p) for p in args.parts.split(",")}

    import torch
    from huggingface_hub import HfApi

    from hubckpt.publishing import Publisher
    from hubckpt.server import LocalHubServer

    wire = Wire()
    wire.install()
    work = Path(tempfile.mkdtemp(prefix="hubckpt-bench-load-"))
    try:
        with LocalHubServer(work / "hub") as hub:
            api = HfApi(endpoint=hub.url)
            if parts & {1, 2}:
                # A ~1 GiB revision: 4 MiB tensors (1024 x 1024 float32), one file.
                torch.manual_seed(0)
                n = max(2, args.size_mib // 4)
                weights = {f"layers.{i:04d}.weight": torch.randn(1024, 1024) for i in range(n)}
                t0 = time.perf_counter()
                with Publisher("bench/big", hub=hub.url, spool_dir=work / "spool") as pub:
                    pub.publish(state_dict=weights, step=1000, metrics={"loss": 1.0})
                del weights
                print(f"(published a {n * 4} MiB revision in {time.perf_counter() - t0:.1f} s)")
                path = lazy_figure(hub, work, n, wire, download=2 in parts)  # first: nothing cached yet
                if 1 in parts:
                    warm_figure(hub, path, n, args.repeat)
            if 3 in parts:
                list_figure(hub, api, wire, args.repeat)
            if 4 in parts:
                iter_figure(hub, work, args.iter_revisions)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def lazy_figure(hub, work: Path, n: int, wire: Wire, download: bool = True) -> str:
    """2. One tensor by Range reads from an empty cache; then the whole file, for the time ratio."""
    import torch
    from huggingface_hub import hf_hub_download
    from safetensors.torch import load_file

    import hubckpt

    name = f"layers.{n // 2:04d}.weight"
    if download:
        _fresh_cache(work, "lazy")
        before_bytes, before_req = wire.bytes, hub.ctx.stats["requests"]
        t0 = time.perf_counter()
        with hubckpt.open_revision("bench/big", step=1000, hub=hub.url) as rev:
            tensor = rev.get_tensor(name)
        lazy_s = time.perf_counter() - t0
        lazy_bytes = wire.bytes - before_bytes
        api_requests = hub.ctx.stats["requests"] - before_req
        with rev:  # the header is cached now: no requests
            data_start = min(rev.meta(k).start for k in rev.keys())  # 8 + header length
    _fresh_cache(work, "full")
    before_bytes = wire.bytes
    t0 = time.perf_counter()
    commit = hubckpt.resolve_revision("bench/big", step=1000, hub=hub.url).commit
    path = hf_hub_download("bench/big", "model.safetensors", revision=commit, endpoint=hub.url)
    full_s = time.perf_counter() - t0
    full_bytes = wire.bytes - before_bytes
    if not download:
        return path
    assert torch.equal(load_file(path)[name], tensor), "lazy read differs from the downloaded file"
    tensor_bytes = tensor.numel() * tensor.element_size()
    budget = tensor_bytes + data_start + 64 * 1024
    print(
        f"2. one {tensor_bytes / 2**20:.0f} MiB tensor of a {Path(path).stat().st_size / 2**30:.2f} GiB "
        f"revision, empty cache:"
    )
    print(
        f"   received {lazy_bytes:,} bytes in {rev.requests} requests ({api_requests} at the API port, the "
        f"rest at the data plane); aim <= tensor + header + 64 KiB = {budget:,} -> "
        f"{'OK' if lazy_bytes <= budget else 'OVER'} (overhead {lazy_bytes - tensor_bytes:,} bytes)"
    )
    print(
        f"   time {lazy_s * 1000:.0f} ms vs hf_hub_download of the file {full_s * 1000:.0f} ms "
        f"({full_bytes / 2**30:.2f} GiB received): {full_s / lazy_s:.0f}x faster"
    )
    return path


def warm_figure(hub, path: str, n: int, repeat: int) -> None:
    """1. Warm cache: ours (by step: one index request; by commit: none) vs load_file of the same cached
    file, interleaved; each then touches every byte."""
    from safetensors.torch import load_file

    import hubckpt

    commit = hubckpt.resolve_revision("bench/big", step=1000, hub=hub.url).commit
    hubckpt.load_state_dict("bench/big", step=1000, hub=hub.url)  # the first load verifies (hashes) once
    runs = {
        "by step": lambda: hubckpt.load_state_dict("bench/big", step=1000, hub=hub.url),
        "by commit": lambda: hubckpt.load_state_dict("bench/big", commit, hub=hub.url),
        "load_file": lambda: load_file(path),
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(repeat):
        for label, load in runs.items():
            t0 = time.perf_counter()
            state = load()
            _touch(state)
            times[label].append(time.perf_counter() - t0)
            del state
    base = min(times["load_file"])
    print(
        f"1. warm-cache load of {n * 4} MiB, touching every byte (best of {repeat}): safetensors load_file "
        f"{base:.3f} s; load_state_dict by step {min(times['by step']):.3f} s -> "
        f"{base / min(times['by step']):.2f}x, by commit {min(times['by commit']):.3f} s -> "
        f"{base / min(times['by commit']):.2f}x (aim >= 0.9x)"
    )


def list_figure(hub, api, wire: Wire, repeat: int) -> None:
    """3. list_revisions on 1,000 revisions (the index written directly: publishing 1,000 would take long)."""
    import hubckpt
    from hubckpt.formats.index import RevisionIndex, RevisionInfo

    index = RevisionIndex(monitor="eval_loss")
    for i in range(1, 1001):
        index.upsert(
            RevisionInfo(
                name=f"step-{i * 100:07d}",
                step=i * 100,
                commit=f"{i:040x}",
                tokens=i * 409_600,
                metrics={"eval_loss": 1 / i, "loss": 1.1 / i},
                size=498_000_000,
                date="2026-12-01T00:00:00+00:00",
            )
        )
    api.create_repo("bench/thousand")
    api.upload_file(path_or_fileobj=index.to_json(), path_in_repo="revisions.json", repo_id="bench/thousand")
    times = []
    for _ in range(repeat):
        before_req, before_wire = hub.ctx.stats["requests"], wire.requests
        t0 = time.perf_counter()
        listed = hubckpt.list_revisions("bench/thousand", hub=hub.url)
        times.append(time.perf_counter() - t0)
        server_requests = hub.ctx.stats["requests"] - before_req
        client_requests = wire.requests - before_wire
    assert len(listed) == 1000
    print(
        f"3. list_revisions on 1,000 revisions: {server_requests} request(s) at the server, "
        f"{client_requests} sent by the client (aim 1); {min(times) * 1000:.0f} ms (best of {repeat}); "
        f"index {len(index.to_json()) / 1024:.0f} KiB"
    )


def iter_figure(hub, work: Path, k: int) -> None:
    """4. iter_revisions over k revisions of 1 MiB with a bound of 5.5 MiB; cache size on disk after each."""
    import torch

    import hubckpt
    from hubckpt.publishing import Publisher

    t0 = time.perf_counter()
    with Publisher("bench/iter", hub=hub.url, spool_dir=work / "spool-iter", max_pending=4) as pub:
        for i in range(1, k + 1):
            pub.publish(state_dict={"w": torch.full((256, 1024), float(i))}, step=i * 10, metrics={"loss": 1.0 / i})
    print(f"(published {k} revisions of 1 MiB in {time.perf_counter() - t0:.1f} s)")
    cache = _fresh_cache(work, "iter")
    bound = 5 * 2**20 + 2**19  # five revisions' weights and their small files fit, six do not
    peak, sizes, seen = 0, [], 0
    t0 = time.perf_counter()
    for item in hubckpt.iter_revisions("bench/iter", hub=hub.url, cache="bounded", max_cache_bytes=bound):
        w = item.state_dict()["w"]
        assert float(w[0, 0]) == item.info.step / 10
        size = _du(cache / "models--bench--iter" / "blobs")
        sizes.append(size)
        peak = max(peak, size)
        seen += 1
    iter_s = time.perf_counter() - t0
    print(
        f"4. iter_revisions over {seen} revisions, cache='bounded', max_cache_bytes={bound:,}: peak cache "
        f"{peak:,} bytes on disk = {peak / bound:.2f}x of the bound (aim <= 1.0x); final {sizes[-1]:,}; "
        f"{iter_s:.1f} s ({iter_s / seen * 1000:.0f} ms per revision)"
    )


if __name__ == "__main__":
    sys.exit(main())
