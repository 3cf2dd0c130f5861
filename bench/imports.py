"""Start-up cost: `import hubckpt`, first use of a public name, and `hubckpt --help`.

Each command runs in a fresh interpreter (best of --repeat, wall time), beside the floor of a bare
interpreter start-up in the same run; `-X importtime` gives hubckpt's own share (the cumulative time of
its top-level import) and the heavy libraries each command loaded (none should be: they load on use).

Usage:  .venv/bin/python bench/imports.py [--repeat 7] [--source DIR]
        (--source: a checkout to measure instead of the installed hubckpt, e.g. the commit before a change)
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import subprocess
import sys
import tempfile
import time

HEAVY = ("torch", "transformers", "numpy", "safetensors", "huggingface_hub", "starlette", "uvicorn", "jinja2")
HEAVY += ("matplotlib", "accelerate", "yaml", "rich")
HELP = "from hubckpt.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
REPORT = "import sys; print(sorted(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)"

CWD = tempfile.gettempdir()  # not this checkout: `python -c` puts the working directory first on sys.path
CASES = {
    "floor: bare interpreter (python -c pass)": "pass",
    "import hubckpt": "import hubckpt",
    "import hubckpt; hubckpt.Publisher": "import hubckpt\nhubckpt.Publisher",
    "hubckpt --help": HELP,
}


def _env(source: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if source:
        env["PYTHONPATH"] = os.path.abspath(source)
    return env


def wall(code: str, env: dict[str, str], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], env=env, cwd=CWD, check=True, capture_output=True)
        best = min(best, time.perf_counter() - t)
    return best


def profile(code: str, env: dict[str, str]) -> tuple[float, list[str]]:
    """hubckpt's cumulative import time (s) under -X importtime, and the heavy modules loaded."""
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code + "\n" + REPORT.format(heavy=HEAVY)],
        env=env,
        cwd=CWD,
        check=True,
        capture_output=True,
        text=True,
    ).stderr
    ours = 0
    for m in re.finditer(r"import time:\s+\d+ \|\s+(\d+) \| (\s*)(\S+)", out):
        if m.group(3).startswith("hubckpt") and not m.group(2):  # top-level imports only: no double count
            ours += int(m.group(1))
    heavy = ast.literal_eval(out.strip().splitlines()[-1])  # the REPORT line
    return ours / 1e6, heavy


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--source", help="checkout to import hubckpt from (default: the installed one)")
    args = parser.parse_args()
    env = _env(args.source)
    where = subprocess.run(
        [sys.executable, "-c", "import hubckpt; print(hubckpt.__file__)"],
        env=env,
        cwd=CWD,
        capture_output=True,
        text=True,
    ).stdout.strip()
    print(f"hubckpt from {where}; best of {args.repeat}, wall time of a fresh interpreter")
    print("| command | wall (s) | hubckpt's imports (-X importtime, s) | heavy modules loaded |")
    print("|---|---|---|---|")
    for name, code in CASES.items():
        best = wall(code, env, args.repeat)
        ours, heavy = profile(code, env)
        print(f"| {name} | {best:.3f} | {ours:.3f} | {', '.join(heavy) or '—'} |")


if __name__ == "__main__":
    main()
