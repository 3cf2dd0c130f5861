"""Upload and download of a large LFS file through HfApi to the local hub, against this machine's floor.

Floors are measured in the same run (these machines are noisy):
- upload floor   = the slowest of: sha256 of the file, an fsync'd write of it, a raw loopback socket transfer of it
- download floor = the raw loopback socket transfer

Usage:  .venv/bin/python bench/transfer.py [--size-mib 1024] [--repeat 3]
Prints throughputs (GB/s, 10^9 bytes/s, best of --repeat) and ratios to the floors.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

CHUNK = 8 * 1024 * 1024


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def floor_sha256(path: Path) -> None:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)


def floor_fsync_write(path: Path, out: Path) -> None:
    with open(path, "rb") as src, open(out, "wb") as dst:
        while chunk := src.read(CHUNK):
            dst.write(chunk)
        dst.flush()
        os.fsync(dst.fileno())
    out.unlink()


def floor_loopback(path: Path) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]

    def receive() -> None:
        conn, _ = server.accept()
        buf = bytearray(CHUNK)
        with conn:
            while conn.recv_into(buf):
                pass

    t = threading.Thread(target=receive)
    t.start()
    with socket.create_connection(("127.0.0.1", port)) as client, open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            client.sendall(chunk)
    t.join()
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from huggingface_hub import HfApi, hf_hub_download

    work = Path(tempfile.mkdtemp(prefix="hubckpt-bench-"))
    size = args.size_mib * 1024 * 1024
    data = work / "blob.bin"
    with open(data, "wb") as f:
        for _ in range(args.size_mib // 8 or 1):
            f.write(os.urandom(min(CHUNK, size)))
    size = data.stat().st_size
    gb = size / 1e9
    floor_sha256(data)  # warm the page cache, as the client's own hashing would

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "hubckpt", "serve", "--root", str(work / "hub"), "--port", str(port), "--quiet"],
        stdout=subprocess.PIPE,
        text=True,
    )
    url = server.stdout.readline().strip()
    try:
        api = HfApi(endpoint=url, token="x")
        t_sha = best_of(args.repeat, lambda: floor_sha256(data))
        t_write = best_of(args.repeat, lambda: floor_fsync_write(data, work / "copy.bin"))
        t_loop = best_of(args.repeat, lambda: floor_loopback(data))

        counter = iter(range(1000))

        def upload() -> None:
            repo = f"local/bench-{next(counter)}"  # a fresh repo each time: no dedup shortcut
            api.create_repo(repo)
            with open(data, "rb") as f:
                api.upload_file(path_or_fileobj=f, path_in_repo="blob.bin", repo_id=repo)
            # Drop the stored object so the next upload really transfers it again.
            shutil.rmtree(work / "hub" / "objects")

        t_up = best_of(args.repeat, upload)
        api.create_repo("local/bench-dl")
        with open(data, "rb") as f:
            api.upload_file(path_or_fileobj=f, path_in_repo="blob.bin", repo_id="local/bench-dl")

        def download() -> None:
            cache = work / "cache"
            shutil.rmtree(cache, ignore_errors=True)
            hf_hub_download("local/bench-dl", "blob.bin", cache_dir=cache, endpoint=url)

        t_down = best_of(args.repeat, download)

        # Reference, not a floor: how fast the client's own HTTP stack (httpx2) can pull the bytes
        # from the data plane (sendfile) when it only discards them.
        import httpx2

        location = httpx2.head(f"{url}/local/bench-dl/resolve/main/blob.bin").headers["location"]

        def raw_get() -> None:
            with httpx2.stream("GET", location) as r:
                for _ in r.iter_raw(10 * 1024 * 1024):
                    pass

        t_client = best_of(args.repeat, raw_get)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)

    floor_up = max(t_sha, t_write, t_loop)
    print(f"file: {size / 2**20:.0f} MiB, best of {args.repeat}; throughput in GB/s (10^9 B/s)")
    print(f"  floor sha256            {gb / t_sha:6.2f}")
    print(f"  floor fsync'd write     {gb / t_write:6.2f}")
    print(f"  floor loopback socket   {gb / t_loop:6.2f}")
    print(
        f"  serial floor of the upload protocol (client sha256, then transfer + fsync'd write): "
        f"{gb / (t_sha + max(t_write, t_loop)):.2f}"
    )
    print(f"  client ceiling: httpx2 streaming GET from the data plane, discarded: {gb / t_client:.2f}")
    print(
        f"  HfApi.upload_file       {gb / t_up:6.2f}   ratio to upload floor   {floor_up / t_up:5.2f}x  (aim >= 0.5x)"
    )
    print(
        f"  hf_hub_download         {gb / t_down:6.2f}   ratio to download floor {t_loop / t_down:5.2f}x  (aim >= 0.5x)"
    )


if __name__ == "__main__":
    main()
