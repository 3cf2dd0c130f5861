"""Analysis figures: lazy weight drift across 20 revisions of a ~100 MiB model, and `hubckpt analyze` on 10.

1. `weight_drift` of a handful of tensors across 20 revisions (lazy HTTP Range reads through
   `open_revision`): bytes received and time, vs downloading the whole checkpoints
   (`load_state_dict` of every revision into a fresh cache, same run).
2. `analyze()` over 10 of those revisions with a 32 x 32-token probe, cold cache: wall time, vs the
   floor of only loading the same 10 models (`load_model`, fresh cache); and the `hubckpt analyze`
   command (a subprocess, so Python start-up included) on the same revisions.

Everything runs against a local hub in a temporary folder (HF_HOME and the spool there too).

Usage:  flock /tmp/hubckpt-heavy.lock .venv/bin/python bench/analysis.py [--revisions 20] [--analyze 10]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORK = Path(tempfile.mkdtemp(prefix="hubckpt-bench-analysis-"))
os.environ.update(
    {
        "HF_HOME": str(WORK / "hf_home"),
        "HUBCKPT_SPOOL": str(WORK / "spool"),
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    }
)
for var in ("HF_ENDPOINT", "HUBCKPT_HUB", "HF_TOKEN"):
    os.environ.pop(var, None)

TENSORS = [
    "transformer.h.0.attn.c_attn.weight",
    "transformer.h.3.attn.c_proj.weight",
    "transformer.h.5.mlp.c_fc.weight",
    "transformer.h.7.mlp.c_proj.weight",
    "transformer.ln_f.weight",
]


def _mib(n: float) -> str:
    return f"{n / 2**20:,.1f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--revisions", type=int, default=20)
    parser.add_argument("--analyze", type=int, default=10)
    parser.add_argument("--width", type=int, default=512, help="n_embd (512: ~104 MiB of weights)")
    args = parser.parse_args()

    import torch
    from safetensors.torch import save_file
    from transformers import GPT2Config, GPT2LMHeadModel

    import hubckpt
    from hubckpt.analysis import weight_drift
    from hubckpt.server import LocalHubServer

    try:
        with LocalHubServer(WORK / "hub") as hub:
            torch.manual_seed(0)
            config = GPT2Config(
                n_layer=8, n_head=8, n_embd=args.width, vocab_size=4096, n_positions=128, bos_token_id=0, eos_token_id=0
            )
            model = GPT2LMHeadModel(config)
            files = WORK / "files"
            config.save_pretrained(files)
            base = {k: v.clone() for k, v in model.state_dict().items() if k != "lm_head.weight"}
            size = sum(v.numel() * v.element_size() for v in base.values())
            repo = "bench/analysis"
            print(
                f"Model: GPT-2 {sum(v.numel() for v in base.values()):,} parameters, {_mib(size)} of weights; "
                f"publishing {args.revisions} revisions ...",
                flush=True,
            )
            t0 = time.perf_counter()
            gen = torch.Generator().manual_seed(1)
            with hubckpt.Publisher(repo, hub=hub.url) as pub:
                for r in range(args.revisions):
                    # a random walk stands in for training: every revision's bytes differ
                    sd = {
                        k: (v + 0.002 * r * torch.randn(v.shape, generator=gen)) if v.is_floating_point() else v
                        for k, v in base.items()
                    }
                    pub.publish(
                        state_dict=sd,
                        step=(r + 1) * 100,
                        companions=[files / "config.json"],
                        final=r == args.revisions - 1,
                    )
                    pub.wait()
            print(f"  published in {time.perf_counter() - t0:.1f}s", flush=True)
            infos = hubckpt.list_revisions(repo, hub=hub.url)
            whole = sum(i.size for i in infos)
            tensor_bytes = sum(base[k].numel() * base[k].element_size() for k in TENSORS)

            # 1. lazy drift vs whole checkpoints
            t0 = time.perf_counter()
            drift = weight_drift(repo, keys=TENSORS, hub=hub.url)
            lazy_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            full = WORK / "full-cache"
            got = 0
            for info in infos:
                sd = hubckpt.load_state_dict(repo, info.commit, hub=hub.url, cache_dir=full)
                got += sum(v.numel() * v.element_size() for v in sd.values())
                del sd
            full_s = time.perf_counter() - t0
            shutil.rmtree(full, ignore_errors=True)
            print(
                f"\n1. Weight drift of {len(TENSORS)} tensors ({_mib(tensor_bytes)} per revision) across "
                f"{len(infos)} revisions of {_mib(infos[0].size)}:"
            )
            print(f"   lazy (weight_drift):       {_mib(drift.bytes_received):>12} received, {lazy_s:6.2f}s")
            print(f"   whole (load_state_dict):   {_mib(whole):>12} of files,    {full_s:6.2f}s")
            print(
                f"   ratio lazy / whole:        bytes {drift.bytes_received / whole:.4f}, time {lazy_s / full_s:.3f}"
                f"   (tensor bytes x reads / whole: {tensor_bytes * len(infos) / whole:.4f})"
            )
            print(f"   drift of {TENSORS[0]} at the last revision: {drift.parameters[TENSORS[0]][-1]:.4f}")

            # 2. analyze over N revisions vs loading the same models
            chosen = infos[:: max(1, len(infos) // args.analyze)][: args.analyze]
            names = ",".join(i.name for i in chosen)
            probe = WORK / "probe.safetensors"
            save_file({"input_ids": torch.randint(0, 4096, (32, 32), generator=gen)}, str(probe))
            t0 = time.perf_counter()
            for info in chosen:
                m = hubckpt.load_model(repo, info.commit, hub=hub.url, cache_dir=WORK / "load-cache")
                del m
            load_s = time.perf_counter() - t0
            shutil.rmtree(WORK / "load-cache", ignore_errors=True)
            from hubckpt.analysis import analyze

            t0 = time.perf_counter()
            result = analyze(repo, revisions=[i.name for i in chosen], probe=probe, out=WORK / "out", hub=hub.url)
            analyze_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            r = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "hubckpt",
                    "analyze",
                    repo,
                    "--revisions",
                    names,
                    "--probe",
                    str(probe),
                    "--out",
                    str(WORK / "out-cli"),
                    "--hub",
                    hub.url,
                ],
                capture_output=True,
                text=True,
            )
            cli_s = time.perf_counter() - t0
            if r.returncode:
                raise SystemExit(f"analyze failed:\n{r.stdout}\n{r.stderr}")
            layers = len(result.results["layers"])
            print(f"\n2. analyze over {len(chosen)} revisions, probe 32 x 32 tokens, {layers} layers:")
            print(f"   analyze() (cold cache):    {analyze_s:6.2f}s  ({analyze_s / len(chosen):.2f}s per revision)")
            print(f"   floor: load_model only:    {load_s:6.2f}s  (same revisions, fresh cache)")
            print(f"   ratio analyze / floor:     {analyze_s / load_s:.2f}")
            print(f"   hubckpt analyze (CLI, warm cache, incl. Python start-up): {cli_s:6.2f}s")
    finally:
        shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
