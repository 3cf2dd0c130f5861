"""CPU cost of publishing one Checkpointer save: the publishing process + the local hub, per save.

No training runs: this measures what a publish costs, not how it competes. One GPT-2 built from config
(fp32, AdamW: 1.22 GiB of state at the defaults) is saved `--saves` times through `hubckpt.Checkpointer`
to a local hub in its own process; for each save it prints the wall time until the revision is
visible and the CPU-seconds (user + system, all threads, from /proc) the publishing process and the
hub spent on it. The same-run baseline is the CPU time of one sha256 over the same bytes: the least
any verified upload costs (the hub has to hash what it receives).

Usage:  .venv/bin/python bench/publish_cost.py [--saves 3] [--n-embd 1024] [--layers 8]   (Linux)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from checkpointer import WORK, Run  # noqa: E402  (sets the environment of the run first)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--saves", type=int, default=3)
    parser.add_argument("--n-embd", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=8)
    args = parser.parse_args()

    import torch

    import hubckpt
    from hubckpt.hub.local import ensure_local_hub, running_local_hub, stop_local_hub

    hub = ensure_local_hub(WORK / "hub")
    assert running_local_hub(WORK / "hub")
    hub_pid = json.loads((WORK / "hub" / "server.json").read_text())["pid"]
    run = Run(args.n_embd, args.layers)
    run.step()
    nbytes = run.nbytes()
    t0 = time.process_time()
    digest = hashlib.sha256()
    for t in run.tensors():
        digest.update(t.detach().contiguous().view(-1).view(torch.uint8).numpy())
    floor = time.process_time() - t0
    print(f"{nbytes / 2**30:.2f} GiB of state per save; baseline: one sha256 over it, {floor:.2f} CPU-s")
    try:
        with hubckpt.Checkpointer(
            "bench/publish-cost",
            model=run.model,
            optimizer=run.optimizer,
            scheduler=run.scheduler,
            hub=hub,
            background="process",
            publish_mb_per_s=None,
        ) as ckpt:  # the cost of a publish, not its pace
            ckpt.wait_staged()
            child = ckpt.publisher._process.pid
            for i in range(args.saves):
                run.step()
                c0, h0, w0 = cpu_seconds(child), cpu_seconds(hub_pid), time.perf_counter()
                ckpt.save(1000 + i).result()
                wall = time.perf_counter() - w0
                c, h = cpu_seconds(child) - c0, cpu_seconds(hub_pid) - h0
                print(
                    f"save {i + 1}: visible after {wall:5.2f} s; CPU-s publishing process {c:5.2f} + local hub "
                    f"{h:5.2f} = {c + h:5.2f} ({(c + h) / floor:4.1f}x the baseline)",
                    flush=True,
                )
    finally:
        stop_local_hub(WORK / "hub")


if __name__ == "__main__":
    main()
