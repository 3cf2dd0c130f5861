"""Cold loads (nothing cached) against the local hub, each ratio against baselines measured in the same run.

1. `hubckpt.load_state_dict` of a ~1 GiB revision from an empty cache (parallel verified Range streams
   into the tensors' memory, sha256 in file order, the cache filled in the same pass) vs
   - the stock client: `hf_hub_download` into an empty cache + `safetensors.torch.load_file` (aim >= 2x);
   - the raw loopback floor: plain parallel ranged GETs of the same bytes from the same data URL into one
     preallocated buffer, same streams and chunk size, no hashing, no cache (aim >= 0.6x).
   Each variant then touches every page of every tensor, so mmap'd pages are paid for too.
   Peak extra memory: the process's RSS sampled every 2 ms during the load (and the touch), above its RSS
   before it, as a multiple of the state's bytes (aim <= 1.1x).
2. Iterating over 20 cold revisions (`iter_revisions(...).state_dict()`) vs the same revisions with the stock
   client (`hf_hub_download` + `load_file` per revision, each touched), both from empty caches.

The hub runs in this process (its data plane sends with sendfile); best of --repeat, interleaved.
Usage:  flock /tmp/hubckpt-heavy.lock .venv/bin/python bench/cold_load.py [--size-mib 1024] [--repeat 3]
"""

from __future__ import annotations

import argparse
import gc
import http.client
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def _fresh_cache(work: Path, name: str) -> Path:
    from huggingface_hub import constants

    home = work / name
    shutil.rmtree(home, ignore_errors=True)
    constants.HF_HOME = str(home)
    constants.HF_HUB_CACHE = str(home / "hub")
    return home / "hub"


def _touch(state: dict) -> int:
    """Read one byte of every page of every tensor: mmap'd files are faulted in, nothing large is allocated."""
    import torch

    return sum(int(t.reshape(-1).view(torch.uint8)[::4096].sum()) for t in state.values() if t.numel())


def _rss() -> int:
    """The process's resident set size in bytes (VmRSS)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


class PeakRss:
    """The highest RSS seen while it runs, sampled every 2 ms by a thread (RSS counts mmap'd file pages too)."""

    def __enter__(self):
        import threading

        self.base = self.peak = _rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())

    @property
    def extra(self) -> int:
        return self.peak - self.base


def _data_url(hub_url: str, repo: str, commit: str, path: str) -> str:
    """Where the local hub's /resolve/ redirects for this file (its data plane)."""
    import httpx2

    r = httpx2.get(f"{hub_url}/{repo}/resolve/{commit}/{path}", follow_redirects=False)
    return str(r.url.join(r.headers["location"])) if r.is_redirect else str(r.url)


