"""Conversion of a ~1 GiB pytorch_model.bin and a ~1 GiB Trainer checkpoint (with optimizer state).

Time is compared with the naive floor measured in the same run: `torch.load(weights_only=True,
mmap=True)` + `safetensors.torch.save_file` + fsync of every weight and optimizer file. Peak extra
memory is the peak anonymous RSS above the process's level before converting (sampled every 5 ms),
compared with the largest shard written.

Usage:  .venv/bin/python bench/convert.py [--size-mib 1024] [--repeat 5] [--max-shard-size 256MB]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, os, sys, threading, time
import torch, safetensors.torch
mode, src, dest, shard = sys.argv[1:5]
def anon():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
import hubckpt.conversion  # imports done before the baseline
print("READY", anon(), flush=True)
sys.stdin.readline()  # the parent samples our memory from outside (no GIL in the way)
t0 = time.perf_counter()
if mode == "naive":
    os.makedirs(dest)
    for name in sorted(os.listdir(src)):
        path = os.path.join(src, name)
        if name.endswith((".bin", ".pt")):
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            flat = {}
            def walk(o, p):
                if isinstance(o, torch.Tensor): flat[p or "t"] = o.contiguous()
                elif isinstance(o, dict): [walk(v, f"{p}.{k}") for k, v in o.items()]
                elif isinstance(o, (list, tuple)): [walk(v, f"{p}.{i}") for i, v in enumerate(o)]
            walk(obj, "")
            out = os.path.join(dest, name + ".safetensors")
        elif name.endswith(".safetensors"):
            flat = safetensors.torch.load_file(path); out = os.path.join(dest, name)
        else:
            continue
        safetensors.torch.save_file(flat, out)
        with open(out, "rb") as f: os.fsync(f.fileno())
else:
    hubckpt.conversion.convert(src, dest, max_shard_size=shard)
elapsed = time.perf_counter() - t0
print(json.dumps({"seconds": elapsed}), flush=True)
"""


def make_inputs(work: Path, size_mib: int) -> tuple[Path, Path]:
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    n = max(1, size_mib // 16)
    weights = {f"layers.{i}.weight": torch.randn(1024, 4096) for i in range(n)}  # 16 MiB each
    bin_dir = work / "bin"
    bin_dir.mkdir()
    torch.save(weights, bin_dir / "pytorch_model.bin")
    (bin_dir / "config.json").write_text("{}")
    # Trainer checkpoint of about the same total size: weights + Adam's two moments = 3 × weights.
    small = {k: v for k, v in list(weights.items())[: max(1, n // 3)]}
    trainer = work / "checkpoint-100"
    trainer.mkdir()
    save_file(small, trainer / "model.safetensors")
    state = {
        i: {"step": torch.tensor(100.0), "exp_avg": torch.randn_like(t), "exp_avg_sq": torch.rand_like(t)}
        for i, t in enumerate(small.values())
    }
    torch.save(
        {
            "state": state,
            "param_groups": [
                {
                    "lr": 1e-3,
                    "betas": (0.9, 0.999),
                    "eps": 1e-8,
                    "weight_decay": 0.0,
                    "amsgrad": False,
                    "params": list(range(len(small))),
                }
            ],
        },
        trainer / "optimizer.pt",
    )
    (trainer / "trainer_state.json").write_text(json.dumps({"global_step": 100, "epoch": 1.0, "log_history": []}))
    (trainer / "config.json").write_text("{}")
    return bin_dir, trainer


def _rss_anon(pid: int) -> int:
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run(mode: str, src: Path, dest: Path, shard: str) -> dict:
    shutil.rmtree(dest, ignore_errors=True)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, mode, str(src), str(dest), shard],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    ready = child.stdout.readline().split()
    base = int(ready[1])
    peak = base
    child.stdin.write("go\n")
    child.stdin.flush()
    while child.poll() is None:
        peak = max(peak, _rss_anon(child.pid))
        time.sleep(0.002)
    out = child.stdout.read()
    if child.returncode != 0:
        raise RuntimeError(f"{mode} conversion failed")
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_extra"] = peak - base
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--max-shard-size", default="256MB")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hubckpt-bench-convert-"))
    try:
        bin_dir, trainer = make_inputs(work, args.size_mib)
        for label, src in (("pytorch_model.bin", bin_dir), ("Trainer checkpoint", trainer)):
            size = sum(p.stat().st_size for p in src.iterdir())
            naive, ours = [], []
            for _ in range(args.repeat):  # interleaved: this machine's write-back stalls come and go
                naive.append(run("naive", src, work / "naive", args.max_shard_size))
                ours.append(run("hubckpt", src, work / "out", args.max_shard_size))
            largest = max(p.stat().st_size for p in (work / "out").rglob("*.safetensors"))
            t_naive = min(r["seconds"] for r in naive)
            t_ours = min(r["seconds"] for r in ours)
            mem = min(r["peak_extra"] for r in ours)
            print(f"{label}: {size / 2**20:.0f} MiB, best of {args.repeat}, max shard {args.max_shard_size}")
            print(
                f"  naive floor (load + save_file + fsync)  {t_naive:6.2f} s   peak extra {min(r['peak_extra'] for r in naive) / 2**20:7.0f} MiB"
            )
            print(f"  hubckpt convert (verified, hashed)      {t_ours:6.2f} s   peak extra {mem / 2**20:7.0f} MiB")
            print(
                f"  time ratio {t_ours / t_naive:.2f}x (aim <= 1.2x); peak extra memory {mem / largest:.2f}x the "
                f"largest shard of {largest / 2**20:.0f} MiB (aim <= 1.3x)"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