def raw_floor(url: str, size: int, streams: int, chunk: int):
    """Plain parallel ranged GETs of bytes [0, size) into one preallocated buffer (no hashing, no disk)."""
    import torch

    buf = torch.empty(size, dtype=torch.uint8)
    view = buf.numpy().data.cast("B")
    parts = urlsplit(url)
    target = parts.path + ("?" + parts.query if parts.query else "")
    local = {}

    def get(span):
        import threading

        conn = local.get(threading.get_ident())
        if conn is None:
            conn = local[threading.get_ident()] = http.client.HTTPConnection(parts.hostname, parts.port)
        start, end = span
        conn.request("GET", target, headers={"Range": f"bytes={start}-{end - 1}"})
        response = conn.getresponse()
        assert response.status == 206, response.status
        got = 0
        while got < end - start:
            n = response.readinto(view[start + got : min(end, start + got + (1 << 20))])
            assert n
            got += n

    spans = [(s, min(s + chunk, size)) for s in range(0, size, chunk)]
    with ThreadPoolExecutor(streams) as pool:
        list(pool.map(get, spans))
    for conn in local.values():
        conn.close()
    return buf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--revisions", type=int, default=20)
    parser.add_argument("--revision-mib", type=int, default=16)
    parser.add_argument("--parts", default="1,2")
    args = parser.parse_args()
    parts = {int(p) for p in args.parts.split(",")}

    from hubckpt.server import LocalHubServer

    work = Path(tempfile.mkdtemp(prefix="hubckpt-bench-cold-"))
    try:
        with LocalHubServer(work / "hub") as hub:
            if 1 in parts:
                one_revision(hub, work, args.size_mib, args.repeat)
            if 2 in parts:
                many_revisions(hub, work, args.revisions, args.revision_mib)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def one_revision(hub, work: Path, size_mib: int, repeat: int) -> None:
    import torch
    from huggingface_hub import hf_hub_download
    from safetensors.torch import load_file

    import hubckpt
    from hubckpt import environment
    from hubckpt.load import fast_read
    from hubckpt.publishing import Publisher

    torch.manual_seed(0)
    n = max(2, size_mib // 4)
    with Publisher("bench/cold", hub=hub.url, spool_dir=work / "spool") as pub:
        pub.publish(state_dict={f"layers.{i:04d}.weight": torch.randn(1024, 1024) for i in range(n)}, step=1)
    commit = hubckpt.resolve_revision("bench/cold", step=1, hub=hub.url).commit
    url = _data_url(hub.url, "bench/cold", commit, "model.safetensors")
    streams = environment.read_streams()
    state_bytes = n * 4 * 2**20
    chunk = max(fast_read.MIN_CHUNK_BYTES, min(fast_read.CHUNK_BYTES, -(-state_bytes // streams)))

    def ours():
        _fresh_cache(work, "ours")
        return hubckpt.load_state_dict("bench/cold", step=1, hub=hub.url)

    def stock():
        _fresh_cache(work, "stock")
        return load_file(hf_hub_download("bench/cold", "model.safetensors", revision=commit, endpoint=hub.url))

    def floor():
        return {"all": raw_floor(url, file_size, streams, chunk)}

    file_size = (
        Path(hf_hub_download("bench/cold", "model.safetensors", revision=commit, endpoint=hub.url)).stat().st_size
    )
    runs = {"floor": floor, "stock": stock, "ours": ours}
    times: dict[str, list[float]] = {k: [] for k in runs}
    peaks: dict[str, list[int]] = {k: [] for k in runs}
    for _ in range(repeat):
        for label, load in runs.items():
            gc.collect()
            os.sync()  # the previous variant's cache writes are not this one's to wait for
            with PeakRss() as rss:
                t0 = time.perf_counter()
                state = load()
                _touch(state)
                times[label].append(time.perf_counter() - t0)
                del state
            peaks[label].append(rss.extra)
    best = {k: min(v) for k, v in times.items()}
    gb = file_size / 1e9
    print(
        f"1. cold load of a {file_size / 2**30:.2f} GiB revision ({n} tensors), best of {repeat}, every page touched:"
    )
    print(
        f"   raw floor ({streams} parallel ranged GETs into memory): {best['floor']:.2f} s = {gb / best['floor']:.2f} GB/s"
    )
    print(f"   hf_hub_download + load_file:                {best['stock']:.2f} s = {gb / best['stock']:.2f} GB/s")
    print(f"   hubckpt.load_state_dict (cold):             {best['ours']:.2f} s = {gb / best['ours']:.2f} GB/s")
    print(
        f"   -> {best['stock'] / best['ours']:.2f}x the stock client (aim >= 2x), "
        f"{best['floor'] / best['ours']:.2f}x of the raw floor (aim >= 0.6x)"
    )
    print(
        f"   peak extra memory (sampled RSS above the RSS before, worst of {repeat}): ours {max(peaks['ours']) / 2**20:.0f} MiB = "
        f"{max(peaks['ours']) / state_bytes:.2f}x the state (aim <= 1.1x); stock {max(peaks['stock']) / 2**20:.0f} MiB "
        f"(mmap'd pages); floor {max(peaks['floor']) / 2**20:.0f} MiB"
    )


def many_revisions(hub, work: Path, count: int, mib: int) -> None:
    import torch
    from huggingface_hub import hf_hub_download
    from safetensors.torch import load_file

    import hubckpt
    from hubckpt.publishing import Publisher

    t0 = time.perf_counter()
    with Publisher("bench/many", hub=hub.url, spool_dir=work / "spool-many", max_pending=4) as pub:
        for i in range(1, count + 1):
            pub.publish(state_dict={"w": torch.full((mib * 256, 1024), float(i))}, step=i * 10)
    print(f"(published {count} revisions of {mib} MiB in {time.perf_counter() - t0:.1f} s)")

    _fresh_cache(work, "many-ours")
    t0 = time.perf_counter()
    seen = 0
    for item in hubckpt.iter_revisions("bench/many", hub=hub.url):
        state = item.state_dict()
        assert float(state["w"][0, 0]) == item.info.step / 10
        _touch(state)
        seen += 1
    ours = time.perf_counter() - t0

    _fresh_cache(work, "many-stock")
    t0 = time.perf_counter()
    for info in hubckpt.list_revisions("bench/many", hub=hub.url):
        state = load_file(hf_hub_download("bench/many", "model.safetensors", revision=info.commit, endpoint=hub.url))
        assert float(state["w"][0, 0]) == info.step / 10
        _touch(state)
    stock = time.perf_counter() - t0
    print(
        f"2. {seen} cold revisions of {mib} MiB: iter_revisions + state_dict() {ours:.2f} s "
        f"({ours / seen * 1000:.0f} ms each) vs hf_hub_download + load_file {stock:.2f} s "
        f"({stock / seen * 1000:.0f} ms each): {stock / ours:.2f}x"
    )


if __name__ == "__main__":
    sys.exit(main())
